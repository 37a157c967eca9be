#!/usr/bin/env python3
"""Peer benchmark: corral against Jupyter Kernel Gateway (JKG), same machine, same run.

    python3 benches/peer_jupyter.py [--iterations N] [--corral PATH] [--json]

Sets itself up (idempotent, everything under target/): a venv at target/bench-venv with the pins
of benches/requirements-peer.txt, then re-runs itself on that venv's Python. Starts both servers
on 127.0.0.1 with that same interpreter for their sessions/kernels, measures, prints a side-by-side
table, and kills both servers (and anything they left behind) by PID at the end, Ctrl-C included.

Measured, for each server (all over loopback HTTP / websocket, one client, sequential):
  session create            corral: POST /v1/sessions -> 201 (the interpreter is ready), with
                            a worker waiting in the warm pool (the script waits, untimed, until
                            the pool holds one: a pool sized for the arrival rate)
                            JKG: POST /api/kernels, open /api/kernels/{id}/channels, until the
                            kernel answers a kernel_info_request (i.e. usable)
  session create, first     the same, until a first `1 + 1` has answered
    execute answered
  session create, no warm   corral: a create asking for limits no pool worker has (one open
    worker                  file fewer), so its worker is started for it; JKG: as above
  execute round trip        `x += 1\\nx` in one warm session; corral: POST .../executions -> JSON;
                            JKG: execute_request on the open websocket until iopub status idle
  create + execute + close  corral: create, execute `1 + 1`, DELETE; JKG: POST kernel, open ws,
                            execute, wait idle, close ws, DELETE /api/kernels/{id}
  executions/s, 1 session   sequential `x += 1` in one session
  memory                    RSS of one idle session (after `import sys`), then PSS and USS
                            per session over 16 idle sessions held at once (smaps_rollup):
                            corral's sessions as each reports itself (every process in its
                            cgroup), JKG's kernels' process trees; the servers' own RSS beside.

Writes target/bench/compare-jupyter.json and compare-jupyter.svg (`corral bench --compare
jupyter` runs this script).

JKG is also measured with a client that sets TCP_QUICKACK (extra rows, see QuickAckSocket): stock
JKG leaves Nagle on for its websockets, which adds ~40 ms to every execute for an ordinary client.

Percentiles use the same rule as `corral bench` (nearest rank of (n - 1) * q). One untimed
warm-up create + close per server comes first. Numbers depend on the machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / "target" / "bench-venv"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = REPO / "benches" / "requirements-peer.txt"
STAMP = VENV / ".requirements.sha256"

PIP_DEADLINE_S = 900
SERVER_START_DEADLINE_S = 60
HTTP_TIMEOUT_S = 60
EXECUTE_DEADLINE_S = 30
KERNEL_READY_DEADLINE_S = 60
STOP_GRACE_S = 10
MIN_THROUGHPUT_EXECUTIONS = 100
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------------------------
# Setup: the venv, then re-run on it.


def ensure_venv() -> None:
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    have = STAMP.read_text().strip() if STAMP.exists() else ""
    if VENV_PYTHON.exists() and have == wanted:
        return
    print(f"setting up {VENV.relative_to(REPO)} from {REQUIREMENTS.relative_to(REPO)}", file=sys.stderr)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    subprocess.run(
        [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(REQUIREMENTS)],
        check=True,
        timeout=PIP_DEADLINE_S,
    )
    STAMP.write_text(wanted + "\n")


def in_bench_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Processes: /proc walking, RSS, stopping by PID.


def parent_map() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    parents = parent_map()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0  # gone, or a zombie / kernel thread without VmRSS


def smaps_kib(pid: int) -> tuple[int, int]:
    """(PSS, USS) of a process in KiB, from /proc/PID/smaps_rollup; (0, 0) when gone."""
    pss = uss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "Pss":
                pss = int(rest.split()[0])
            elif name in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
                uss += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return pss, uss


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2:].split()[0] != "Z"


class Server:
    """A server process started by this script; stop() ends it and what it started, by PID."""

    def __init__(self, name: str, process: subprocess.Popen):
        self.name = name
        self.process = process
        self.known_descendants: set[int] = set()

    def remember_descendants(self) -> None:
        if self.process.poll() is None:
            self.known_descendants |= descendants(self.process.pid)

    def stop(self) -> None:
        self.remember_descendants()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE_S)
        # Workers / kernels the server did not take down with it (only PIDs seen as its own).
        for pid in sorted(self.known_descendants):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Statistics.


def summarize(samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)

    def at(quantile: float) -> float:
        if not ordered:
            return float("nan")
        index = round((len(ordered) - 1) * quantile)
        return ordered[min(index, len(ordered) - 1)] * 1000.0

    return {
        "samples": len(ordered),
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": sum(ordered) / len(ordered) * 1000.0 if ordered else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# corral


def start_corral(binary: Path, data_dir: Path, servers: list) -> tuple[Server, str, deque]:
    env = dict(os.environ, CORRAL_LOG="warn,corral::cli::serve=info")
    process = subprocess.Popen(
        [str(binary), "serve", "--bind", "127.0.0.1:0", "--data-dir", str(data_dir),
         "--python", str(VENV_PYTHON)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=env, start_new_session=True, text=True, errors="replace",
    )
    server = Server("corral", process)
    servers.append(server)  # from here on, the caller's cleanup stops it
    tail: deque = deque(maxlen=50)
    found: list[str] = []
    listening = threading.Event()

    def drain() -> None:  # reads stderr to the end so the pipe never fills
        for line in process.stderr:
            line = ANSI.sub("", line.rstrip("\n"))
            tail.append(line)
            if not found:
                match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
                if match:
                    found.append(match.group(1))
                    listening.set()
        listening.set()

    threading.Thread(target=drain, daemon=True).start()
    listening.wait(SERVER_START_DEADLINE_S)
    if not found:
        raise RuntimeError("corral did not print its listen line in time:\n" + "\n".join(tail))
    return server, found[0], tail


class CorralClient:
    def __init__(self, url: str):
        import requests

        self.url = url
        self.http = requests.Session()

    def create(self, body: dict | None = None) -> str:
        response = self.http.post(f"{self.url}/v1/sessions", json=body or {},
                                  timeout=HTTP_TIMEOUT_S)
        if response.status_code != 201:
            raise RuntimeError(f"corral create: {response.status_code} {response.text[:500]}")
        return response.json()["id"]

    def info(self) -> dict:
        response = self.http.get(f"{self.url}/v1/info", timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    def wait_for_warm_worker(self) -> None:
        """Untimed: until the warm pool holds a worker (a pool sized for the arrival rate)."""
        deadline = time.monotonic() + KERNEL_READY_DEADLINE_S
        while (self.info().get("pool") or {}).get("ready", 0) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("corral's warm pool did not refill in time")
            time.sleep(0.005)

    def fresh_limits(self) -> dict:
        """Limits one below the default open-file limit: no pool worker has them, so a session
        asking for them gets a freshly started worker (the path without a pool)."""
        default = self.info()["limits"]["session_max_open_files"]
        return {"limits": {"max_open_files": default - 1}}

    def memory(self, session: str) -> dict:
        response = self.http.get(f"{self.url}/v1/sessions/{session}", timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        return response.json()["memory"]

    def execute(self, session: str, code: str) -> dict:
        response = self.http.post(
            f"{self.url}/v1/sessions/{session}/executions", json={"code": code},
            timeout=EXECUTE_DEADLINE_S,
        )
        if response.status_code // 100 != 2:
            raise RuntimeError(f"corral execute: {response.status_code} {response.text[:500]}")
        body = response.json()
        if body.get("status") != "ok":
            raise RuntimeError(f"corral execute {code!r} failed: {body.get('error')}")
        return body

    def close(self, session: str) -> None:
        response = self.http.delete(f"{self.url}/v1/sessions/{session}", timeout=HTTP_TIMEOUT_S)
        if response.status_code // 100 != 2:
            raise RuntimeError(f"corral close: {response.status_code} {response.text[:500]}")


def bench_corral(server: Server, client: CorralClient, iterations: int, throughput_n: int) -> dict:
    client.close(client.create())  # warm-up, untimed

    create = []
    for _ in range(iterations):
        client.wait_for_warm_worker()
        started = time.perf_counter()
        session = client.create()
        create.append(time.perf_counter() - started)
        client.close(session)

    # Until the first execution has answered: what a client waits for before it can work.
    create_run = []
    for _ in range(iterations):
        client.wait_for_warm_worker()
        started = time.perf_counter()
        session = client.create()
        client.execute(session, "1 + 1")
        create_run.append(time.perf_counter() - started)
        client.close(session)

    fresh_body = client.fresh_limits()
    create_fresh = []
    for _ in range(iterations):
        started = time.perf_counter()
        session = client.create(fresh_body)
        create_fresh.append(time.perf_counter() - started)
        client.close(session)

    session = client.create()
    client.execute(session, "x = 0")
    execute = []
    for expected in range(1, iterations + 1):
        started = time.perf_counter()
        body = client.execute(session, "x += 1\nx")
        execute.append(time.perf_counter() - started)
        if (body.get("result") or {}).get("text/plain") != str(expected):
            raise RuntimeError(f"corral: expected {expected}, got {body.get('result')}")
    started = time.perf_counter()
    for _ in range(throughput_n):
        client.execute(session, "x += 1")
    per_second = throughput_n / (time.perf_counter() - started)
    client.close(session)

    lifecycle = []
    for _ in range(iterations):
        client.wait_for_warm_worker()
        started = time.perf_counter()
        session = client.create()
        client.execute(session, "1 + 1")
        client.close(session)
        lifecycle.append(time.perf_counter() - started)

    memory = measure_memory(
        server,
        create=client.create,
        run=lambda session: client.execute(session, "import sys"),
        close=client.close,
        own_memory=client.memory,
    )
    return {
        "latencies": {
            "session create": summarize(create),
            "session create, first execute answered": summarize(create_run),
            "session create, no warm worker": summarize(create_fresh),
            "execute round trip": summarize(execute),
            "create + execute + close": summarize(lifecycle),
        },
        "executions_per_second_1_session": per_second,
        **memory,
    }


# --------------------------------------------------------------------------------------------
# Jupyter Kernel Gateway


def start_jkg(runtime_dir: Path, servers: list) -> tuple[Server, str, Path]:
    port = free_port()
    log_path = runtime_dir / "jkg.log"
    env = dict(
        os.environ,
        # Keep Jupyter's and IPython's files in the temp dir, away from ~ and user config.
        JUPYTER_CONFIG_DIR=str(runtime_dir / "config"),
        JUPYTER_DATA_DIR=str(runtime_dir / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime_dir / "runtime"),
        IPYTHONDIR=str(runtime_dir / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.pop("KG_AUTH_TOKEN", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV / "bin" / "jupyter"), "kernelgateway",
             "--KernelGatewayApp.ip=127.0.0.1",
             f"--KernelGatewayApp.port={port}",
             "--KernelGatewayApp.port_retries=0",
             "--KernelGatewayApp.auth_token=",
             "--KernelGatewayApp.log_level=WARN"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, cwd=str(runtime_dir),
        )
    server = Server("jupyter-kernel-gateway", process)
    servers.append(server)  # from here on, the caller's cleanup stops it
    url = f"http://127.0.0.1:{port}"

    import requests

    deadline = time.monotonic() + SERVER_START_DEADLINE_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"JKG exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/api", timeout=2).status_code == 200:
                return server, url, log_path
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"JKG did not answer GET /api in time:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


class QuickAckSocket:
    """Wraps the client's socket to set TCP_QUICKACK before every read.

    JKG (jupyter_server on tornado) leaves Nagle's algorithm on for its websockets, so when a
    kernel sends `status: busy` and then `execute_input` / `execute_result` / `status: idle`, the
    later frames wait for the client's delayed ACK of the first (about 40 ms on Linux). That is
    what a stock client sees and is what the main rows report; this wrapper measures JKG without
    that effect, as an extra row.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def recv(self, size: int) -> bytes:
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return self._sock.recv(size)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class JkgClient:
    def __init__(self, url: str):
        import requests

        self.url = url
        self.ws_url = "ws" + url[len("http"):]
        self.http = requests.Session()
        self.session = uuid.uuid4().hex

    def post_kernel(self) -> str:
        response = self.http.post(f"{self.url}/api/kernels", json={"name": "python3"},
                                  timeout=HTTP_TIMEOUT_S)
        if response.status_code != 201:
            raise RuntimeError(f"JKG POST /api/kernels: {response.status_code} {response.text[:500]}")
        return response.json()["id"]

    def connect(self, kernel: str):
        import websocket

        return websocket.create_connection(
            f"{self.ws_url}/api/kernels/{kernel}/channels?session_id={self.session}",
            timeout=KERNEL_READY_DEADLINE_S,
        )

    def delete_kernel(self, kernel: str) -> None:
        response = self.http.delete(f"{self.url}/api/kernels/{kernel}", timeout=HTTP_TIMEOUT_S)
        if response.status_code // 100 != 2:
            raise RuntimeError(f"JKG DELETE kernel: {response.status_code} {response.text[:500]}")

    def message(self, msg_type: str, content: dict) -> dict:
        return {
            "header": {
                "msg_id": uuid.uuid4().hex,
                "username": "bench",
                "session": self.session,
                "msg_type": msg_type,
                "version": "5.3",
                "date": datetime.now(timezone.utc).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": "shell",
            "buffers": [],
        }

    @staticmethod
    def receive(ws, deadline: float) -> dict:
        import websocket

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("JKG: no answer before the deadline")
            ws.settimeout(remaining)
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                raise TimeoutError("JKG: no answer before the deadline") from None
            if isinstance(raw, (bytes, bytearray)):
                continue  # binary frames carry buffers; none expected here
            return json.loads(raw)

    def kernel_info(self, ws) -> None:
        request = self.message("kernel_info_request", {})
        ws.send(json.dumps(request))
        deadline = time.monotonic() + KERNEL_READY_DEADLINE_S
        while True:
            reply = self.receive(ws, deadline)
            if (reply.get("msg_type") == "kernel_info_reply"
                    and reply.get("parent_header", {}).get("msg_id") == request["header"]["msg_id"]):
                return

    def create_ready(self) -> tuple[str, object]:
        kernel = self.post_kernel()
        ws = self.connect(kernel)
        self.kernel_info(ws)
        return kernel, ws

    def close_kernel(self, kernel: str, ws) -> None:
        ws.close()
        self.delete_kernel(kernel)

    def execute(self, ws, code: str) -> str | None:
        """Sends execute_request; waits for iopub status idle of it. Returns text/plain, if any."""
        request = self.message("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True,
        })
        msg_id = request["header"]["msg_id"]
        ws.send(json.dumps(request))
        deadline = time.monotonic() + EXECUTE_DEADLINE_S
        result, error = None, None
        while True:
            reply = self.receive(ws, deadline)
            if reply.get("parent_header", {}).get("msg_id") != msg_id or reply.get("channel") != "iopub":
                continue
            kind = reply.get("msg_type")
            if kind == "execute_result":
                result = reply["content"]["data"].get("text/plain")
            elif kind == "error":
                error = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
            elif kind == "status" and reply["content"].get("execution_state") == "idle":
                if error:
                    raise RuntimeError(f"JKG execute {code!r} failed: {error}")
                return result


