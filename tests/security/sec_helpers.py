"""Helpers and fixtures for the security attack suite (re-exported by conftest.py).

One real corral server (sandboxed, lowered limits) runs for the whole suite. It is started the
way an operator might start it: from a terminal (a pty is its controlling terminal and stdin),
with a secret in its environment (CORRAL_TEST_SECRET) and with one stray inherited descriptor
(an open, root-only host file). The sessions must see none of that.

Each attack runs inside its own `attacker` session (always one handed a worker from the warm
pool, whose own workers are its siblings; with CORRAL_SECURITY_ZYGOTE=1 every Python worker is
forked by the runtime's zygote, which the suite then attacks as well) while two `bystanders` sessions are live;
`contained(server, bystanders)` then checks that the server is healthy and the bystanders still
answer with their variable and their files intact.

The data directory lives under /var/tmp (a host directory the sandbox shows read-only), not
under /tmp (which every sandbox replaces), so the checks that the data directory is hidden are
meaningful: without the hiding, a session could read it (the store is world-readable).
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("CORRAL_BIN") or str(REPO / "target" / "debug" / "corral")
# Not resolved: the venv's own path, so the session interpreter is the venv.
PYTHON = str(REPO / "target" / "venv" / "bin" / "python")

START_DEADLINE_SECONDS = 60
HTTP_TIMEOUT = 30
# Extra seconds an execute request may take beyond the execution's own timeout.
HTTP_SLACK = 60

MIB = 1024 * 1024
MEMORY_MIB = 256
MAX_PROCESSES = 64
WORKSPACE_MIB = 64
MAX_OPEN_FILES = 256
OUTPUT_CAP_BYTES = 256 * 1024

CONFIG = f"""\
[sandbox]
memory_mib = {MEMORY_MIB}
max_processes = {MAX_PROCESSES}
cpus = 1
workspace_mib = {WORKSPACE_MIB}
max_open_files = {MAX_OPEN_FILES}

[limits]
output_cap_bytes = {OUTPUT_CAP_BYTES}

[pool]
size = 2
zygote = {"true" if os.environ.get("CORRAL_SECURITY_ZYGOTE") == "1" else "false"}

# Sessions may ask for a network within this (test_network.py); by default they have none.
[network]
sessions_may_connect = true
allow = ["host.corral.internal:9", "svc.test:9"]

