"""corral's Python zygote: forks sandboxed Python workers that share its pages.

Started by the server on the host (`python -S zygote.py DRIVER SANDBOX_PATH`) with the workers'
environment and a SOCK_SEQPACKET socket on fd 3. It compiles and loads the driver (without
running it) and imports the standard-library modules the driver uses, then serves one request
per packet: a JSON object and four descriptors (the worker's control socket, stdout and stderr
write ends, and the join socket of the session's init). For each it forks a joining child that

1. opens the session's `cgroup.procs` files (host paths, as the host's root),
2. enters the namespaces of the session's init (user first, then IPC, UTS, network, PID and
   mount) and that init's root directory, and takes the session's identity (root of the
   session's user namespace, which maps to the session's own host uid),
3. forks the worker (which is then in the session's PID namespace), moves it into the
   session's cgroups, and stays as its parent: it drops its capabilities and execs
   `corral sandbox-reap` (through a descriptor of the server's binary opened at start), which
   waits and, when the worker ends, writes `exit STATUS` on the join socket (init then ends
   with the same status). Being outside the session's PID namespace and cgroups, it holds up neither the
   namespace's teardown nor the cgroups' removal, and it outlives the zygote and the server.

The worker enters the session's cgroup namespace, tells init its pid (`pid N`), drops every
capability, sets `no_new_privs` and the session's rlimits, takes its descriptors onto 0-3,
closes everything else, takes the session's environment, re-seeds `random`, installs the
session's seccomp filters (compiled by the server), imports `site` (so no third-party code ever
runs outside the sandbox) and runs the driver, as a worker the session's init had exec'd would.
The answer to each request is a JSON object: `{"pid": HOST_PID}` or `{"error": TEXT}`.

Standard library only (ctypes for the system calls Python 3.11 lacks). Single-threaded: a
fork from a threaded process could not enter a user namespace.
"""

import ctypes
import json
import os
import signal
import socket
import sys

CONTROL_FD = 3
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# The user namespace first: the others belong to it, and entering it gives the capabilities
# the others need (an unprivileged server has no CAP_SYS_CHROOT of its own). The cgroup
# namespace is the worker's alone: entered once the worker is in the session's cgroups.
CLONE_NEWCGROUP = 0x02000000
NAMESPACES = (
    ("user", 0x10000000),
    ("ipc", 0x08000000),
    ("uts", 0x04000000),
    ("net", 0x40000000),
    ("pid", 0x20000000),
    ("mnt", 0x00020000),
)
SETUP_FAILED = 125

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))


def _prctl(option, arg2=0, arg3=0, what="prctl"):
    _check(libc.prctl(option, arg2, arg3, 0, 0), what)


# --------------------------------------------------------------------------- in the worker

def _drop_capabilities():
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability
                break
            _check(-1, "dropping capability %d from the bounding set" % capability)
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="clearing ambient capabilities")
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def _install_seccomp(programs):
    keep = []
    for text in programs:
        raw = bytes.fromhex(text)
        count = len(raw) // 8
        instructions = (_SockFilter * count).from_buffer_copy(raw)
        keep.append(instructions)
        program = _SockFprog(count, ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))
        _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(program),
               what="installing the seccomp filter")


def _become_worker(request, fds):
    """Runs in the worker (inside the session's namespaces, still privileged there)."""
    import random
    import resource

    control, stdout, stderr, join = fds
    os.setsid()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.set_wakeup_fd(-1)
    # Init forwards SIGINT and SIGTERM to this pid (of the session's PID namespace).
    os.write(join, ("pid %d\n" % os.getpid()).encode())
    null = os.open("/dev/null", os.O_RDWR)
    for source, target in ((null, 0), (stdout, 1), (stderr, 2), (control, CONTROL_FD)):
        if source != target:
            os.dup2(source, target, inheritable=True)
    os.closerange(CONTROL_FD + 1, 1 << 20)
    limits = request["rlimits"]
    for name, value in (("RLIMIT_NOFILE", limits["nofile"]), ("RLIMIT_NPROC", limits["nproc"]),
                        ("RLIMIT_FSIZE", limits["fsize"]), ("RLIMIT_CORE", 0)):
        value = resource.RLIM_INFINITY if value >= 1 << 63 else value
        resource.setrlimit(getattr(resource, name), (value, value))
    _drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1, what="no_new_privs")
    os.chdir(request["working_dir"])
    os.environ.clear()
    for key, value in request["env"]:
        os.environ[key] = value
    random.seed()
    _install_seccomp(request["seccomp"])
    # The interpreter's site-packages (and their .pth files) only inside the sandbox.
    import site
    site.main()
    sys.argv = [request["driver_path"]]
    DRIVER._main()


