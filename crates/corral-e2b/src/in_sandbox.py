# The Python corral runs inside an E2B sandbox's session (as executions of that session) to
# carry out envd operations there: filesystem calls, commands started as background
# processes whose output is tailed from files, signals, environment variables and the
# namespaces of code contexts. It is executed into the module `_corral_e2b` (created on first
# use, kept in sys.modules) so nothing lands in the user's namespace; replies are shown with
# the driver's `display` as `application/json`. Standard library only.

import ast
import base64
import builtins
import grp
import json
import os
import pwd
import re
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

procs = globals().setdefault("procs", {})
contexts = globals().setdefault("contexts", {})
saved_env = globals().setdefault("saved_env", [])
# Contexts of other languages: context id -> _Foreign (a corral driver run in the sandbox).
foreign = globals().setdefault("foreign", {})
E2B_HOME = "/home/user"
READ_CHUNK = 65536
IDLE_SLEEP = 0.02


class _Reply:
    def __init__(self, value):
        self.value = value

    def _repr_json_(self):
        return self.value

    def __repr__(self):
        return "<corral e2b reply>"


def _reply(value):
    builtins.display(_Reply(value))


def _home():
    return os.environ.get("HOME") or os.getcwd()


def _path(path):
    if path == E2B_HOME or path.startswith(E2B_HOME + "/"):
        path = _home() + path[len(E2B_HOME):]
    elif not path.startswith("/"):
        path = os.path.join(_home(), path)
    return os.path.normpath(path)


def _name(lookup, ident):
    try:
        return lookup(ident)[0]
    except Exception:
        return str(ident)


def _entry(path):
    st = os.lstat(path)
    mode = st.st_mode
    target = os.readlink(path) if stat.S_ISLNK(mode) else None
    if stat.S_ISDIR(mode):
        kind = "directory"
    elif stat.S_ISREG(mode):
        kind = "file"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
    else:
        kind = "other"
    return {
        "name": os.path.basename(path) or path,
        "kind": kind,
        "path": path,
        "size": st.st_size,
        "mode": stat.S_IMODE(mode),
        "permissions": stat.filemode(mode),
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "modified": st.st_mtime,
        "symlink_target": target,
    }


def op_stat(args):
    _reply(_entry(_path(args["path"])))


def op_list(args):
    root = _path(args["path"])
    depth = max(1, int(args.get("depth") or 1))
    os.stat(root)
    if not os.path.isdir(root):
        raise NotADirectoryError("%s is not a directory" % root)
    found = []

    def walk(directory, level):
        for item in sorted(os.scandir(directory), key=lambda item: item.name):
            path = os.path.join(directory, item.name)
            found.append(_entry(path))
            if level < depth and item.is_dir(follow_symlinks=False):
                walk(path, level + 1)

    walk(root, 1)
    _reply(found)


def op_mkdir(args):
    path = _path(args["path"])
    if os.path.lexists(path):
        raise FileExistsError("%s already exists" % path)
    os.makedirs(path)
    _reply(_entry(path))


def op_move(args):
    source, destination = _path(args["source"]), _path(args["destination"])
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.rename(source, destination)
    _reply(_entry(destination))


def op_remove(args):
    path = _path(args["path"])
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    _reply({})


def _output_dir():
    directory = globals().get("output_dir")
    if directory is None or not os.path.isdir(directory):
        directory = tempfile.mkdtemp(prefix="corral-e2b-")
        globals()["output_dir"] = directory
    return directory


def op_spawn(args):
    directory = _output_dir()
    cwd = _path(args["cwd"]) if args.get("cwd") else _home()
    env = dict(os.environ)
    env.update(args.get("envs") or {})
    handle, out_path = tempfile.mkstemp(dir=directory, suffix=".out")
    os.close(handle)
    handle, err_path = tempfile.mkstemp(dir=directory, suffix=".err")
    os.close(handle)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            [args["cmd"]] + list(args.get("args") or []),
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if args.get("stdin") else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    procs[process.pid] = {
        "popen": process,
        "out": open(out_path, "rb", buffering=0),
        "err": open(err_path, "rb", buffering=0),
        "paths": [out_path, err_path],
        "config": {
            "cmd": args["cmd"],
            "args": list(args.get("args") or []),
            "envs": dict(args.get("envs") or {}),
            "cwd": cwd,
        },
        "tag": args.get("tag"),
    }
    _reply({"pid": process.pid})


def _pump(record):
    moved = False
    for source, fd in ((record["out"], 1), (record["err"], 2)):
        while True:
            chunk = source.read(READ_CHUNK)
            if not chunk:
                break
            moved = True
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    return moved


def _forget(pid):
    record = procs.pop(pid, None)
    if record is None:
        return
    for name in ("out", "err"):
        record[name].close()
    for path in record["paths"]:
        try:
            os.remove(path)
        except OSError:
            pass