def bench_jkg(server: Server, client: JkgClient, iterations: int, throughput_n: int) -> dict:
    client.close_kernel(*client.create_ready())  # warm-up, untimed

    create = []
    for _ in range(iterations):
        started = time.perf_counter()
        kernel, ws = client.create_ready()
        create.append(time.perf_counter() - started)
        client.close_kernel(kernel, ws)

    create_run = []
    for _ in range(iterations):
        started = time.perf_counter()
        kernel, ws = client.create_ready()
        client.execute(ws, "1 + 1")
        create_run.append(time.perf_counter() - started)
        client.close_kernel(kernel, ws)

    kernel, ws = client.create_ready()
    client.execute(ws, "x = 0")
    execute = []
    for expected in range(1, iterations + 1):
        started = time.perf_counter()
        result = client.execute(ws, "x += 1\nx")
        execute.append(time.perf_counter() - started)
        if result != str(expected):
            raise RuntimeError(f"JKG: expected {expected}, got {result!r}")
    started = time.perf_counter()
    for _ in range(throughput_n):
        client.execute(ws, "x += 1")
    per_second = throughput_n / (time.perf_counter() - started)

    # The same again with this client acknowledging at once (see QuickAckSocket).
    ws.sock = QuickAckSocket(ws.sock)
    client.execute(ws, "x = 0")
    execute_quickack = []
    for expected in range(1, iterations + 1):
        started = time.perf_counter()
        result = client.execute(ws, "x += 1\nx")
        execute_quickack.append(time.perf_counter() - started)
        if result != str(expected):
            raise RuntimeError(f"JKG: expected {expected}, got {result!r}")
    started = time.perf_counter()
    for _ in range(throughput_n):
        client.execute(ws, "x += 1")
    per_second_quickack = throughput_n / (time.perf_counter() - started)
    client.close_kernel(kernel, ws)

    lifecycle = []
    for _ in range(iterations):
        started = time.perf_counter()
        kernel = client.post_kernel()
        ws = client.connect(kernel)
        client.execute(ws, "1 + 1")
        ws.close()
        client.delete_kernel(kernel)
        lifecycle.append(time.perf_counter() - started)

    open_sockets: dict[str, object] = {}

    def create_for_memory() -> str:
        kernel, ws = client.create_ready()
        open_sockets[kernel] = ws
        return kernel

    memory = measure_memory(
        server,
        create=create_for_memory,
        run=lambda kernel: client.execute(open_sockets[kernel], "import sys"),
        close=lambda kernel: client.close_kernel(kernel, open_sockets.pop(kernel)),
    )
    return {
        "latencies": {
            "session create": summarize(create),
            "session create, first execute answered": summarize(create_run),
            # JKG has one way to start a kernel.
            "session create, no warm worker": summarize(create),
            "execute round trip": summarize(execute),
            "create + execute + close": summarize(lifecycle),
        },
        "executions_per_second_1_session": per_second,
        "quickack_client": {
            "execute round trip": summarize(execute_quickack),
            "executions_per_second_1_session": per_second_quickack,
        },
        **memory,
    }


