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
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time

procs = globals().setdefault("procs", {})
contexts = globals().setdefault("contexts", {})
saved_env = globals().setdefault("saved_env", [])
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