def _record(pid):
    record = procs.get(pid)
    if record is None:
        raise ProcessLookupError("process %d not found" % pid)
    return record


def op_poll(args):
    pid = int(args["pid"])
    record = _record(pid)
    deadline = time.monotonic() + float(args.get("wait") or 0)
    while True:
        code = record["popen"].poll()
        moved = _pump(record)
        if code is not None:
            _pump(record)
            _forget(pid)
            _reply({"exit": code})
            return
        if time.monotonic() >= deadline:
            _reply({"exit": None})
            return
        if not moved:
            time.sleep(IDLE_SLEEP)


def op_signal(args):
    pid = int(args["pid"])
    record = _record(pid)
    if record["popen"].poll() is not None:
        raise ProcessLookupError("process %d has ended" % pid)
    os.killpg(pid, int(args["signal"]))
    _reply({})


def _stdin(pid):
    record = _record(pid)
    if record["popen"].poll() is not None:
        raise ProcessLookupError("process %d has ended" % pid)
    stdin = record["popen"].stdin
    if stdin is None or stdin.closed:
        raise BrokenPipeError("process %d has no open stdin (start it with stdin=True)" % pid)
    return stdin


def op_stdin(args):
    stdin = _stdin(int(args["pid"]))
    stdin.write(base64.b64decode(args["data"]))
    stdin.flush()
    _reply({})


def op_close_stdin(args):
    _stdin(int(args["pid"])).close()
    _reply({})


def op_processes(args):
    _reply([
        {"pid": pid, "config": record["config"], "tag": record["tag"]}
        for pid, record in sorted(procs.items())
        if record["popen"].poll() is None
    ])


def op_setenv(args):
    envs = dict(args["envs"])
    if args.get("save"):
        saved_env.append({key: os.environ.get(key) for key in envs})
    os.environ.update(envs)
    _reply({})


def op_restore_env(args):
    if saved_env:
        for key, value in saved_env.pop().items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _reply({})


def op_reset_context(args):
    contexts.pop(args["id"], None)
    driver = foreign.pop(args["id"], None)
    if driver is not None:
        driver.stop()
    _reply({})


def op(args):
    globals()["op_" + args["op"]](args)