# --------------------------------------------------------------------------------------------
# Memory: one idle session after `import sys`.


IDLE_SESSIONS = 16


def measure_memory(server: Server, create, run, close, own_memory=None) -> dict:
    """One idle session's RSS (its process tree), then PSS and USS per session over 16 idle
    sessions held at once. corral reports each session's own memory (smaps_rollup of every
    process in its cgroup: `own_memory`); a warm pool's idle workers are already the server's
    descendants before a create, so the process-tree difference would miss them. For JKG the
    kernels' new process trees are read the same way (smaps_rollup)."""
    pid = server.process.pid
    before = descendants(pid)
    session = create()
    try:
        run(session)
        time.sleep(1.0)  # let the session settle into idle
        if own_memory is not None:
            usage = own_memory(session)
            session_kib = usage["rss_bytes"] // 1024
            processes = usage["processes"]
        else:
            tree = descendants(pid) - before
            session_kib = sum(rss_kib(p) for p in tree)
            processes = len(tree)
        server.remember_descendants()
        server_kib = rss_kib(pid)
    finally:
        close(session)

    before = descendants(pid)
    sessions = []
    try:
        for _ in range(IDLE_SESSIONS):
            sessions.append(create())
            run(sessions[-1])
        time.sleep(1.0)
        if own_memory is not None:
            usages = [own_memory(session) for session in sessions]
            pss_kib = sum(usage["pss_bytes"] for usage in usages) // 1024
            uss_kib = sum(usage["uss_bytes"] for usage in usages) // 1024
        else:
            measured = [smaps_kib(p) for p in descendants(pid) - before]
            pss_kib = sum(pss for pss, _ in measured)
            uss_kib = sum(uss for _, uss in measured)
        server.remember_descendants()
    finally:
        for session in sessions:
            close(session)
    return {
        "session_rss_mib": session_kib / 1024.0,
        "session_processes": processes,
        "server_rss_mib": server_kib / 1024.0,
        "idle_sessions": IDLE_SESSIONS,
        "session_pss_mib": pss_kib / IDLE_SESSIONS / 1024.0,
        "session_uss_mib": uss_kib / IDLE_SESSIONS / 1024.0,
    }


