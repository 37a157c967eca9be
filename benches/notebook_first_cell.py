#!/usr/bin/env python3
"""Benchmark: "new notebook -> first executed cell" through jupyter_server, three ways.

    python3 benches/notebook_first_cell.py [--iterations N] [--corral PATH] [--json]

What a notebook user waits for when opening a new notebook and running `1+1`, measured through
jupyter_server 2.21.1 (what JupyterLab talks to) in front of:
  (a) corral as its gateway      jupyter_server --gateway-url=<corral>  (target/release/corral)
  (b) Jupyter Kernel Gateway     jupyter_server --gateway-url=<JKG>     (ipykernel behind it)
  (c) local ipykernel            jupyter_server with its own kernels, no gateway

One sample: POST /api/sessions (a new notebook path, kernel python3) -> open
/api/kernels/{id}/channels through jupyter_server -> execute_request `1+1` -> the execute_reply;
timed from the POST to the reply. Then (untimed) the socket is closed and the session deleted.
One untimed warm-up sample per setup first. Kernels run on target/bench-venv's Python in all three.

Sets itself up like benches/peer_jupyter.py (whose helpers it reuses): the venv target/bench-venv
with benches/requirements-peer.txt, then re-runs itself on it. Every server is started on
127.0.0.1 and stopped by PID at the end (Ctrl-C included). Nothing is asserted; numbers depend
on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_jupyter import (  # noqa: E402  (the venv, process and statistics helpers)
    VENV, VENV_PYTHON, Server, corral_binary, ensure_venv, free_port, in_bench_venv,
    on_sigterm, package_versions, start_corral, summarize,
)

TOKEN = "bench-token"
START_DEADLINE_S = 60
HTTP_TIMEOUT_S = 60
FIRST_CELL_DEADLINE_S = 120


def jupyter_environment(home: Path) -> dict:
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    for variable in ("KG_AUTH_TOKEN", "JUPYTER_TOKEN", "JUPYTER_PATH"):
        env.pop(variable, None)
    return env


def wait_for(url: str, server: Server, log_path: Path, headers: dict | None = None) -> None:
    import requests

    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not answer {url}:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def start_jkg(home: Path, servers: list) -> str:
    home.mkdir()
    port = free_port()
    log_path = home / "jkg.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV / "bin" / "jupyter"), "kernelgateway", "--KernelGatewayApp.ip=127.0.0.1",
             f"--KernelGatewayApp.port={port}", "--KernelGatewayApp.port_retries=0",
             "--KernelGatewayApp.auth_token=", "--KernelGatewayApp.log_level=WARN",
             # jupyter_server in gateway mode lists the gateway's kernels
             "--JupyterWebsocketPersonality.list_kernels=True"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=jupyter_environment(home), start_new_session=True, cwd=str(home),
        )
    server = Server("jupyter-kernel-gateway", process)
    servers.append(server)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/api", server, log_path)
    return url


def start_jupyter_server(name: str, home: Path, gateway_url: str | None, servers: list) -> str:
    home.mkdir()
    (home / "root").mkdir()
    port = free_port()
    log_path = home / "jupyter.log"
    arguments = [str(VENV_PYTHON), "-m", "jupyter_server", f"--ServerApp.port={port}",
                 "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                 f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
                 "--ServerApp.allow_root=True", f"--ServerApp.root_dir={home / 'root'}",
                 "--ServerApp.log_level=WARN"]
    if gateway_url:
        arguments.append(f"--gateway-url={gateway_url}")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=jupyter_environment(home),
                                   start_new_session=True, cwd=str(home))
    server = Server(name, process)
    servers.append(server)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/api", server, log_path, headers={"Authorization": f"token {TOKEN}"})
    return url


def message(session: str, code: str) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "username": "bench", "session": session,
                   "msg_type": "execute_request", "version": "5.3",
                   "date": datetime.now(timezone.utc).isoformat()},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


def first_cell(http, url: str) -> float:
    """One sample: seconds from POST /api/sessions to the execute_reply of `1+1`."""
    import websocket

    path = f"bench-{uuid.uuid4().hex[:12]}.ipynb"
    started = time.perf_counter()
    created = http.post(f"{url}/api/sessions", timeout=HTTP_TIMEOUT_S,
                        json={"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}})
    if created.status_code != 201:
        raise RuntimeError(f"POST /api/sessions: {created.status_code} {created.text[:500]}")
    session = created.json()
    ws = websocket.create_connection(
        f"ws{url[len('http'):]}/api/kernels/{session['kernel']['id']}/channels?session_id={uuid.uuid4().hex}",
        header=[f"Authorization: token {TOKEN}"], timeout=FIRST_CELL_DEADLINE_S,
    )
    try:
        request = message(uuid.uuid4().hex, "1+1")
        ws.send(json.dumps(request))
        deadline = time.monotonic() + FIRST_CELL_DEADLINE_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no execute_reply before the deadline")
            ws.settimeout(remaining)
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            reply = json.loads(frame.data)
            if (reply.get("msg_type") == "execute_reply"
                    and reply.get("parent_header", {}).get("msg_id") == request["header"]["msg_id"]):
                elapsed = time.perf_counter() - started
                if reply["content"].get("status") != "ok":
                    raise RuntimeError(f"`1+1` failed: {reply['content']}")
                return elapsed
    finally:
        ws.close()
        http.delete(f"{url}/api/sessions/{session['id']}", timeout=HTTP_TIMEOUT_S)


def measure(url: str, iterations: int) -> dict:
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"token {TOKEN}"
    first_cell(http, url)  # warm-up, untimed
    return summarize([first_cell(http, url) for _ in range(iterations)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="samples per setup (default 20)")
    parser.add_argument("--corral", type=Path, default=None,
                        help="corral binary (default target/release/corral, else target/debug/corral)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    arguments = parser.parse_args()
    if arguments.iterations < 1:
        raise SystemExit("--iterations must be at least 1")
    binary = corral_binary(arguments.corral)
    if not in_bench_venv():
        ensure_venv()
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_sigterm)
    if "debug" in binary.parts:
        print(f"warning: {binary} is a debug build; corral's numbers are not representative", file=sys.stderr)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    temp = Path(tempfile.mkdtemp(prefix="corral-first-cell-bench-"))
    servers: list[Server] = []
    results: dict[str, dict] = {}
    try:
        (temp / "corral").mkdir()
        _, corral_url, _ = start_corral(binary, temp / "corral", servers)
        jkg_url = start_jkg(temp / "jkg", servers)
        setups = [
            ("corral as gateway", start_jupyter_server("jupyter_server->corral", temp / "js-corral", corral_url, servers)),
            ("Jupyter Kernel Gateway as gateway", start_jupyter_server("jupyter_server->JKG", temp / "js-jkg", jkg_url, servers)),
            ("local ipykernel (no gateway)", start_jupyter_server("jupyter_server local", temp / "js-local", None, servers)),
        ]
        for name, url in setups:
            started = time.monotonic()
            results[name] = measure(url, arguments.iterations)
            print(f"{name}: done in {time.monotonic() - started:.1f}s", file=sys.stderr)
        report = {
            "iterations": arguments.iterations,
            "corral_binary": str(binary),
            "corral_version": version.removeprefix("corral ").strip(),
            "python": sys.version.split()[0],
            "versions": package_versions(),
            "new_notebook_to_first_cell": results,
        }
        if arguments.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"new notebook -> first executed cell (`1+1`) through jupyter_server "
                  f"{report['versions'].get('jupyter_server')}; corral {report['corral_version']}, "
                  f"jupyter_kernel_gateway {report['versions'].get('jupyter_kernel_gateway')}, "
                  f"ipykernel {report['versions'].get('ipykernel')}, Python {report['python']}, "
                  f"{arguments.iterations} samples each")
            print()
            head = f"{'jupyter_server with':<36} | {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} | {'vs corral p50':>13}"
            print(head)
            print("-" * len(head))
            base = results["corral as gateway"]["p50_ms"]
            for name, row in results.items():
                print(f"{name:<36} | {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['mean_ms']:>8.1f} | "
                      f"{row['p50_ms'] / base:>12.1f}x")
        return 0
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as error:
                print(f"stopping {server.name}: {error}", file=sys.stderr)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