def run_in_context(context, code, cwd):
    """Runs `code` in the namespace of `context` and returns the value of its last
    expression, so that the driver shows it as the cell's result."""
    namespace = contexts.get(context)
    if namespace is None:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        contexts[context] = namespace
    filename = "<context %s>" % context
    tree = ast.parse(code, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    previous = None
    if cwd:
        previous = os.getcwd()
        os.chdir(_path(cwd))
    try:
        exec(compile(tree, filename, "exec"), namespace)
        if last is not None:
            return eval(compile(last, filename, "eval"), namespace)
        return None
    finally:
        if previous is not None:
            os.chdir(previous)


# ------------------------------------------------------------------ contexts of other languages

SYNC_PREFIX = b"\0CORRAL-SYNC:"
# A marker or a fence (`<token>.<n>`) of any token.
MARKER = re.compile(rb"\0CORRAL-SYNC:[0-9a-f]*(?:\.[0-9]+)?\0")
FOREIGN_START_SECONDS = 30
FOREIGN_INTERRUPT_SECONDS = 5


class _Bundle:
    """A foreign result: its MIME bundle is shown as this execution's result."""

    def __init__(self, data):
        self.data = data

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data

    def __repr__(self):
        return str(self.data.get("text/plain", ""))


def _foreign_error(frame):
    """An exception named like the foreign error, whose traceback is the foreign one."""
    name = str(frame.get("ename") or "Error")
    kind = type(name if name.isidentifier() else "Error", (Exception,), {})
    error = kind(str(frame.get("evalue") or ""))
    error._corral_traceback = [str(line) for line in frame.get("traceback") or []]
    return error


class _Stream:
    """One of the foreign driver's output pipes, passed on to this execution's own stream
    with the driver's sync markers and fences removed."""

    def __init__(self, pipe, target):
        self.pipe = pipe
        self.target = target
        self.held = b""
        self.open = True

    def feed(self, chunk, marker):
        data = self.held + chunk
        found = marker in data
        data = MARKER.sub(b"", data)
        # Keep back what may be the start of a marker split across reads.
        cut = data.rfind(b"\0")
        if cut >= 0 and SYNC_PREFIX.startswith(data[cut:cut + len(SYNC_PREFIX)]) and not found:
            self.held, data = data[cut:], data[:cut]
        else:
            self.held = b""
        if data:
            self.target.write(data.decode("utf-8", "replace"))
            self.target.flush()
        return found


class _Foreign:
    """A corral driver (JavaScript or Bash) running in this sandbox as a child of the session's
    interpreter: frames on a socket at its fd 3, its output on two pipes."""

    def __init__(self, argv, cwd):
        ours, theirs = socket.socketpair()
        # The driver's end goes to its fd 3 through bash's redirection (dash takes only
        # one-digit fds); an end that is fd 3 already is moved first (it would be closed).
        fd = theirs.fileno() if theirs.fileno() != 3 else os.dup(theirs.fileno())
        command = ["/bin/bash", "-c", 'exec "$@" 3<&%d %d<&-' % (fd, fd), "bash"] + argv
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(fd,), cwd=cwd, start_new_session=True)
        finally:
            if fd != theirs.fileno():
                os.close(fd)
            theirs.close()
        self.socket = ours
        self.buffer = b""
        self.count = 0
        deadline = time.monotonic() + FOREIGN_START_SECONDS
        while True:
            frame = self._frame(deadline)
            if frame is None:
                self.stop()
                said = self.process.stderr.read().decode("utf-8", "replace").strip()
                raise RuntimeError("the %s driver did not start%s" % (
                    os.path.basename(argv[-1]), ": " + said[-2000:] if said else ""))
            if frame.get("type") == "ready":
                return

    def _frame(self, deadline):
        """The next frame, or None when the driver is gone or the deadline passed."""
        while True:
            if len(self.buffer) >= 4:
                (length,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + length:
                    payload, self.buffer = self.buffer[4:4 + length], self.buffer[4 + length:]
                    return json.loads(payload)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.socket.settimeout(left)
            try:
                chunk = self.socket.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def _send(self, message):
        payload = json.dumps(message).encode()
        self.socket.sendall(struct.pack(">I", len(payload)) + payload)

    def run(self, code):
        self.count += 1
        token = os.urandom(8).hex()
        marker = SYNC_PREFIX + token.encode() + b"\0"
        self._send({"type": "exec", "id": str(self.count), "code": code,
                    "execution_count": self.count, "sync_token": token})
        streams = {self.process.stdout.fileno(): _Stream(self.process.stdout, sys.stdout),
                   self.process.stderr.fileno(): _Stream(self.process.stderr, sys.stderr)}
        marked = set()
        done = False
        result = error = None
        interrupted = False
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ, None)
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ, fd)
        deadline = None
        try:
            while not (done and len(marked) == len(streams)):
                if deadline is not None and time.monotonic() > deadline:
                    self.stop()
                    break
                try:
                    ready = selector.select(0.1 if deadline else None)
                    for key, _ in ready:
                        if key.data is None:
                            chunk = self.socket.recv(65536)
                            if not chunk:
                                raise RuntimeError("the driver exited")
                            self.buffer += chunk
                            while len(self.buffer) >= 4:
                                (length,) = struct.unpack(">I", self.buffer[:4])
                                if len(self.buffer) < 4 + length:
                                    break
                                frame = json.loads(self.buffer[4:4 + length])
                                self.buffer = self.buffer[4 + length:]
                                kind = frame.get("type")
                                if kind == "result":
                                    result = frame.get("data") or {}
                                elif kind == "error":
                                    error = frame
                                elif kind == "display":
                                    builtins.display(_Bundle(frame.get("data") or {}))
                                elif kind == "done":
                                    done = True
                        else:
                            stream = streams[key.data]
                            chunk = os.read(key.data, 65536)
                            if not chunk:
                                selector.unregister(key.data)
                                marked.add(key.data)
                            elif stream.feed(chunk, marker):
                                marked.add(key.data)
                except KeyboardInterrupt:
                    # Stop the foreign cell too, wait for it to say so, then stop this one.
                    interrupted = True
                    deadline = time.monotonic() + FOREIGN_INTERRUPT_SECONDS
                    try:
                        os.kill(self.process.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
        except RuntimeError:
            self.stop()
            raise
        finally:
            selector.close()
        if interrupted:
            raise KeyboardInterrupt
        if error is not None:
            raise _foreign_error(error)
        if result:
            return _Bundle(result)
        return None

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self.socket.close()


def _driver_file(name, source):
    """The driver's source as a file in this sandbox's private temporary directory."""
    directory = globals().get("driver_directory")
    if directory is None or not os.path.isdir(directory):
        directory = tempfile.mkdtemp(prefix="corral-drivers-")
        globals()["driver_directory"] = directory
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        with open(path, "w") as file:
            file.write(source)
    return path


def run_foreign(context, argv, file, source, code, cwd):
    """Runs `code` in the foreign-language context `context` (its driver started on first
    use, again after it exited) and returns its result for the driver to show."""
    driver = foreign.get(context)
    if driver is not None and not driver.alive():
        driver.stop()
        driver = None
    if driver is None:
        driver = _Foreign(list(argv) + [_driver_file(file, source)], _path(cwd) if cwd else _home())
        foreign[context] = driver
    return driver.run(code)