# --------------------------------------------------------------------------------------------
# Output.


def print_table(report: dict) -> None:
    corral, jkg = report["corral"], report["jupyter_kernel_gateway"]
    print(f"corral {report['corral_version']} ({report['corral_binary']}) vs "
          f"jupyter_kernel_gateway {report['versions'].get('jupyter_kernel_gateway')} "
          f"(ipykernel {report['versions'].get('ipykernel')}), "
          f"Python {report['python']}, {report['iterations']} samples per latency")
    print()

    def cells(row: dict | None, first: int) -> str:
        if row is None:
            return f"{'-':>{first}} {'-':>8} {'-':>8}"
        return f"{row['p50_ms']:>{first}.2f} {row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f}"

    def line(name: str, ours: dict, theirs: dict, show_ours: bool = True) -> None:
        ratio = f"{theirs['p50_ms'] / ours['p50_ms']:.1f}x"
        print(f"{name:<40} | {cells(ours if show_ours else None, 10)} | {cells(theirs, 9)}"
              f" | {ratio:>14}")

    head = (f"{'latency (ms)':<40} | {'corral p50':>10} {'p95':>8} {'p99':>8} | "
            f"{'JKG p50':>9} {'p95':>8} {'p99':>8} | {'JKG/corral p50':>14}")
    print(head)
    print("-" * len(head))
    corral_execute = corral["latencies"]["execute round trip"]
    for name, ours in corral["latencies"].items():
        line(name, ours, jkg["latencies"][name])
        if name == "execute round trip":
            line("  (JKG, TCP_QUICKACK client)", corral_execute,
                 jkg["quickack_client"]["execute round trip"], show_ours=False)
    print()

    def other(name: str, ours: str, theirs: str) -> None:
        print(f"{name:<44} | {ours:>10} | {theirs:>10}")

    n = report["throughput_executions"]
    head2 = f"{'other':<44} | {'corral':>10} | {'JKG':>10}"
    print(head2)
    print("-" * len(head2))
    other(f"executions/s, 1 session ({n} sequential)",
          f"{corral['executions_per_second_1_session']:.0f}",
          f"{jkg['executions_per_second_1_session']:.0f}")
    other("  (JKG, TCP_QUICKACK client)", "-",
          f"{jkg['quickack_client']['executions_per_second_1_session']:.0f}")
    other("RSS of 1 idle session after import (MiB)",
          f"{corral['session_rss_mib']:.1f}", f"{jkg['session_rss_mib']:.1f}")
    other(f"PSS per idle session, {corral['idle_sessions']} held (MiB)",
          f"{corral['session_pss_mib']:.2f}", f"{jkg['session_pss_mib']:.2f}")
    other(f"USS per idle session, {corral['idle_sessions']} held (MiB)",
          f"{corral['session_uss_mib']:.2f}", f"{jkg['session_uss_mib']:.2f}")
    other("  processes in that session's tree",
          str(corral["session_processes"]), str(jkg["session_processes"]))
    other("RSS of the server process itself (MiB)",
          f"{corral['server_rss_mib']:.1f}", f"{jkg['server_rss_mib']:.1f}")


