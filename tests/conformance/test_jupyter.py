"""Jupyter Server (seed 002): the REST API's request/response pairs over `requests`, then
jupyter_server 2.21.1 itself in gateway mode (`--gateway-url`) running its kernels on corral
through its unmodified GatewayClient."""

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests

TIMEOUT = 30
JUPYTER_START_DEADLINE_SECONDS = 60
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def native_state(server, kernel_id):
    reply = requests.get(server.url(f"/v1/sessions/{kernel_id}"), timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_for_state(server, session_id, state):
    deadline = time.monotonic() + TIMEOUT
    while native_state(server, session_id)["state"] != state:
        assert time.monotonic() < deadline, f"session {session_id} never became {state}"
        time.sleep(0.02)


def execute(server, session_id, code):
    reply = requests.post(server.url(f"/v1/sessions/{session_id}/executions"), json={"code": code}, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    return reply.json()


def check_kernel(kernel):
    assert sorted(kernel) == ["connections", "execution_state", "id", "last_activity", "name"]
    assert kernel["name"] == "python3"
    assert TIMESTAMP.match(kernel["last_activity"]), kernel
    uuid.UUID(kernel["id"])
    return kernel["id"]


def test_kernels_over_http(server):
    assert requests.get(server.url("/api"), timeout=TIMEOUT).json() == {"version": "2.21.1"}
    specs = requests.get(server.url("/api/kernelspecs"), timeout=TIMEOUT).json()
    assert specs["default"] == "python3"
    assert specs["kernelspecs"]["python3"]["spec"]["language"] == "python"

    started = requests.post(server.url("/api/kernels"), json={"name": "python3"}, timeout=TIMEOUT)
    assert started.status_code == 201, started.text
    kernel_id = check_kernel(started.json())
    assert started.headers["Location"] == f"/api/kernels/{kernel_id}"
    assert native_state(server, kernel_id)["state"] == "idle"

    execute(server, kernel_id, "x = 1")
    restarted = requests.post(server.url(f"/api/kernels/{kernel_id}/restart"), json={}, timeout=TIMEOUT)
    assert restarted.status_code == 200 and check_kernel(restarted.json()) == kernel_id
    assert execute(server, kernel_id, "x")["error"]["ename"] == "NameError"
    interrupted = requests.post(server.url(f"/api/kernels/{kernel_id}/interrupt"), json={}, timeout=TIMEOUT)
    assert interrupted.status_code == 204

    deleted = requests.delete(server.url(f"/api/kernels/{kernel_id}"), timeout=TIMEOUT)
    assert deleted.status_code == 204 and deleted.content == b""
    assert native_state(server, kernel_id)["state"] == "closed"
    gone = requests.get(server.url(f"/api/kernels/{kernel_id}"), timeout=TIMEOUT)
    assert (gone.status_code, gone.json()) == (404, {"message": f"Kernel does not exist: {kernel_id}", "reason": None})
    unknown = requests.post(server.url("/api/kernels"), json={"name": "nope"}, timeout=TIMEOUT)
    assert (unknown.status_code, unknown.json()) == (404, {"message": "No such kernel named nope", "reason": None})


def test_sessions_over_http(server):
    created = requests.post(
        server.url("/api/sessions"), json={"path": "c.ipynb", "type": "notebook", "name": "c"}, timeout=TIMEOUT
    )
    assert created.status_code == 201, created.text
    session = created.json()
    assert created.headers["Location"] == f"/api/sessions/{session['id']}"
    assert session["notebook"] == {"path": "c.ipynb", "name": "c"}
    kernel_id = check_kernel(session["kernel"])
    assert native_state(server, kernel_id)["metadata"]["jupyter"]["session_id"] == session["id"]

    again = requests.post(server.url("/api/sessions"), json={"path": "c.ipynb", "type": "console"}, timeout=TIMEOUT)
    assert (again.status_code, again.json()) == (201, session)

    url = server.url(f"/api/sessions/{session['id']}")
    renamed = requests.patch(url, json={"name": "d", "path": "d.ipynb"}, timeout=TIMEOUT).json()
    assert (renamed["name"], renamed["path"], renamed["kernel"]["id"]) == ("d", "d.ipynb", kernel_id)
    switched = requests.patch(url, json={"kernel": {"name": "python3"}}, timeout=TIMEOUT).json()
    assert switched["kernel"]["id"] != kernel_id
    assert native_state(server, kernel_id)["state"] == "closed"
    missing = requests.patch(url, json={"kernel": {"id": kernel_id}}, timeout=TIMEOUT)
    assert (missing.status_code, missing.json()) == (400, {"message": f"No such kernel: {kernel_id}", "reason": None})

    for body, message in [
        (None, "No JSON data provided"),
        ({}, "Missing field in JSON data: path"),
        ({"path": "x"}, "Missing field in JSON data: type"),
    ]:
        refused = requests.post(server.url("/api/sessions"), json=body, timeout=TIMEOUT)
        assert (refused.status_code, refused.json()) == (400, {"message": message, "reason": None})
    unavailable = requests.post(
        server.url("/api/sessions"), json={"path": "y", "type": "file", "kernel": {"name": "nope"}}, timeout=TIMEOUT
    )
    assert unavailable.status_code == 501
    assert unavailable.json()["short_message"] == "nope not found"

    assert requests.delete(url, timeout=TIMEOUT).status_code == 204
    assert native_state(server, switched["kernel"]["id"])["state"] == "closed"
    after = requests.get(url, timeout=TIMEOUT)
    assert (after.status_code, after.json()) == (
        404,
        {"message": f"Session not found: session_id='{session['id']}'", "reason": None},
    )


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterServer:
    """jupyter_server in gateway mode, pointed at corral, on a free loopback port."""

    TOKEN = "conformance-token"

    def __init__(self, gateway_url):
        self.home = tempfile.mkdtemp(prefix="corral-jupyter-")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.home, "jupyter.log")
        root_dir = os.path.join(self.home, "root")
        os.mkdir(root_dir)
        environment = dict(os.environ)
        for variable, folder in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
        ]:
            environment[variable] = os.path.join(self.home, folder)
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server",
                f"--gateway-url={gateway_url}",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={self.TOKEN}",
                "--ServerApp.open_browser=False",
                "--ServerApp.allow_root=True",
                f"--ServerApp.root_dir={root_dir}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {self.TOKEN}"

    def wait_until_ready(self):
        deadline = time.monotonic() + JUPYTER_START_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter_server exited early:\n{self.log_text()}")
            try:
                if self.http.get(self.url("/api"), timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter_server did not start:\n{self.log_text()}")

    def url(self, path):
        return self.base_url + path

    def log_text(self):
        with open(self.log_path) as log:
            return log.read()

    def stop(self):
        """SIGTERM by PID, then SIGKILL if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()
        subprocess.run(["rm", "-rf", self.home], check=False, timeout=60)


@pytest.fixture
def jupyter(server):
    instance = JupyterServer(server.base_url)
    try:
        instance.wait_until_ready()
        yield instance
    finally:
        instance.stop()


def corral_live_ids(server):
    listed = requests.get(server.url("/v1/sessions"), params={"state": "idle"}, timeout=TIMEOUT).json()
    return {session["id"] for session in listed["sessions"]}


def test_jupyter_server_runs_its_kernels_on_corral(server, jupyter):
    http = jupyter.http
    # Kernelspecs are served from corral.
    specs = http.get(jupyter.url("/api/kernelspecs"), timeout=TIMEOUT)
    assert specs.status_code == 200, specs.text
    corral_specs = requests.get(server.url("/api/kernelspecs"), timeout=TIMEOUT).json()
    assert specs.json()["default"] == "python3"
    assert specs.json()["kernelspecs"]["python3"]["spec"] == corral_specs["kernelspecs"]["python3"]["spec"]

    # A kernel started through jupyter_server is a corral session.
    started = http.post(jupyter.url("/api/kernels"), json={"name": "python3"}, timeout=TIMEOUT)
    assert started.status_code == 201, started.text + jupyter.log_text()
    kernel_id = started.json()["id"]
    assert kernel_id in corral_live_ids(server)
    assert native_state(server, kernel_id)["state"] == "idle"
    got = http.get(jupyter.url(f"/api/kernels/{kernel_id}"), timeout=TIMEOUT)
    assert got.status_code == 200 and got.json()["id"] == kernel_id
    listed = http.get(jupyter.url("/api/kernels"), timeout=TIMEOUT).json()
    assert [kernel["id"] for kernel in listed] == [kernel_id]

    # Interrupt: a loop started on corral's native API stops; the kernel keeps its state.
    execute(server, kernel_id, "state = 'kept'")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(execute, server, kernel_id, "while True: pass")
        wait_for_state(server, kernel_id, "busy")
        assert http.post(jupyter.url(f"/api/kernels/{kernel_id}/interrupt"), timeout=TIMEOUT).status_code == 204
        assert running.result(timeout=TIMEOUT)["error"]["ename"] == "KeyboardInterrupt"
    assert execute(server, kernel_id, "state")["result"]["text/plain"] == "'kept'"
    restarted = http.post(jupyter.url(f"/api/kernels/{kernel_id}/restart"), timeout=TIMEOUT)
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["id"] == kernel_id
    assert execute(server, kernel_id, "state")["error"]["ename"] == "NameError"

    deleted = http.delete(jupyter.url(f"/api/kernels/{kernel_id}"), timeout=TIMEOUT)
    assert deleted.status_code == 204
    assert native_state(server, kernel_id)["state"] == "closed"

    # Sessions stay in jupyter_server; their kernels run on corral.
    created = http.post(
        jupyter.url("/api/sessions"),
        json={"path": "work.ipynb", "type": "notebook", "name": "work", "kernel": {"name": "python3"}},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text + jupyter.log_text()
    session = created.json()
    session_kernel = session["kernel"]["id"]
    corral_kernel = native_state(server, session_kernel)
    assert corral_kernel["state"] == "idle"
    assert "jupyter" not in corral_kernel["metadata"], "the session is kept by jupyter_server"
    assert requests.get(server.url("/api/sessions"), timeout=TIMEOUT).json() == []
    fetched = http.get(jupyter.url(f"/api/sessions/{session['id']}"), timeout=TIMEOUT)
    assert fetched.status_code == 200 and fetched.json()["kernel"]["id"] == session_kernel
    assert execute(server, session_kernel, "6 * 7")["result"]["text/plain"] == "42"
    assert http.delete(jupyter.url(f"/api/sessions/{session['id']}"), timeout=TIMEOUT).status_code == 204
    assert native_state(server, session_kernel)["state"] == "closed"
    assert http.get(jupyter.url("/api/sessions"), timeout=TIMEOUT).json() == []
