"""Processes: seeing, signalling and outliving others; what the session inherits from the server
(environment, descriptors, controlling terminal); the sandbox's init."""

import os
import secrets
import time

from sec_helpers import (
    BINARY,
    DENIED,
    contained,
    delete_session,
    describe,
    execute,
    host_processes_with,
    probe,
    run_ok,
    session_view,
    wait_until,
)


def test_list_processes(server, bystanders, attacker):
    """/proc shows only the session's own PID namespace: the sandbox init (1) and the worker,
    not the server, the bystanders' workers or any host process."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
pids = sorted(int(name) for name in os.listdir('/proc') if name.isdigit())
result['pids'] = pids
result['me'] = os.getpid()
result['cmdlines'] = {}
for pid in pids:
    try:
        result['cmdlines'][pid] = read_text('/proc/%d/cmdline' % pid).split('\\0')[:2]
    except OSError as error:
        result['cmdlines'][pid] = repr(error)
""")
        assert result["pids"] == [1, result["me"]], result
        assert result["me"] == 2, result
        for pid, cmdline in result["cmdlines"].items():
            assert "serve" not in cmdline, result


def test_kill_every_pid(server, bystanders, attacker):
    """os.kill(pid, SIGKILL) for every pid 2..70000 (including the server's host pid): only
    the session's own processes could be hit, the server and bystanders survive."""
    server_pid = server.process.pid
    assert server_pid < 70000
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import signal
me = os.getpid()
hit = []
for pid in range(2, 70000):
    if pid == me:
        continue
    try:
        os.kill(pid, signal.SIGKILL)
        hit.append(pid)
    except OSError:
        pass
result['hit'] = hit
result['server_pid_signal'] = attempt(os.kill, {server_pid}, 0)
""", timeout=60)
        assert result["hit"] == [], result
        assert result["server_pid_signal"] == "ESRCH", result
        assert server.process.poll() is None


def test_kill_minus_one(server, bystanders, attacker):
    """kill(-1, SIGKILL) from the worker and `kill -9 -1` from a shell: at most the session's
    own processes die (the shell's kill takes the worker with it, which is the session's own
    loss); the server and the bystanders are untouched."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import signal
result['direct'] = attempt(os.kill, -1, signal.SIGKILL)
""")
        # Nothing else lives in the namespace (init is immune), so the worker is still here.
        assert result["direct"] in ("ok", "ESRCH"), result
        status, body = execute(server, attacker, "import os\nos.system('kill -9 -1')\nprint('alive')")
        assert status == 200, describe(body)
        if body["status"] == "ok":
            assert "alive" in body["stdout"], describe(body)
        else:
            assert body["status"] == "killed", describe(body)
            view = wait_until(lambda: session_view(server, attacker)["state"] == "dead", 20)
            assert view, session_view(server, attacker)
        assert server.process.poll() is None


def test_kill_the_sandbox_init(server, bystanders, attacker):
    """SIGKILL and SIGSTOP to PID 1 (the sandbox init) from inside: ignored, the session keeps
    working (dying alone would be acceptable too)."""
    with contained(server, bystanders):
        status, body = execute(server, attacker, """
import os, signal
os.kill(1, signal.SIGKILL)
os.kill(1, signal.SIGSTOP)
print('sent')
""")
        assert status == 200, describe(body)
        assert body["status"] in ("ok", "killed"), describe(body)
        if body["status"] == "ok":
            run_ok(server, attacker, "1 + 1")


def test_detached_daemon_dies_with_the_session(server, bystanders, attacker):
    """A `sleep` started with start_new_session=True and another double-forked with setsid
    outlive the execution, but not the session: after DELETE no such process remains on the
    host."""
    marker_a = f"12345.{secrets.randbelow(10**6):06d}"
    marker_b = f"12346.{secrets.randbelow(10**6):06d}"
    with contained(server, bystanders):
        run_ok(server, attacker, f"""