def latency_chart(report: dict) -> str:
    """Median latencies of both servers as a horizontal bar chart (SVG, log scale)."""
    import math
    from xml.sax.saxutils import escape

    corral, jkg = report["corral"]["latencies"], report["jupyter_kernel_gateway"]["latencies"]
    rows = [(name, corral[name]["p50_ms"], jkg[name]["p50_ms"]) for name in corral]
    low, high = -2.0, 4.0  # 0.01 ms .. 10 s
    left, width, bar, gap = 300, 520, 14, 14
    height = 60 + len(rows) * (2 * bar + gap)

    def x(ms: float) -> float:
        return left + width * (min(max(math.log10(max(ms, 1e-3)), low), high) - low) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 120}" '
             f'height="{height}" font-family="sans-serif" font-size="12">',
             '<text x="10" y="20" font-size="14">p50 latency, ms (log scale): '
             'corral (blue) vs Jupyter Kernel Gateway (orange)</text>']
    for tick in range(int(low), int(high) + 1):
        position = x(10.0 ** tick)
        parts.append(f'<line x1="{position:.1f}" y1="30" x2="{position:.1f}" y2="{height - 10}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{position:.1f}" y="{height}" text-anchor="middle">'
                     f'{10.0 ** tick:g}</text>')
    y = 40
    for name, ours, theirs in rows:
        parts.append(f'<text x="10" y="{y + bar + 4}">{escape(name)}</text>')
        for value, colour, offset in ((ours, "#1f77b4", 0), (theirs, "#ff7f0e", bar)):
            parts.append(f'<rect x="{left}" y="{y + offset}" width="{x(value) - left:.1f}" '
                         f'height="{bar - 2}" fill="{colour}"/>')
            parts.append(f'<text x="{x(value) + 4:.1f}" y="{y + offset + bar - 4}">'
                         f'{value:.2f}</text>')
        y += 2 * bar + gap
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=50,
                        help="samples per latency measurement (default 50)")
    parser.add_argument("--corral", type=Path, default=None,
                        help="corral binary (default target/release/corral, else target/debug/corral)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args()


def corral_binary(given: Path | None) -> Path:
    if given is not None:
        if not os.access(given, os.X_OK):
            raise SystemExit(f"not an executable: {given}")
        return given.resolve()
    for candidate in (REPO / "target/release/corral", REPO / "target/debug/corral"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("no corral binary: run `cargo build --release` or pass --corral PATH")


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("jupyter_kernel_gateway", "ipykernel", "jupyter_client", "jupyter_server",
                 "tornado", "pyzmq", "websocket-client", "requests"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    arguments = parse_arguments()
    if arguments.iterations < 1:
        raise SystemExit("--iterations must be at least 1")
    binary = corral_binary(arguments.corral)

    if not in_bench_venv():
        ensure_venv()
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, on_sigterm)
    if "debug" in binary.parts:
        print(f"warning: {binary} is a debug build; corral's numbers are not representative",
              file=sys.stderr)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    throughput_n = max(MIN_THROUGHPUT_EXECUTIONS, arguments.iterations)
    temp = Path(tempfile.mkdtemp(prefix="corral-peer-bench-"))
    servers: list[Server] = []
    try:
        (temp / "corral").mkdir()
        (temp / "jkg").mkdir()
        corral_server, corral_url, corral_log = start_corral(binary, temp / "corral", servers)
        jkg_server, jkg_url, jkg_log = start_jkg(temp / "jkg", servers)
        print(f"corral at {corral_url}, JKG at {jkg_url}; {arguments.iterations} iterations",
              file=sys.stderr)

        started = time.monotonic()
        try:
            corral = bench_corral(corral_server, CorralClient(corral_url), arguments.iterations,
                                  throughput_n)
        except Exception:
            print("corral log tail:\n" + "\n".join(corral_log), file=sys.stderr)
            raise
        print(f"corral done in {time.monotonic() - started:.1f}s", file=sys.stderr)
        started = time.monotonic()
        try:
            jkg = bench_jkg(jkg_server, JkgClient(jkg_url), arguments.iterations, throughput_n)
        except Exception:
            print("JKG log tail:\n" + jkg_log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        print(f"JKG done in {time.monotonic() - started:.1f}s", file=sys.stderr)

        report = {
            "iterations": arguments.iterations,
            "throughput_executions": throughput_n,
            "corral_binary": str(binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary),
            "corral_version": version.removeprefix("corral ").strip(),
            "python": sys.version.split()[0],
            "interpreter": str(VENV_PYTHON),
            "versions": package_versions(),
            "corral": corral,
            "jupyter_kernel_gateway": jkg,
        }
        out = REPO / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare-jupyter.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "compare-jupyter.svg").write_text(latency_chart(report))
        if arguments.json:
            print(json.dumps(report, indent=2))
        else:
            print_table(report)
        print(f"wrote {out.relative_to(REPO)}/compare-jupyter.json and compare-jupyter.svg",
              file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("interrupted; stopping the servers", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as error:  # keep stopping the others
                print(f"stopping {server.name}: {error}", file=sys.stderr)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
