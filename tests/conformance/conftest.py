"""Fixtures for the conformance tests: a real corral server on an ephemeral loopback port.

The server binary comes from $CORRAL_BIN (scripts/test sets it); sessions run on this
interpreter (the test venv), so they can import matplotlib and pandas.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

START_DEADLINE_SECONDS = 60


class Server:
    def __init__(self, base_url, process):
        self.base_url = base_url
        self.process = process
        self.http = requests.Session()

    def url(self, path):
        return self.base_url + path


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("CORRAL_BIN", "target/debug/corral")
    data_dir = tempfile.mkdtemp(prefix="corral-conformance-")
    process = subprocess.Popen(
        [binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir, "--python", sys.executable],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = threading.Event()
    address = {}

    def read_log():
        for line in process.stderr:
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                address["url"] = match.group(1)
                found.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not found.wait(START_DEADLINE_SECONDS):
            raise RuntimeError("corral did not start")
        yield Server(address["url"], process)
    finally:
        stop(process, data_dir)


def stop(process, data_dir):
    """SIGTERM (graceful: sessions closed, workspaces released), SIGKILL if that hangs, then
    unmount any workspace a killed server left (they are links to tmpfs mounts under /run)."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    workspaces = os.path.join(data_dir, "workspaces")
    if os.path.isdir(workspaces):
        for name in os.listdir(workspaces):
            link = os.path.join(workspaces, name)
            if os.path.islink(link):
                target = os.readlink(link)
                subprocess.run(["umount", "-l", target], check=False, timeout=30,
                               stderr=subprocess.DEVNULL)
                try:
                    os.rmdir(target)
                except OSError:
                    pass
    subprocess.run(["rm", "-rf", "--one-file-system", data_dir], check=False, timeout=60)


# ---------------------------------------------------------------------------------------------
# Kernel gateways for the channels tests (issue 11), and jupyter_server / JupyterLab in gateway
# mode in front of them. By default the gateway is corral (the `server` fixture above). With
# CONFORMANCE_KERNEL_GATEWAY=/path/to/jupyter of a venv that has jupyter_kernel_gateway, the same
# tests run against Jupyter Kernel Gateway instead (its kernels on this interpreter's ipykernel),
# which is how the tests themselves are checked against the real thing.

JUPYTER_START_DEADLINE_SECONDS = 60
STOP_DEADLINE_SECONDS = 30


def free_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def isolated_jupyter_environment(home, kernel_python=None):
    """An environment whose Jupyter and IPython files all live under `home`; with
    `kernel_python`, a `python3` kernelspec there that runs ipykernel on that interpreter."""
    environment = dict(os.environ)
    for variable, folder in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
    ]:
        environment[variable] = os.path.join(home, folder)
        os.makedirs(environment[variable], exist_ok=True)
    environment["JUPYTER_PLATFORM_DIRS"] = "1"
    environment["JUPYTER_PREFER_ENV_PATH"] = "0"  # our kernelspec before the venv's own
    environment["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    for variable in ("JUPYTER_PATH", "JUPYTER_TOKEN", "KG_AUTH_TOKEN", "MPLBACKEND"):
        environment.pop(variable, None)
    if kernel_python:
        spec_dir = os.path.join(environment["JUPYTER_DATA_DIR"], "kernels", "python3")
        os.makedirs(spec_dir, exist_ok=True)
        with open(os.path.join(spec_dir, "kernel.json"), "w") as spec:
            json.dump(
                {
                    "argv": [kernel_python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "metadata": {"debugger": False},
                },
                spec,
            )
    return environment


def stop_process(process):
    """SIGTERM by PID, SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=STOP_DEADLINE_SECONDS)


def wait_for_http(url, process, log_path, what, headers=None):
    deadline = time.monotonic() + JUPYTER_START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early ({process.returncode}):\n{read_text(log_path)}")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} in time:\n{read_text(log_path)}")


def read_text(path):
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except OSError:
        return ""


class KernelGateway:
    """What jupyter_server's --gateway-url points at: corral, or Jupyter Kernel Gateway."""

    def __init__(self, kind, base_url, corral=None):
        self.kind = kind
        self.base_url = base_url
        self.corral = corral

    @property
    def is_corral(self):
        return self.kind == "corral"

    def url(self, path):
        return self.base_url + path

    def native_session(self, kernel_id):
        """corral's own view of the kernel's session (GET /v1/sessions/{id}); None for JKG."""
        if not self.is_corral:
            return None
        reply = requests.get(self.url(f"/v1/sessions/{kernel_id}"), timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()


@pytest.fixture(scope="module")
def kernel_gateway(request):
    jupyter = os.environ.get("CONFORMANCE_KERNEL_GATEWAY")
    if not jupyter:
        corral = request.getfixturevalue("server")
        yield KernelGateway("corral", corral.base_url, corral)
        return
    home = tempfile.mkdtemp(prefix="conformance-jkg-")
    log_path = os.path.join(home, "jkg.log")
    port = free_loopback_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                jupyter, "kernelgateway",
                "--KernelGatewayApp.ip=127.0.0.1",
                f"--KernelGatewayApp.port={port}",
                "--KernelGatewayApp.port_retries=0",
                "--KernelGatewayApp.auth_token=",
                # jupyter_server's /api/status and kernel list ask the gateway for its kernels.
                "--JupyterWebsocketPersonality.list_kernels=True",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=isolated_jupyter_environment(home, kernel_python=sys.executable),
            cwd=home,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(base_url + "/api", process, log_path, "Jupyter Kernel Gateway")
        yield KernelGateway("jupyter_kernel_gateway", base_url)
    finally:
        stop_process(process)
        subprocess.run(["rm", "-rf", home], check=False, timeout=60)


class JupyterApp:
    """jupyter_server (or JupyterLab, which is served by it) on a free loopback port, in gateway
    mode when given a gateway URL, else with local kernels on this interpreter's ipykernel."""

    TOKEN = "channels-token"

    def __init__(self, gateway_url=None, module="jupyter_server", extra_arguments=()):
        self.home = tempfile.mkdtemp(prefix="conformance-jupyter-")
        self.port = free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_base_url = f"ws://127.0.0.1:{self.port}"
        self.root_dir = os.path.join(self.home, "root")
        os.mkdir(self.root_dir)
        self.log_path = os.path.join(self.home, "jupyter.log")
        arguments = [
            sys.executable, "-m", module,
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.TOKEN}",
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True",
            f"--ServerApp.root_dir={self.root_dir}",
        ]
        if gateway_url:
            arguments.append(f"--gateway-url={gateway_url}")
        arguments.extend(extra_arguments)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=isolated_jupyter_environment(self.home, kernel_python=sys.executable),
                cwd=self.home,
            )
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {self.TOKEN}"

    def wait_until_ready(self):
        wait_for_http(self.url("/api"), self.process, self.log_path, "jupyter_server",
                      headers={"Authorization": f"token {self.TOKEN}"})

    def url(self, path):
        return self.base_url + path

    def log_text(self):
        return read_text(self.log_path)

    def stop(self):
        stop_process(self.process)
        subprocess.run(["rm", "-rf", self.home], check=False, timeout=60)


@pytest.fixture(scope="module")
def gateway_jupyter(kernel_gateway):
    """jupyter_server 2.21.1 with --gateway-url at the kernel gateway under test."""
    app = JupyterApp(kernel_gateway.base_url)
    try:
        app.wait_until_ready()
        yield app
    finally:
        app.stop()