[network.hosts]
"svc.test" = "127.0.0.1"
"""

RESULT_MARKER = "@@CORRAL-SECURITY-RESULT@@"

# Available to every probe: raw syscalls through ctypes and a one-line "try it" helper.
PRELUDE = r'''
import ctypes as _ctypes, errno as _errno, json as _json, os, sys
_libc = _ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = _ctypes.c_long

def syscall(nr, *args):
    """Raw x86_64 syscall: (return value, errno name or None)."""
    converted = []
    for arg in args:
        if isinstance(arg, bytes):
            converted.append(_ctypes.c_char_p(arg))
        elif isinstance(arg, int):
            converted.append(_ctypes.c_long(arg))
        else:
            converted.append(arg)
    _ctypes.set_errno(0)
    ret = _libc.syscall(_ctypes.c_long(nr), *converted)
    err = _ctypes.get_errno()
    return ret, (_errno.errorcode.get(err, str(err)) if ret == -1 else None)

def attempt(fn, *args, **kwargs):
    """'ok' when fn(*args) succeeds, else the errno name (or exception type)."""
    try:
        fn(*args, **kwargs)
        return "ok"
    except OSError as error:
        if error.errno:
            return _errno.errorcode.get(error.errno, str(error.errno))
        return type(error).__name__
    except Exception as error:
        return type(error).__name__

def write_file(path, data, mode="w"):
    """Writes data unbuffered, so a refused write raises here (not at a silent close)."""
    if isinstance(data, str):
        data = data.encode()
    with open(path, mode.replace("b", "") + "b", buffering=0) as handle:
        handle.write(data)

def read_text(path, limit=1 << 20):
    with open(path, "rb") as handle:
        return handle.read(limit).decode("utf-8", "replace")

result = {}
'''

RESULT_EPILOGUE = f"""
print({RESULT_MARKER!r} + _json.dumps(result, default=repr), flush=True)
"""


@dataclasses.dataclass
class Server:
    base_url: str
    port: int
    process: subprocess.Popen
    base_dir: Path
    data_dir: Path
    config_path: Path
    env_secret: str
    leak_path: Path
    leak_secret: str
    leak_fd: int
    pty_master: int
    pty_slave: int
    host_socket_path: Path
    host_socket: socket.socket
    public_socket_path: Path
    public_socket: socket.socket
    abstract_name: bytes
    abstract_socket: socket.socket
    log: list

    def url(self, path):
        return self.base_url + path

    def workspace_on_host(self, session_id):
        return self.data_dir / "workspaces" / session_id


@dataclasses.dataclass
class Bystander:
    id: str
    value: str
    secret: str


def _set_controlling_terminal():
    # Runs in the child after setsid(): stdin is the pty's slave; make it the controlling tty.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _mount_points_under(directory):
    points = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            mount_point = line.split()[1].replace("\\040", " ")
            if mount_point == str(directory) or mount_point.startswith(str(directory) + "/"):
                points.append(mount_point)
    return points


def _cgroup_dirs_of(server_pid):
    found = []
    for controller in ("memory", "pids", "cpu"):
        parent = Path("/sys/fs/cgroup") / controller / "corral"
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                if entry.name.startswith(f"{server_pid}-"):
                    found.append(entry)
    return found


@pytest.fixture(scope="session")
def server():
    base_dir = Path(tempfile.mkdtemp(prefix="corral-security-", dir="/var/tmp"))
    # Like a normal directory on the host: traversable by everyone, so only corral's hiding
    # stands between a session and the data directory.
    os.chmod(base_dir, 0o755)
    data_dir = base_dir / "data"
    config_path = base_dir / "config.toml"
    config_path.write_text(CONFIG)
    os.chmod(config_path, 0o644)

    env_secret = "corral-env-secret-" + secrets.token_hex(16)
    leak_secret = "corral-leaked-fd-secret-" + secrets.token_hex(16)
    leak_path = base_dir / "leaked-secret.txt"
    leak_path.write_text(leak_secret + "\n")
    os.chmod(leak_path, 0o600)
    leak_fd = os.open(leak_path, os.O_RDONLY)

    # Host-side listeners no session may reach.
    host_socket_path = base_dir / "host.sock"
    host_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host_socket.bind(str(host_socket_path))
    os.chmod(host_socket_path, 0o600)
    host_socket.listen(8)
    host_socket.setblocking(False)
    # Like a service's socket that any local user may use (0777), outside /run and /tmp.
    public_socket_path = base_dir / "public.sock"
    public_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    public_socket.bind(str(public_socket_path))
    os.chmod(public_socket_path, 0o777)
    public_socket.listen(8)
    public_socket.setblocking(False)
    abstract_name = ("\0corral-security-" + secrets.token_hex(8)).encode()
    abstract_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_socket.bind(abstract_name)
    abstract_socket.listen(8)
    abstract_socket.setblocking(False)

    pty_master, pty_slave = os.openpty()
    os.set_blocking(pty_master, False)
    os.set_blocking(pty_slave, False)

    env = dict(os.environ)
    env["CORRAL_TEST_SECRET"] = env_secret
    env.pop("CORRAL_LOG", None)
    process = subprocess.Popen(
        [
            BINARY, "serve",
            "--bind", "127.0.0.1:0",
            "--data-dir", str(data_dir),
            "--python", PYTHON,
            "--config", str(config_path),
        ],
        stdin=pty_slave,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_set_controlling_terminal,
        pass_fds=(leak_fd,),
    )
    log = []
    found = threading.Event()
    address = {}

    def read_log():
        for line in process.stderr:
            log.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found.is_set():
                address["url"] = match.group(1)
                found.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not found.wait(START_DEADLINE_SECONDS):
            raise RuntimeError("corral did not start:\n" + "".join(log))
        base_url = address["url"]
        port = int(base_url.rsplit(":", 1)[1].strip("/"))
        yield Server(
            base_url=base_url,
            port=port,
            process=process,
            base_dir=base_dir,
            data_dir=data_dir,
            config_path=config_path,
            env_secret=env_secret,
            leak_path=leak_path,
            leak_secret=leak_secret,
            leak_fd=leak_fd,
            pty_master=pty_master,
            pty_slave=pty_slave,
            host_socket_path=host_socket_path,
            host_socket=host_socket,
            public_socket_path=public_socket_path,
            public_socket=public_socket,
            abstract_name=abstract_name,
            abstract_socket=abstract_socket,
            log=log,
        )
    finally:
        _stop_server(process, data_dir)
        for descriptor in (leak_fd, pty_master, pty_slave):
            with contextlib.suppress(OSError):
                os.close(descriptor)
        host_socket.close()
        public_socket.close()
        abstract_socket.close()
        for mount_point in sorted(_mount_points_under(base_dir), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount_point], check=False, timeout=30,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", "--one-file-system", str(base_dir)], check=False, timeout=60)


def _stop_server(process, data_dir):
    """SIGTERM (graceful: workers stopped, workspaces released), then SIGKILL; then kill by pid
    whatever is left in the server's session cgroups and remove those cgroups."""
    pid = process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        directories = _cgroup_dirs_of(pid)
        if not directories:
            break
        for directory in directories:
            with contextlib.suppress(OSError):
                for line in (directory / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(int(line), signal.SIGKILL)
            with contextlib.suppress(OSError):
                directory.rmdir()
        time.sleep(0.1)
    # Workspaces are links to tmpfs mounts under /run: unmount what a killed server left.
    workspaces = Path(data_dir) / "workspaces"
    if workspaces.is_dir():
        for link in workspaces.iterdir():
            if link.is_symlink():
                target = os.readlink(link)
                subprocess.run(["umount", "-l", target], check=False, timeout=30,
                               stderr=subprocess.DEVNULL)
                with contextlib.suppress(OSError):
                    os.rmdir(target)


# ---------------------------------------------------------------------------------------------
# HTTP helpers


def healthz(server):
    return requests.get(server.url("/healthz"), timeout=HTTP_TIMEOUT)


def create_session(server):
    response = requests.post(server.url("/v1/sessions"), json={}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def pool_view(server):
    response = requests.get(server.url("/v1/info"), timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["pool"]


def create_pool_born_session(server):
    """A session handed a warm pool worker (waits, bounded, until the pool holds one), so
    every attack runs in a pool-born session: the pool must isolate exactly as a fresh start."""
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while pool_view(server)["ready"] < 1:
        assert time.monotonic() < deadline, f"the warm pool never refilled: {pool_view(server)}"
        time.sleep(0.02)
    before = pool_view(server)["handed_over"]
    session_id = create_session(server)
    assert pool_view(server)["handed_over"] == before + 1, "the attacker's session was not pool-born"
    return session_id


def delete_session(server, session_id):
    with contextlib.suppress(requests.RequestException):
        requests.delete(server.url(f"/v1/sessions/{session_id}"), timeout=HTTP_TIMEOUT)


def session_view(server, session_id):
    response = requests.get(server.url(f"/v1/sessions/{session_id}"), timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def execute(server, session_id, code, timeout=30.0):
    """POST an execution; returns (HTTP status, JSON body or text)."""
    response = requests.post(
        server.url(f"/v1/sessions/{session_id}/executions"),
        json={"code": code, "timeout": timeout},
        timeout=timeout + HTTP_SLACK,
    )
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body


def describe(body):
    if not isinstance(body, dict):
        return repr(body)[:4000]
    keys = ("status", "stdout", "stderr", "error", "result", "truncated")
    return json.dumps({key: body.get(key) for key in keys}, default=repr)[:4000]


def run_ok(server, session_id, code, timeout=30.0):
    """Runs code that must finish with status ok; returns the execution."""
    status, body = execute(server, session_id, code, timeout)
    assert status == 200 and body.get("status") == "ok", f"HTTP {status}: {describe(body)}"
    return body


def parse_result(body):
    for line in reversed(body.get("stdout", "").splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise AssertionError(f"no probe result in the output: {describe(body)}")


def probe(server, session_id, code, timeout=30.0):
    """Runs PRELUDE + code (which fills the dict `result`) in the session; returns `result`."""
    body = run_ok(server, session_id, PRELUDE + "\n" + code + "\n" + RESULT_EPILOGUE, timeout)
    return parse_result(body)


def wait_until(predicate, deadline_seconds, interval=0.1):
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Sessions


BYSTANDER_SETUP = """\
survivor = {value!r}
for _path in ('/workspace/secret.txt', '/tmp/secret.txt', '/dev/shm/secret.txt'):
    with open(_path, 'w') as _handle:
        _handle.write({secret!r})
"""

BYSTANDER_CHECK = """\
(survivor, [open(_path).read() for _path in
            ('/workspace/secret.txt', '/tmp/secret.txt', '/dev/shm/secret.txt')])
"""


@pytest.fixture
def bystanders(server):
    """Two live sessions, each with a variable and a secret file in /workspace, /tmp, /dev/shm."""
    people = []
    try:
        for index in range(2):
            session_id = create_session(server)
            person = Bystander(
                id=session_id,
                value=f"bystander-{index}-{uuid.uuid4().hex}",
                secret=f"bystander-secret-{index}-{secrets.token_hex(16)}",
            )
            people.append(person)
            run_ok(server, session_id, BYSTANDER_SETUP.format(value=person.value, secret=person.secret))
            # The host path an attacker would aim at really is this session's workspace.
            on_host = server.workspace_on_host(session_id) / "secret.txt"
            assert on_host.read_text() == person.secret
        yield people
    finally:
        for person in people:
            delete_session(server, person.id)


@pytest.fixture
def attacker(server, bystanders):
    """The session the attack runs in (created after the bystanders, so they are live), handed
    a worker from the warm pool."""
    session_id = create_pool_born_session(server)
    try:
        yield session_id
    finally:
        delete_session(server, session_id)


def assert_unharmed(server, bystanders):
    assert server.process.poll() is None, "the server process died"
    response = healthz(server)
    assert response.status_code == 200, f"/healthz answered {response.status_code}"
    for person in bystanders:
        view = session_view(server, person.id)
        assert view["state"] in ("idle", "busy"), f"bystander {person.id} is {view}"
        body = run_ok(server, person.id, BYSTANDER_CHECK, timeout=30)
        expected = repr((person.value, [person.secret] * 3))
        assert body["result"]["text/plain"] == expected, f"bystander {person.id}: {describe(body)}"


@contextlib.contextmanager
def contained(server, bystanders):
    """Runs the attack and its containment checks, then always checks the bystanders."""
    try:
        yield
    finally:
        assert_unharmed(server, bystanders)


DENIED = {"EPERM", "EACCES", "EROFS", "ENOENT", "ENOSYS", "EINVAL", "ENXIO", "ENODEV",
          "PermissionError", "FileNotFoundError"}


def host_processes_with(marker):
    """Host pids whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
    return found
