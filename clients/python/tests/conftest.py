"""A real corral server on an ephemeral loopback port for the client's tests.

The binary comes from $CORRAL_BIN (scripts/test sets it); sessions run on this interpreter.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

START_DEADLINE_SECONDS = 60
STOP_DEADLINE_SECONDS = 40


class Server:
    def __init__(self, url, process, data_dir):
        self.url = url
        self.process = process
        self.data_dir = data_dir
        self.log = []

    def corral(self, *arguments):
        """Runs the corral binary (e.g. `keys create --data-dir`) and returns its stdout."""
        binary = os.environ.get("CORRAL_BIN", "target/debug/corral")
        done = subprocess.run([binary, *arguments], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def start(config=None, arguments=()):
    binary = os.environ.get("CORRAL_BIN", "target/debug/corral")
    data_dir = tempfile.mkdtemp(prefix="corral-client-")
    command = [binary, "serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir,
               "--python", sys.executable, *arguments]
    if config:
        path = data_dir + ".toml"
        with open(path, "w") as file:
            file.write(config)
        command += ["--config", path]
    environment = dict(os.environ)
    for variable in ("CORRAL_SERVER", "CORRAL_API_KEY", "CORRAL_CONFIG"):
        environment.pop(variable, None)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=environment)
    found = threading.Event()
    server = Server(None, process, data_dir)

    def read_log():
        for line in process.stderr:
            server.log.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                server.url = match.group(1)
                found.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not found.wait(START_DEADLINE_SECONDS):
        stop(server)
        raise RuntimeError("corral did not start:\n" + "".join(server.log))
    return server


def stop(server):
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=STOP_DEADLINE_SECONDS)
    subprocess.run(["rm", "-rf", "--one-file-system", server.data_dir], check=False, timeout=60)


@pytest.fixture(scope="module")
def server():
    running = start()
    try:
        yield running
    finally:
        stop(running)


@pytest.fixture
def fresh_server(request):
    """A server of the test's own (`config`/`arguments` from the `corral_server` marker)."""
    marker = request.node.get_closest_marker("corral_server")
    options = marker.kwargs if marker else {}
    running = start(**options)
    try:
        yield running
    finally:
        stop(running)


def pytest_configure(config):
    config.addinivalue_line("markers", "corral_server(config, arguments): options of fresh_server")
