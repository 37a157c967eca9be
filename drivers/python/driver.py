"""corral's Python worker driver (protocol 1; see docs/protocol.md).

Started as `python3 driver.py` with fd 0 on /dev/null, fds 1 and 2 on pipes read by the server
and a Unix stream socket on fd 3 carrying length-prefixed JSON frames both ways.

Standard library only. Start-up imports are limited to modules that are built in or already
loaded, so `ready` goes out quickly; the rest is imported right after `ready` is sent (before
the workspace is put on `sys.path`, so a user's `json.py` cannot shadow the driver's) or, for
asyncio, on first use.

Cells run in a fresh `__main__` module; nothing defined here is visible in it except the
`display` builtin.
"""

import sys
import os
import io
import builtins
import _ast
import _signal
import _socket
import _thread

_CodeType = type(compile("", "<driver>", "exec"))

PROTOCOL_VERSION = 1
CONTROL_FD = 3
MAX_FRAME = 64 * 1024 * 1024
CO_COROUTINE = 0x80
FUTURE_FLAGS = 0x1FE0000  # CO_FUTURE_DIVISION .. CO_FUTURE_ANNOTATIONS
SYNC_PREFIX = b"\x00CORRAL-SYNC:"
CELL_PREFIX = "<cell "

# Attribute-style repr methods, in IPython's order, with the MIME type each produces.
REPR_METHODS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_json_", "application/json"),
    ("_repr_latex_", "text/latex"),
)


class _State:
    """Everything the driver keeps between frames."""

    __slots__ = (
        "sock", "send_lock", "main_ident", "ns", "user_module", "saved_fds", "fd_ids",
        "streams", "graveyard", "in_cell", "sending", "pending_interrupt", "current_id",
        "history", "future_flags", "loop", "pid", "frame_started", "early_interrupt",
        "sync_token", "fences", "stdin_mode", "original_input", "original_getpass",
        "store_history", "deferred", "compiled",
    )


S = _State()

# Filled in after `ready` (see _load_modules).
json = None
traceback = None
linecache = None
binascii = None


# --------------------------------------------------------------------------- signals

def _on_sigint(signum, frame):
    """SIGINT: KeyboardInterrupt in a running cell, ignored otherwise.

    While the main thread is writing a frame the interrupt is deferred until the frame is
    complete, so an interrupt never tears a frame on the control socket.
    """
    if S.in_cell:
        if S.sending:
            S.pending_interrupt = True
        else:
            raise KeyboardInterrupt
    elif S.frame_started or _frame_waiting():
        # The server interrupts only while it has an exec outstanding: a frame being read or
        # still in the socket is that exec, so the interrupt is for the cell about to start.
        S.early_interrupt = True


def _frame_waiting():
    """Whether a frame (or the rest of one) is waiting unread on the control socket."""
    sock = getattr(S, "sock", None)
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT))
    except OSError:
        return False


def _install_sigint():
    try:
        if _signal.getsignal(_signal.SIGINT) is not _on_sigint:
            _signal.signal(_signal.SIGINT, _on_sigint)
    except Exception:
        pass


# --------------------------------------------------------------------------- frames