import os, subprocess
subprocess.Popen(['sleep', {marker_a!r}], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open('/dev/null', os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execvp('sleep', ['sleep', {marker_b!r}])
    os._exit(0)
os.wait()
""")
        assert wait_until(lambda: host_processes_with(marker_a) and host_processes_with(marker_b), 10), \
            "the daemons did not start"
        delete_session(server, attacker)
        gone = wait_until(lambda: not host_processes_with(marker_a) and not host_processes_with(marker_b), 20)
        assert gone, (f"daemons outlived their session: {host_processes_with(marker_a)} "
                      f"{host_processes_with(marker_b)}")


def test_proc_of_the_sandbox_init(server, bystanders, attacker):
    """/proc/1 is the sandbox init (corral sandbox-init), not the host's init; its root, cwd,
    descriptors, memory and environment are out of reach."""
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
result['cmdline'] = read_text('/proc/1/cmdline').split('\\0')[:2]
result['comm'] = read_text('/proc/1/comm').strip()
for name in ('root', 'cwd'):
    result[name] = attempt(os.listdir, '/proc/1/' + name)
    if result[name] == 'ok':
        result[name + '_same_as_own_root'] = (
            os.stat('/proc/1/' + name + '/').st_ino == os.stat('/').st_ino)
result['fd'] = attempt(os.listdir, '/proc/1/fd')
result['fd_follow'] = {{}}
for fd in range(3, 16):
    outcome = attempt(os.stat, '/proc/1/fd/%d' % fd)
    if outcome != 'ENOENT':
        result['fd_follow'][fd] = outcome
result['mem'] = attempt(read_text, '/proc/1/mem')
result['environ'] = attempt(read_text, '/proc/1/environ')
result['exe'] = attempt(lambda: open('/proc/1/exe', 'rb').read(4))
""")
        assert result["cmdline"] == [BINARY, "sandbox-init"], result
        for name in ("root", "cwd"):
            assert result[name] in DENIED or result.get(name + "_same_as_own_root"), result
        assert result["fd"] in DENIED, result
        assert all(outcome in DENIED for outcome in result["fd_follow"].values()), result
        assert result["mem"] in DENIED and result["environ"] in DENIED, result


def test_server_environment_is_not_visible(server, bystanders, attacker):
    """The server runs with CORRAL_TEST_SECRET (and the test runner's environment); none of it
    is in the session's environment, a child's, or any readable /proc/*/environ or cmdline."""
    secret = server.env_secret
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import subprocess
secret = {secret!r}
result['env_keys'] = sorted(os.environ)
result['in_environ'] = any(secret in value for value in os.environ.values())
child = subprocess.run(['env'], capture_output=True, text=True, timeout=30).stdout
result['in_child'] = secret in child
result['child_corral_keys'] = [line for line in child.splitlines() if line.startswith('CORRAL')]
found = []
for pid in [name for name in os.listdir('/proc') if name.isdigit()] + ['self', 'thread-self']:
    for name in ('environ', 'cmdline'):
        try:
            with open('/proc/%s/%s' % (pid, name), 'rb') as handle:
                if secret.encode() in handle.read():
                    found.append('/proc/%s/%s' % (pid, name))
        except OSError:
            pass
result['found'] = found
""")
        assert not any(key.startswith("CORRAL") for key in result["env_keys"]), result
        assert not any(key.startswith("PYTEST") for key in result["env_keys"]), result
        assert result["in_environ"] is False and result["in_child"] is False, result
        assert result["child_corral_keys"] == [], result
        assert result["found"] == [], result


def test_inherited_descriptors_reach_no_host_resources(server, bystanders, attacker):
    """No descriptor in the worker (nor in a child started with close_fds=False) is a TCP/UDP
    socket, the store (*.sqlite3), anything under the data directory, or a file the server
    inherited (the fixture passes the server an open, root-only file holding a secret)."""
    leak_secret = server.leak_secret
    data_dir = str(server.data_dir)
    check = f"""
import os, socket, stat
def inspect():
    bad = []
    for name in os.listdir('/proc/self/fd'):
        fd = int(name)
        try:
            target = os.readlink('/proc/self/fd/%d' % fd)
            info = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISSOCK(info.st_mode):
            try:
                sock = socket.socket(fileno=os.dup(fd))
                family = sock.family
                sock.close()
            except OSError:
                family = None
            if family in (socket.AF_INET, socket.AF_INET6):
                bad.append((fd, target, 'inet socket'))
        if '.sqlite3' in target or target.startswith({data_dir!r}) or 'leaked-secret' in target:
            bad.append((fd, target, 'host file'))
        if stat.S_ISREG(info.st_mode):
            try:
                if {leak_secret!r}.encode() in os.pread(fd, 1 << 16, 0):
                    bad.append((fd, target, 'leaked secret readable'))
            except OSError:
                pass
    return bad
"""
    with contained(server, bystanders):
        result = probe(server, attacker, check + f"""
import subprocess
result['worker'] = inspect()
child = subprocess.run([sys.executable, '-c', {check!r} + '\\nprint(repr(inspect()))'],
                       close_fds=False, capture_output=True, text=True, timeout=30)
result['child'] = child.stdout.strip() or child.stderr
""")
        assert result["worker"] == [], f"worker holds host resources: {result['worker']}"
        assert result["child"] == "[]", f"a child inherits host resources: {result['child']}"


def test_fresh_subprocess_inherits_only_stdio(server, bystanders, attacker):
    """A child started with close_fds=False (like os.system's shell) holds only 0, 1 and 2
    (plus the descriptor it lists /proc/self/fd with): no server sockets, database handles,
    control socket or stray pipes."""
    with contained(server, bystanders):
        result = probe(server, attacker, """
import subprocess
code = ("import os\\n"
        "names = os.listdir('/proc/self/fd')\\n"
        "out = {}\\n"
        "for name in names:\\n"
        "    try:\\n"
        "        out[name] = os.readlink('/proc/self/fd/' + name)\\n"
        "    except OSError:\\n"
        "        pass\\n"
        "print(repr(out))")
child = subprocess.run([sys.executable, '-c', code], close_fds=False,
                       capture_output=True, text=True, timeout=30)
import ast
fds = ast.literal_eval(child.stdout.strip())
result['extra'] = {fd: target for fd, target in fds.items()
                   if fd not in ('0', '1', '2') and not target.startswith('/proc/')}
result['all'] = fds
""")
        assert result["extra"] == {}, f"a fresh child inherits more than stdio: {result['all']}"


def test_controlling_terminal_injection(server, bystanders, attacker):
    """The server runs with a terminal as its controlling tty (as when an operator starts it in
    a shell). A session must not reach it: opening /dev/tty fails, TIOCSTI cannot push a
    command into the operator's shell, and nothing is written to the terminal."""
    payload = f"echo corral-pwned-{secrets.token_hex(4)}\n"
    for descriptor in (server.pty_master, server.pty_slave):
        for _ in range(1000):  # drain anything earlier tests left
            try:
                if not os.read(descriptor, 65536):
                    break
            except OSError:
                break
    with contained(server, bystanders):
        result = probe(server, attacker, f"""
import fcntl, termios
result['open'] = attempt(os.open, '/dev/tty', os.O_RDWR | os.O_NOCTTY)
result['tiocsti'] = None
result['write'] = None
try:
    tty = os.open('/dev/tty', os.O_RDWR | os.O_NOCTTY)
except OSError:
    tty = None
if tty is not None:
    try:
        for byte in {payload.encode()!r}:
            fcntl.ioctl(tty, termios.TIOCSTI, bytes([byte]))
        result['tiocsti'] = 'ok'
    except OSError as error:
        result['tiocsti'] = _errno.errorcode.get(error.errno)
    result['write'] = attempt(os.write, tty, b'corral-wrote-to-your-terminal\\n')
""")
        time.sleep(0.2)
        injected = b""
        written = b""
        for descriptor, sink in ((server.pty_slave, "injected"), (server.pty_master, "written")):
            try:
                data = os.read(descriptor, 65536)
            except OSError:
                data = b""
            if sink == "injected":
                injected = data
            else:
                written = data
        assert payload.strip().encode() not in injected, (
            f"TIOCSTI pushed {injected!r} into the server's terminal input ({result})")
        assert b"corral-wrote" not in written, f"the session wrote to the server's terminal ({result})"
        assert result["open"] in ("ENXIO", "EACCES", "EPERM", "ENOENT", "EIO"), result