def _enter_session(request, fds, report):
    """Runs in the joining child, on the host: enters the session, forks the worker into
    its PID namespace and cgroups, then stays as the worker's reaper (its parent)."""
    init = int(request["init_pid"])
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    # Opened while this process is the host's root in the host's cgroup namespace: writing
    # through them later is judged by these credentials (the worker is moved from here).
    procs = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in request["cgroup_procs"]]
    namespaces = [(os.open("/proc/%d/ns/%s" % (init, name), os.O_RDONLY | os.O_CLOEXEC),
                   name, flag) for name, flag in NAMESPACES]
    cgroup_ns = os.open("/proc/%d/ns/cgroup" % init, os.O_RDONLY | os.O_CLOEXEC)
    root = os.open("/proc/%d/root" % init, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for fd, name, flag in namespaces:
        _check(libc.setns(fd, flag), "entering the session's %s namespace" % name)
        os.close(fd)
    # Exactly init's root (the session's assembled filesystem), whatever the namespace's top is.
    os.fchdir(root)
    os.chroot(".")
    os.chdir("/")
    os.close(root)
    if request["privileged"]:
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report)
            os.close(go_write)
            # Nothing runs until this process is in the session's cgroups.
            if os.read(go_read, 1) != b"g":
                os._exit(SETUP_FAILED)
            os.close(go_read)
            _check(libc.setns(cgroup_ns, CLONE_NEWCGROUP), "entering the session's cgroup namespace")
            os.close(cgroup_ns)
            _become_worker(request, fds)
        except BaseException as error:  # noqa: BLE001 (reported, then the worker ends)
            try:
                os.write(2, ("corral zygote worker: %s\n" % (error,)).encode())
            except OSError:
                pass
        os._exit(SETUP_FAILED)
    os.close(go_read)
    try:
        for fd in procs:
            os.write(fd, str(pid).encode())
            os.close(fd)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.write(go_write, b"g")
    os.close(go_write)
    # From here on the worker runs: whatever happens to the zygote (it dies with its server),
    # this process must stay its reaper, or its zombie would hold up the session's end.
    try:
        os.write(report, ("%d\n" % pid).encode())
        os.close(report)
    except OSError:
        pass
    _reap_worker(pid, fds[3])


def _reap_worker(pid, join):
    """The joining child's last duty: become the worker's reaper. It drops its capabilities
    and execs `corral sandbox-reap PID` (a small process instead of a copy of this one),
    which waits for the worker and tells init how it ended. Should the exec fail, it waits
    here."""
    os.dup2(join, 3, inheritable=True)
    os.closerange(0, 3)
    os.closerange(4, REAPER_FD)
    os.closerange(REAPER_FD + 1, 1 << 20)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        _drop_capabilities()
        _prctl(PR_SET_NO_NEW_PRIVS, 1, what="no_new_privs")
        os.execve(REAPER_FD, ["corral", "sandbox-reap", str(pid)], {})
    except OSError:
        pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            status = 0
            break
    try:
        os.write(3, ("exit %d\n" % status).encode())
    except OSError:
        pass
    os._exit(0)


# --------------------------------------------------------------------------- the zygote

def _serve(request, fds):
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            _enter_session(request, fds, write)
        except BaseException as error:  # noqa: BLE001
            try:
                os.write(write, ("!%s\n" % (error,)).encode())
            except OSError:
                pass
        os._exit(SETUP_FAILED)
    os.close(write)
    for fd in fds:
        os.close(fd)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = os.read(read, 4096)
        if not chunk:
            break
        answer += chunk
    os.close(read)
    text = answer.decode(errors="replace").strip()
    if not text or text.startswith("!"):
        return {"error": text[1:] or "the joining process ended without a word"}
    return {"pid": int(text)}


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    global DRIVER
    global REAPER_FD
    driver_file, sandbox_path, reaper = sys.argv[1], sys.argv[2], sys.argv[3]
    # Opened here, on the host: the reaper execs it from inside the session's mount namespace.
    REAPER_FD = os.open(reaper, os.O_RDONLY | os.O_CLOEXEC)
    with open(driver_file, encoding="utf-8") as file:
        source = file.read()
    module = type(sys)("__corral_driver__")
    module.__file__ = sandbox_path
    sys.modules[module.__name__] = module
    exec(compile(source, sandbox_path, "exec"), module.__dict__)
    DRIVER = module
    # What the driver imports after `ready` or on first use: shared by every worker.
    import asyncio  # noqa: F401
    import binascii  # noqa: F401
    import codeop  # noqa: F401
    import getpass  # noqa: F401
    import linecache  # noqa: F401
    import random  # noqa: F401
    import resource  # noqa: F401
    import tokenize  # noqa: F401
    import traceback  # noqa: F401
    module._completer_module()
    # Everything loaded so far stays untouched by the children's garbage collector, so its
    # pages stay shared.
    import gc
    gc.collect()
    gc.freeze()

    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, what="pdeathsig")
    if os.getppid() == 1:
        os._exit(0)  # the server is already gone
    server = socket.socket(fileno=CONTROL_FD)
    os.set_inheritable(CONTROL_FD, False)
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    import select
    poller = select.poll()
    poller.register(server.fileno(), select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_read:
                try:
                    os.read(wake_read, 4096)
                except BlockingIOError:
                    pass
                _reap()
                continue
            try:
                message, fds, _, _ = socket.recv_fds(server, 1 << 20, 4)
            except InterruptedError:
                continue
            if not message:
                return
            if len(fds) != 4:
                for fd_ in fds:
                    os.close(fd_)
                answer = {"error": "a request carries 4 descriptors, not %d" % len(fds)}
            else:
                try:
                    answer = _serve(json.loads(message), fds)
                except Exception as error:  # noqa: BLE001 (answered; the zygote goes on)
                    answer = {"error": "%s" % (error,)}
            server.send(json.dumps(answer).encode())
        _reap()


DRIVER = None
REAPER_FD = -1

if __name__ == "__main__":
    main()