def _encode(obj):
    return json.dumps(obj, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8", "replace")


def _shrink(obj, size):
    """A stand-in for a frame that would exceed the protocol's size limit."""
    note = "<output too large for one frame: %d bytes>" % size
    obj = dict(obj)
    if "data" in obj:
        obj["data"] = {"text/plain": note}
        obj["metadata"] = {}
    if "traceback" in obj:
        obj["traceback"] = [note]
        obj["evalue"] = str(obj.get("evalue", ""))[:10000]
    if "matches" in obj:
        obj["matches"] = []
    return obj


FENCED_FRAMES = ("display", "result", "error", "clear_output", "input_request")


def _send(obj):
    """Sends one frame. Thread-safe; a broken socket means the server is gone: exit.

    Rich output of a cell is fenced: what the cell printed so far is flushed and a fence is
    written to stdout and stderr first, so the server shows the output in the order it
    happened although it arrives on three channels. A deferred result or error (see
    _defer) goes out first, fenced as it would have been.
    """
    if S.deferred is not None and _thread.get_ident() == S.main_ident:
        deferred, S.deferred = S.deferred, None
        _send(deferred)
    if obj.get("type") in FENCED_FRAMES and S.current_id is not None and S.sync_token:
        fence = _write_fence()
        if fence is not None:
            obj = dict(obj, fence=fence)
    _send_bytes(_frame_bytes(obj))


def _defer(obj):
    """Holds back the cell's result or error frame: if nothing else is sent before the cell
    ends, it follows the sync markers in the same write as `done` (see _serve_exec), which
    saves writing a fence and a separate frame."""
    if S.deferred is not None:
        _send(S.deferred)  # sends it, then clears S.deferred
    S.deferred = obj


def _frame_bytes(obj):
    payload = _encode(obj)
    if len(payload) > MAX_FRAME:
        payload = _encode(_shrink(obj, len(payload)))
    return len(payload).to_bytes(4, "big") + payload


def _send_bytes(frame):
    if os.getpid() != S.pid:
        return  # a process forked by a cell must not write into the driver's socket
    main = _thread.get_ident() == S.main_ident
    if main:
        S.sending += 1
    try:
        with S.send_lock:
            S.sock.sendall(frame)
    except OSError:
        _exit(0)
    finally:
        if main:
            S.sending -= 1
    if main and S.pending_interrupt and S.in_cell and not S.sending:
        S.pending_interrupt = False
        raise KeyboardInterrupt


def _recv_exact(n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        try:
            k = S.sock.recv_into(view[got:])
        except InterruptedError:
            continue
        except OSError:
            return None
        if not k:
            return None
        got += k
    return buf


def _read_message():
    """The next frame as a dict; None at end of file."""
    while True:
        header = _recv_exact(4)
        if header is None:
            return None
        S.frame_started = True
        n = int.from_bytes(header, "big")
        if n > MAX_FRAME:
            _note("frame of %d bytes exceeds the protocol limit" % n)
            _exit(2)
        body = _recv_exact(n)
        if body is None:
            return None
        try:
            msg = json.loads(body)
        except ValueError as e:
            _note("undecodable frame ignored: %s" % e)
            continue
        if isinstance(msg, dict):
            return msg
        _note("frame that is not an object ignored")


def _note(text):
    """A driver diagnostic on the original stderr."""
    try:
        _write_all(S.saved_fds[2], ("corral driver: %s\n" % text).encode("utf-8", "replace"))
    except Exception:
        pass


def _exit(status):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(status)


# --------------------------------------------------------------------------- streams

def _make_stream(fd):
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                            errors="backslashreplace", line_buffering=True)


def _fd_identity(fd):
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _restore_fd(fd):
    """Puts the original pipe back on `fd` if a cell closed or replaced it. True if it did."""
    try:
        if _fd_identity(fd) == S.fd_ids[fd]:
            return False
    except OSError:
        pass
    try:
        os.dup2(S.saved_fds[fd], fd)
    except OSError:
        pass
    return True


def _restore_io():
    """Restores fds 1 and 2 and sys.stdout/sys.stderr (and the __stdout__ twins)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        replaced = _restore_fd(fd)
        ours = S.streams[fd]
        if replaced or ours.closed:
            # The old wrapper may hold output it can no longer write; keep it alive so its
            # finaliser never complains on stderr.
            S.graveyard.append(ours)
            ours = S.streams[fd] = _make_stream(fd)
        if getattr(sys, name, None) is not ours:
            setattr(sys, name, ours)
        if getattr(sys, "__%s__" % name, None) is not ours:
            setattr(sys, "__%s__" % name, ours)


def _flush_streams():
    seen = []
    for stream in (sys.stdout, sys.stderr, S.streams[1], S.streams[2]):
        if stream is None or any(stream is s for s in seen):
            continue
        seen.append(stream)
        try:
            stream.flush()
        except Exception:
            pass


def _write_all(fd, data):
    view = memoryview(data)
    waited = 0
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            # A cell made the pipe non-blocking; wait for room (bounded).
            if waited > 3000:
                raise
            waited += 1
            _sleep(0.001)
            continue
        view = view[n:]


def _sleep(seconds):
    import time
    time.sleep(seconds)


def _write_fence():
    """Flushes the cell's streams and writes the next fence to fds 1 and 2; its number, or
    None if it could not be written to both."""
    _flush_streams()
    with S.send_lock:
        S.fences += 1
        fence = S.fences
    marker = SYNC_PREFIX + S.sync_token.encode("utf-8", "replace") + (".%d\x00" % fence).encode()
    for fd in (1, 2):
        try:
            _write_all(fd, marker)
        except OSError:
            return None
    return fence


def _write_markers(token):
    """Writes the sync marker to fds 1 and 2 (or the saved originals); True if both got it."""
    marker = SYNC_PREFIX + token.encode("utf-8", "replace") + b"\x00"
    written = 0
    for fd in (1, 2):
        for target in (fd, S.saved_fds[fd]):
            try:
                _write_all(target, marker)
                written += 1
                break
            except OSError:
                continue
    return written == 2


# --------------------------------------------------------------------------- MIME bundles

def _safe_repr(obj):
    try:
        text = repr(obj)
        if isinstance(text, str):
            return text
    except Exception:
        pass
    try:
        return "<unrepresentable %s object>" % type(obj).__name__
    except Exception:
        return "<unrepresentable object>"


def _jsonable(value):
    try:
        json.dumps(value, allow_nan=False)
        return True
    except Exception:
        return False


def _b64(data):
    return binascii.b2a_base64(bytes(data), newline=False).decode("ascii")


def _normalize(mime, value):
    """A bundle value in wire form, or None when it cannot be sent."""
    if value is None:
        return None
    is_json = mime == "application/json" or mime.endswith("+json")
    if isinstance(value, (bytes, bytearray, memoryview)):
        if mime.startswith("image/") and mime != "image/svg+xml":
            return _b64(value)
        if is_json:
            return None
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return _b64(value)
    if mime.startswith("text/") or mime == "image/svg+xml":
        return value if isinstance(value, str) else None
    return value if _jsonable(value) else None


def _get_method(obj, name):
    """obj.name if it is a real callable (not a __getattr__ catch-all), else None."""
    try:
        if isinstance(obj, type):
            return None
        if getattr(obj, "_ipython_canary_method_should_not_exist_", None) is not None:
            return None
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def _is_figure(obj):
    try:
        module = getattr(type(obj), "__module__", None) or ""
        return (isinstance(module, str) and module.startswith("matplotlib")
                and hasattr(obj, "savefig") and hasattr(obj, "canvas"))
    except Exception:
        return False


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return _b64(buf.getvalue())


def _split_md(result):
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        return result[0], result[1]
    return result, None


def _bundle(obj):
    """(data, metadata) for obj: text/plain always, richer types when obj offers them."""
    data = {}
    metadata = {}

    def add_metadata(mime, md):
        if isinstance(md, dict) and md and _jsonable(md):
            if mime is None:
                metadata.update((k, v) for k, v in md.items() if isinstance(k, str))
            else:
                metadata[mime] = md

    if _is_figure(obj):
        try:
            data["image/png"] = _figure_png(obj)
        except Exception:
            pass

    method = _get_method(obj, "_repr_mimebundle_")
    if method is not None:
        try:
            result, md = _split_md(method(include=None, exclude=None))
            if isinstance(result, dict):
                for mime, value in result.items():
                    if isinstance(mime, str) and mime not in data:
                        value = _normalize(mime, value)
                        if value is not None:
                            data[mime] = value
                add_metadata(None, md)
        except Exception:
            pass

    for name, mime in REPR_METHODS:
        if mime in data:
            continue
        method = _get_method(obj, name)
        if method is None:
            continue
        try:
            result, md = _split_md(method())
            value = _normalize(mime, result)
            if value is not None:
                data[mime] = value
                add_metadata(mime, md)
        except Exception:
            pass

    if not isinstance(data.get("text/plain"), str):
        data["text/plain"] = _safe_repr(obj)
    return data, metadata


def _raw_bundle(obj):
    if not isinstance(obj, dict):
        return _bundle(obj)
    data = {}
    for mime, value in obj.items():
        if isinstance(mime, str):
            value = _normalize(mime, value)
            if value is not None:
                data[mime] = value
    if not isinstance(data.get("text/plain"), str):
        data["text/plain"] = "<display data: %s>" % ", ".join(sorted(data)) if data else ""
    return data, {}


class DisplayHandle:
    """What `display(obj, display_id=...)` returns: updates that output in place."""

    def __init__(self, display_id):
        self.display_id = display_id

    def __repr__(self):
        return "<DisplayHandle display_id=%s>" % self.display_id

    def display(self, obj, **kwargs):
        kwargs.pop("display_id", None)
        display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj, **kwargs):
        kwargs.pop("display_id", None)
        kwargs.pop("update", None)
        display(obj, display_id=self.display_id, update=True, **kwargs)


def _new_display_id():
    return binascii.hexlify(os.urandom(16)).decode("ascii")


def display(*objs, raw=False, metadata=None, display_id=None, update=False, **kwargs):
    """Shows each object as rich output of the running cell (IPython's `display`).

    With `display_id` (a string, or True for a new one) the output can later be replaced
    with `update=True` (or `update_display`); a handle for that is returned.
    """
    if display_id is True:
        display_id = _new_display_id()
    if display_id is not None:
        display_id = str(display_id)
    elif update:
        raise TypeError("display_id required for update_display")
    exec_id = S.current_id
    if exec_id is None:
        return DisplayHandle(display_id) if display_id is not None else None
    _flush_streams()
    for obj in objs:
        try:
            data, md = _raw_bundle(obj) if raw else _bundle(obj)
            if isinstance(metadata, dict) and _jsonable(metadata):
                md.update((k, v) for k, v in metadata.items() if isinstance(k, str))
            frame = {"type": "display", "id": exec_id, "data": data, "metadata": md}
            if display_id is not None:
                frame["display_id"] = display_id
            if update:
                frame["update"] = True
        except Exception:
            continue
        _send(frame)
    return DisplayHandle(display_id) if display_id is not None else None


def update_display(obj, display_id, **kwargs):
    """Replaces the output shown with `display_id` (IPython's `update_display`)."""
    kwargs.pop("update", None)
    display(obj, display_id=display_id, update=True, **kwargs)


def clear_output(wait=False):
    """Clears the cell's output so far; with `wait`, once new output arrives."""
    if S.current_id is None:
        return
    _send({"type": "clear_output", "id": S.current_id, "wait": bool(wait)})


# --------------------------------------------------------------------------- standard input

class StdinNotImplementedError(NotImplementedError):
    """Raised by input() and getpass() when the client cannot answer input requests."""


def _read_stdin(prompt, password):
    """input() / getpass() in a cell, by the exec's stdin mode."""
    mode = S.stdin_mode
    if mode == "refused" or S.current_id is None:
        what = "getpass" if password else "raw_input"
        raise StdinNotImplementedError(
            "%s was called, but this frontend does not support input requests." % what)
    _send({"type": "input_request", "id": S.current_id, "prompt": str(prompt),
           "password": bool(password)})
    while True:
        # Wait without consuming anything, so an interrupt here tears no frame.
        try:
            peeked = S.sock.recv(1, _socket.MSG_PEEK)
        except InterruptedError:
            continue
        except OSError:
            _exit(0)
        if not peeked:
            _exit(0)
        # The whole frame is read with interrupts deferred (see _send_bytes).
        S.sending += 1
        try:
            msg = _read_message()
        finally:
            S.sending -= 1
            S.frame_started = False
        if msg is None:
            _exit(0)
        if S.pending_interrupt and S.in_cell:
            S.pending_interrupt = False
            raise KeyboardInterrupt
        kind = msg.get("type")
        if kind == "input_reply" and msg.get("id") == S.current_id:
            value = msg.get("value")
            return value if isinstance(value, str) else ""
        if kind == "shutdown":
            _exit(0)
        _note("frame %r while waiting for input ignored" % (kind,))


def _input(prompt=""):
    if S.stdin_mode == "empty":
        return S.original_input(prompt)
    _flush_streams()
    return _read_stdin(prompt, False)


def _getpass(prompt="Password: ", stream=None):
    if S.stdin_mode == "empty":
        return S.original_getpass(prompt, stream)
    _flush_streams()
    return _read_stdin(prompt, True)


def _flush_figures(skip):
    """Inline backend: every open pyplot figure becomes a display, then all are closed."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    try:
        numbers = list(plt.get_fignums())
    except Exception:
        return
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    for number in numbers:
        try:
            manager = helpers.Gcf.get_fig_manager(number) if helpers is not None else None
            fig = manager.canvas.figure if manager is not None else plt.figure(number)
            if fig is skip:
                continue
            data, md = _bundle(fig)
            if "image/png" in data:
                _send({"type": "display", "id": S.current_id, "data": data, "metadata": md})
        except Exception:
            pass
    try:
        plt.close("all")
    except Exception:
        pass


# --------------------------------------------------------------------------- notebook libraries

INLINE_BACKEND = "corral_inline"
IPYTHON_DISPLAY = "IPython.core.display_functions"


def _inline_show(*args, **kwargs):
    """plt.show() with the inline backend: the open figures become displays now."""
    if S.current_id is not None:
        _flush_figures(None)


class _InlineBackendLoader:
    """matplotlib's `module://corral_inline` backend (MPLBACKEND): Agg rendering, and show()
    displays the figures, as ipykernel's inline backend does."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        agg = __import__("matplotlib.backends.backend_agg", fromlist=["FigureCanvasAgg"])
        module.FigureCanvas = agg.FigureCanvasAgg
        module.FigureManager = agg.FigureManager
        module.show = _inline_show


class _PatchingLoader:
    """Runs a module's own loader, then `patch` on the module."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._patch(module)
        except Exception as exc:
            _note("could not adapt %s: %r" % (module.__name__, exc))


def _ipython_display(*objs, include=None, exclude=None, metadata=None, transient=None,
                     display_id=None, raw=False, clear=False, **kwargs):
    if clear:
        clear_output(wait=True)
    if display_id is None and isinstance(transient, dict):
        display_id = transient.get("display_id")
    return display(*objs, raw=raw, metadata=metadata, display_id=display_id,
                   update=bool(kwargs.get("update", False)))


def _ipython_publish_display_data(data, metadata=None, source=None, *, transient=None,
                                  **kwargs):
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    display(data, raw=True, metadata=metadata, display_id=display_id,
            update=bool(kwargs.get("update", False)))


def _ipython_update_display(obj, *, display_id, **kwargs):
    kwargs.pop("update", None)
    display(obj, display_id=display_id, update=True, **kwargs)


def _adapt_ipython_display(module):
    """IPython's display functions print plain reprs outside an IPython shell; in a corral
    session they produce rich output like the driver's own `display`."""
    module.display = _ipython_display
    module.publish_display_data = _ipython_publish_display_data
    module.update_display = _ipython_update_display
    module.clear_output = clear_output


class _NotebookFinder:
    """On sys.meta_path: provides the inline matplotlib backend and adapts IPython's display
    functions as they are imported. Costs nothing until one of them is imported."""

    def find_spec(self, name, path=None, target=None):
        if name == INLINE_BACKEND:
            return sys.modules["_frozen_importlib"].ModuleSpec(name, _InlineBackendLoader())
        if name != IPYTHON_DISPLAY:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, _adapt_ipython_display)
                return spec
        return None


# --------------------------------------------------------------------------- errors

def _clean_traceback(tb):
    """The traceback without the driver's frames, starting at the first cell frame."""
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    for i, entry in enumerate(entries):
        if entry.tb_frame.f_code.co_filename.startswith(CELL_PREFIX):
            entries = entries[i:]
            break
    kept = [e for e in entries if e.tb_frame.f_code.co_filename != DRIVER_FILE]
    nxt = None
    for entry in reversed(kept):
        entry.tb_next = nxt
        nxt = entry
    return nxt


def _clean_exception(exc, seen=None):
    if seen is None:
        seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            exc.__traceback__ = _clean_traceback(exc.__traceback__)
        except Exception:
            pass
        if exc.__cause__ is not None:
            _clean_exception(exc.__cause__, seen)
        exc = exc.__context__


def _error_frame(exc, clean=True):
    if clean:
        _clean_exception(exc)
    etype = type(exc)
    try:
        ename = etype.__name__
    except Exception:
        ename = "Exception"
    try:
        evalue = str(exc)
    except BaseException:
        evalue = "<exception str() failed>"
    foreign = getattr(exc, "_corral_traceback", None)
    if isinstance(foreign, list) and all(isinstance(line, str) for line in foreign):
        # An error raised on behalf of code in another language (an E2B context run by
        # another corral driver): its own traceback, not the Python frames that relayed it.
        lines = foreign
    else:
        try:
            lines = traceback.format_exception(etype, exc, exc.__traceback__)
        except BaseException:
            lines = ["%s: %s\n" % (ename, evalue)]
    if clean:
        sys.last_type, sys.last_value, sys.last_traceback = etype, exc, exc.__traceback__
    return {"type": "error", "id": S.current_id, "ename": ename, "evalue": evalue,
            "traceback": [str(line) for line in lines]}


# --------------------------------------------------------------------------- execution

def _suppressed(code):
    """Whether the last line of code ends with `;` (comments and blank lines ignored)."""
    for line in reversed(code.splitlines()):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if "#" not in text:
            return text.endswith(";")
        import tokenize
        last = None
        try:
            for tok in tokenize.generate_tokens(io.StringIO(code).readline):
                if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                    tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                    last = tok
        except Exception:
            pass
        return last is not None and last.type == tokenize.OP and last.string == ";"
    return False


# Compiled cells kept for re-running the same code (a loop of the same cell is common).
COMPILED_CELLS_KEPT = 256


def _renamed(co, filename):
    """`co` and the code objects nested in it (functions, classes, comprehensions) with
    `filename`, so a cached cell's tracebacks name the cell it runs as."""
    if co.co_filename == filename:
        return co
    consts = tuple(_renamed(c, filename) if isinstance(c, _CodeType) else c
                   for c in co.co_consts)
    return co.replace(co_filename=filename, co_consts=consts)


def _compile_cell(code, filename):
    """[(code object, is_last_expression)] for the cell; raises SyntaxError & co. Cells seen
    before (same code, same __future__ flags) come from a small cache."""
    key = (code, S.future_flags)
    cached = S.compiled.get(key)
    if cached is not None:
        return [(_renamed(co, filename), is_expr) for co, is_expr in cached]
    parts = _compile_fresh(code, filename)
    if len(S.compiled) >= COMPILED_CELLS_KEPT:
        S.compiled.pop(next(iter(S.compiled)))
    S.compiled[key] = parts
    return parts


def _compile_fresh(code, filename):
    flags = _ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | S.future_flags
    tree = compile(code, filename, "exec", flags | _ast.PyCF_ONLY_AST, dont_inherit=True)
    body = tree.body
    parts = []
    if body and isinstance(body[-1], _ast.Expr) and not _suppressed(code):
        if len(body) > 1:
            module = _ast.Module(body=body[:-1], type_ignores=[])
            parts.append((compile(module, filename, "exec", flags, dont_inherit=True), False))
        last = _ast.Expression(body=body[-1].value)
        parts.append((compile(last, filename, "eval", flags, dont_inherit=True), True))
    else:
        parts.append((compile(tree, filename, "exec", flags, dont_inherit=True), False))
    for co, _ in parts:
        S.future_flags |= co.co_flags & FUTURE_FLAGS
    return parts


def _event_loop():
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        asyncio = _stdlib_import("asyncio")
    if S.loop is None or S.loop.is_closed():
        S.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(S.loop)
    return S.loop


def _run_coroutine(coro):
    loop = _event_loop()
    task = loop.create_task(coro)
    try:
        return loop.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            try:
                loop.run_until_complete(task)
            except BaseException:
                pass
        raise


def _run_code(co):
    if co.co_flags & CO_COROUTINE:
        return _run_coroutine(eval(co, S.ns))
    return eval(co, S.ns)


def _register_source(code, filename):
    lines = code.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(code), None, lines, filename)


def _bind_result(value, count):
    ns = S.ns
    S.history = [value] + S.history[:2]
    ns["_"], ns["__"], ns["___"] = S.history
    if isinstance(count, int):
        ns["_%d" % count] = value


def _run_cell(code, count):
    """Runs one cell, sending result/display/error frames. True if it raised nothing."""
    filename = "%s%s>" % (CELL_PREFIX, count)
    _register_source(code, filename)
    try:
        parts = _compile_cell(code, filename)
    except Exception as exc:  # SyntaxError, ValueError (null bytes), RecursionError...
        _defer(_error_frame(exc))
        return False

    value = None
    ok = True
    S.pending_interrupt = False
    try:
        S.in_cell = True
        if S.early_interrupt:
            S.early_interrupt = False
            raise KeyboardInterrupt
        for co, is_expr in parts:
            result = _run_code(co)
            if is_expr:
                value = result
        if value is not None:
            if S.store_history:
                _bind_result(value, count)
            data, md = _bundle(value)
            _defer({"type": "result", "id": S.current_id, "execution_count": count,
                    "data": data, "metadata": md})
        S.in_cell = False
    except BaseException as exc:
        S.in_cell = False
        ok = False
        _defer(_error_frame(exc))
    finally:
        S.in_cell = False
    _flush_figures(value)
    return ok


def _serve_exec(msg):
    exec_id = msg.get("id")
    S.current_id = exec_id if isinstance(exec_id, str) else str(exec_id)
    code = msg.get("code")
    count = msg.get("execution_count")
    token = str(msg.get("sync_token", ""))
    S.sync_token = token
    stdin = msg.get("stdin", "empty")
    S.stdin_mode = stdin if stdin in ("empty", "refused", "requested") else "empty"
    S.store_history = msg.get("store_history", True) is not False
    ok = False
    try:
        if not isinstance(code, str):
            raise TypeError("exec frame without a code string")
        _restore_io()
        ok = _run_cell(code, count)
        if os.getpid() != S.pid:
            _exit(0)  # a child forked by the cell has finished the cell
    except BaseException as exc:
        S.in_cell = False
        internal = not isinstance(exc, (KeyboardInterrupt, SystemExit))
        try:
            frame = _error_frame(exc, clean=not internal)
            if internal:
                frame["evalue"] = "corral driver internal error: %s" % frame["evalue"]
            _send(frame)
        except BaseException:
            pass
    _install_sigint()
    marked = False
    try:
        _flush_streams()
        _restore_io()
        marked = _write_markers(token)
    except BaseException:
        pass
    exec_id = S.current_id
    deferred, S.deferred = S.deferred, None
    S.current_id = None
    S.stdin_mode = "empty"
    # From `done` on, an interrupt with a frame waiting is for the next exec: forget this one's
    # before the server can send that frame.
    S.frame_started = False
    S.early_interrupt = False
    frames = b""
    if deferred is not None:
        if marked and token:
            # A fence never written: the sync markers pass it, so the server emits this frame
            # after everything the cell printed.
            deferred = dict(deferred, fence=S.fences + 1)
        frames = _frame_bytes(deferred)
    _send_bytes(frames + _frame_bytes({"type": "done", "id": exec_id,
                                       "status": "ok" if ok else "error"}))


# --------------------------------------------------------------------------- completion

def _completer_module():
    module = sys.modules.get("rlcompleter")
    if module is not None:
        return module
    # rlcompleter imports readline, which touches the terminal; keep it out.
    hide = "readline" not in sys.modules
    if hide:
        sys.modules["readline"] = None
    try:
        import rlcompleter as module
    finally:
        if hide and sys.modules.get("readline", 0) is None:
            del sys.modules["readline"]
    return module


def _completions(code, cursor):
    start = cursor
    while start > 0 and (code[start - 1].isalnum() or code[start - 1] in "_."):
        start -= 1
    token = code[start:cursor]
    completer = _completer_module().Completer(S.ns)
    if "." in token:
        base, _, attr = token.rpartition(".")
        if not base:
            return [], cursor, cursor
        found = completer.attr_matches(token)
        prefix = base + "."
        names = [m[len(prefix):] for m in found if m.startswith(prefix)]
        start = cursor - len(attr)
    else:
        names = completer.global_matches(token)
    matches = sorted({name.rstrip("(): ") for name in names} - {""})
    return matches, start, cursor


def _code_and_cursor(msg):
    """A question's code and cursor (the end of the code when missing or out of range)."""
    code = msg.get("code")
    code = code if isinstance(code, str) else ""
    cursor = msg.get("cursor_pos")
    if not isinstance(cursor, int) or cursor < 0 or cursor > len(code):
        cursor = len(code)
    return code, cursor


def _serve_complete(msg):
    code, cursor = _code_and_cursor(msg)
    try:
        matches, start, end = _completions(code, cursor)
    except Exception:
        matches, start, end = [], cursor, cursor
    _send({"type": "complete_reply", "id": msg.get("id"), "matches": matches,
           "cursor_start": start, "cursor_end": end})


# --------------------------------------------------------------------------- inspection

def _names_at(code, cursor):
    """Names to inspect at the cursor: the dotted name under (or just before) it, then the
    callee of the call the cursor is in."""
    def span(pos):
        start = end = pos
        while start > 0 and (code[start - 1].isalnum() or code[start - 1] in "_."):
            start -= 1
        while end < len(code) and (code[end].isalnum() or code[end] == "_"):
            end += 1
        name = code[start:end].strip(".")
        return name if name[:1].isalpha() or name[:1] == "_" else ""
    names = [span(cursor)]
    depth = 0
    for pos in range(min(cursor, len(code)) - 1, -1, -1):
        if code[pos] == ")":
            depth += 1
        elif code[pos] == "(":
            if depth == 0:
                names.append(span(pos))
                break
            depth -= 1
    return [name for name in names if name]


def _lookup(name):
    parts = name.split(".")
    if parts[0] in S.ns:
        obj = S.ns[parts[0]]
    elif hasattr(builtins, parts[0]):
        obj = getattr(builtins, parts[0])
    else:
        raise LookupError(name)
    for part in parts[1:]:
        obj = getattr(obj, part)
    return obj


def _inspection(name, obj, detail_level):
    inspect = _stdlib_import("inspect")
    lines = []
    try:
        signature = str(inspect.signature(obj))
    except Exception:
        signature = None
    lines.append("Type:      %s" % type(obj).__name__)
    if not callable(obj):
        text = _safe_repr(obj)
        if len(text) > 2000:
            text = text[:2000] + "..."
        lines.append("String form: %s" % text)
    if signature is not None:
        lines.append("Signature: %s%s" % (name.rpartition(".")[2], signature))
    doc = inspect.getdoc(obj)
    if doc:
        lines.append("Docstring:\n%s" % doc)
    else:
        lines.append("Docstring: <no docstring>")
    if detail_level >= 1:
        try:
            lines.append("Source:\n%s" % inspect.getsource(obj))
        except Exception:
            pass
    try:
        lines.append("File:      %s" % inspect.getfile(obj))
    except Exception:
        pass
    return "\n".join(lines)


def _serve_inspect(msg):
    code, cursor = _code_and_cursor(msg)
    detail = msg.get("detail_level")
    detail = detail if isinstance(detail, int) else 0
    found, data = False, {}
    for name in _names_at(code, cursor):
        try:
            obj = _lookup(name)
            data = {"text/plain": _inspection(name, obj, detail)}
            found = True
            break
        except Exception:
            continue
    _send({"type": "inspect_reply", "id": msg.get("id"), "found": found, "data": data})


def _completeness(code):
    """(status, indent) as Jupyter's is_complete_request wants them."""
    codeop = _stdlib_import("codeop")
    if not code.strip():
        return "complete", ""
    try:
        compiled = codeop.compile_command(code, "<cell>", "exec")
    except (SyntaxError, OverflowError, ValueError):
        return "invalid", ""
    if compiled is not None:
        return "complete", ""
    lines = code.splitlines() or [""]
    last = lines[-1]
    indent = last[:len(last) - len(last.lstrip())]
    if last.rstrip().endswith(":"):
        indent += "    "
    return "incomplete", indent


def _serve_is_complete(msg):
    code = msg.get("code")
    code = code if isinstance(code, str) else ""
    try:
        status, indent = _completeness(code)
    except Exception:
        status, indent = "unknown", ""
    _send({"type": "is_complete_reply", "id": msg.get("id"), "status": status,
           "indent": indent})


def _serve_query(serve, msg):
    """Answers a question about code. It may run user code (a repr, a property), so the
    server may interrupt it like a cell: then no reply is sent."""
    S.in_cell = True
    try:
        serve(msg)
    finally:
        S.in_cell = False


def _serve_evaluate(msg):
    """Jupyter's user_expressions: each [name, expression] evaluated in the namespace."""
    results = []
    expressions = msg.get("expressions")
    for pair in expressions if isinstance(expressions, list) else []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            continue
        name, expression = pair
        try:
            value = eval(compile(expression, "<expression>", "eval"), S.ns)
            data, md = _bundle(value)
            results.append([name, {"status": "ok", "data": data, "metadata": md}])
        except Exception as exc:
            _clean_exception(exc)
            frame = _error_frame(exc, clean=False)
            results.append([name, {"status": "error", "ename": frame["ename"],
                                   "evalue": frame["evalue"], "traceback": frame["traceback"]}])
    _send({"type": "evaluate_reply", "id": msg.get("id"), "results": results})


QUERIES = {"complete": _serve_complete, "inspect": _serve_inspect,
           "is_complete": _serve_is_complete, "evaluate": _serve_evaluate}


# --------------------------------------------------------------------------- start-up

def _stdlib_import(name):
    """Imports a module without the workspace on sys.path (a user file cannot shadow it)."""
    saved = list(sys.path)
    cwd = os.getcwd()
    sys.path[:] = [p for p in saved if p not in ("", ".", cwd)]
    try:
        __import__(name)
    finally:
        sys.path[:] = saved
    return sys.modules[name]


def _load_modules():
    global json, traceback, linecache, binascii
    import json
    import traceback
    import linecache
    import binascii
    import tokenize  # noqa: F401 (used by _suppressed; imported here to be shadow-proof)
    import codeop  # noqa: F401 (is_complete)
    import getpass
    _completer_module()
    S.original_getpass = getpass.getpass
    getpass.getpass = _getpass


def _setup():
    S.in_cell = False
    S.sending = 0
    S.pending_interrupt = False
    S.frame_started = False
    S.early_interrupt = False
    S.sock = None
    S.current_id = None
    S.sync_token = None
    S.fences = 0
    S.deferred = None
    S.compiled = {}
    S.stdin_mode = "empty"
    S.store_history = True
    S.original_input = builtins.input
    S.original_getpass = None
    S.history = ["", "", ""]
    S.future_flags = 0
    S.loop = None
    S.graveyard = []
    S.main_ident = _thread.get_ident()
    S.pid = os.getpid()
    S.send_lock = _thread.allocate_lock()
    _signal.signal(_signal.SIGINT, _on_sigint)

    S.saved_fds = {}
    S.fd_ids = {}
    for fd in (1, 2):
        S.saved_fds[fd] = os.dup(fd)  # close-on-exec
        S.fd_ids[fd] = _fd_identity(fd)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    S.streams = {1: _make_stream(1), 2: _make_stream(2)}
    _restore_io()

    try:
        sock = _socket.socket(fileno=CONTROL_FD)
    except OSError as e:
        _note("no control socket on fd %d: %s" % (CONTROL_FD, e))
        os._exit(2)
    sock.setblocking(True)
    os.set_inheritable(CONTROL_FD, False)  # cells' subprocesses must not hold the socket
    S.sock = sock

    # The user's namespace: a fresh __main__ module.
    module = type(sys)("__main__")
    module.__builtins__ = builtins
    S.user_module = module
    S.ns = module.__dict__
    sys.modules["__main__"] = module
    sys.meta_path.insert(0, _NotebookFinder())
    builtins.display = display
    builtins.update_display = update_display
    builtins.clear_output = clear_output
    builtins.input = _input
    sys.argv = [""]


def _preload():
    """Imports the modules named in CORRAL_PRELOAD (comma-separated; the warm pool's preload
    list) into sys.modules, so the first cell that imports them finds them loaded. A module
    that cannot be imported is reported on stderr and skipped."""
    names = os.environ.pop("CORRAL_PRELOAD", "")
    for name in names.split(","):
        name = name.strip()
        if not name:
            continue
        try:
            __import__(name)
        except BaseException as exc:  # a broken preload must not stop the worker
            _note("preload of %r failed: %r" % (name, exc))


def _ready_frame():
    version = sys.version.split()[0]
    text = ('{"type":"ready","protocol":%d,"language":"python","language_version":"%s",'
            '"pid":%d}' % (PROTOCOL_VERSION, version, os.getpid()))
    payload = text.encode("ascii")
    return len(payload).to_bytes(4, "big") + payload


def _main():
    _setup()
    _send_bytes(_ready_frame())
    _load_modules()
    _preload()
    # Like `python -c`: the working directory (the workspace) comes first on sys.path.
    if sys.path:
        sys.path[0] = ""
    else:
        sys.path.append("")
    while True:
        try:
            msg = _read_message()
            if msg is None:
                _exit(0)
            kind = msg.get("type")
            if kind != "exec":
                # Only an exec can be interrupted; forget any interrupt before replying.
                S.frame_started = False
                S.early_interrupt = False
            if kind == "exec":
                _serve_exec(msg)
            elif kind in QUERIES:
                _serve_query(QUERIES[kind], msg)
            elif kind == "input_reply":
                pass  # the answer to an input request the cell no longer waits for
            elif kind == "shutdown":
                _exit(0)
            else:
                _note("unknown frame type %r ignored" % (kind,))
        except KeyboardInterrupt:
            continue
        except Exception as exc:
            _note("internal error: %r" % (exc,))
        _install_sigint()


DRIVER_FILE = _main.__code__.co_filename
_DRIVER_MODULE = sys.modules.get("__main__")  # keeps the driver's globals alive

if __name__ == "__main__":
    _main()
