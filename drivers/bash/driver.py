"""corral's Bash worker driver (protocol 1; see docs/protocol.md).

Started as `python3 driver.py` with fd 0 on /dev/null, fds 1 and 2 on pipes read by the server
and a Unix stream socket on fd 3 carrying length-prefixed JSON frames both ways. Standard
library only.

The driver speaks the protocol; the cells run in one persistent `bash` (interactive mode
without a terminal, job control off) that it starts beside itself. Bash writes straight to
fds 1 and 2, so everything a command prints is captured at the fd level. Each cell is sent to
the shell as one line, `eval` of the cell's text with standard input on /dev/null, followed
by a line that reports `$?` on a status pipe: `cd`, variables, functions and aliases stay for
the next cell. An interrupt (SIGINT) is passed on to the shell's process group; an
interactive shell then abandons the rest of the cell's line, and the next line reports 130.

The exit status is the cell's result; a status other than 0 is also an error (`ExitStatus`,
or `KeyboardInterrupt` after an interrupt), so clients that stop on errors stop. A cell that ends the shell (`exit`) is reported as an
error and a new shell starts (its state is gone).

Not here: rich display, standard input (`input_request`), completion and inspection (empty
answers); `is_complete` asks `bash -n`.
"""

import json
import os
import select
import signal
import socket
import subprocess

PROTOCOL_VERSION = 1
CONTROL_FD = 3
MAX_FRAME = 64 * 1024 * 1024
SYNC_PREFIX = b"\x00CORRAL-SYNC:"
# Where the shell writes statuses, and where its real stderr waits during start-up (so the
# "no job control" notices of an interactive shell without a terminal go nowhere).
STATUS_FD = 63
STDERR_FD = 62


class Shell:
    """One running bash and the driver's ends of its pipes."""

    def __init__(self):
        commands_read, self.commands = os.pipe()
        self.status, status_write = os.pipe()
        os.set_inheritable(commands_read, True)
        env = dict(os.environ, PS1="", PS2="", PS0="", PS4="+ ")
        env.pop("PROMPT_COMMAND", None)
        null = os.open(os.devnull, os.O_WRONLY)
        # The status pipe and the real stderr at fixed numbers above the driver's own fds.
        os.dup2(status_write, STATUS_FD)
        os.dup2(2, STDERR_FD)
        try:
            self.process = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "--noediting", "+m", "-i"],
                stdin=commands_read, stdout=1, stderr=null, env=env,
                pass_fds=(STATUS_FD, STDERR_FD), start_new_session=True,
            )
        finally:
            for fd in (null, commands_read, status_write, STATUS_FD, STDERR_FD):
                os.close(fd)
        self.pending = b""
        # Set up the shell; the status it reports says it is ready and the notices are past.
        self.send(
            "exec 2>&%d %d>&-; set +H +o history; unset HISTFILE MAIL MAILPATH; "
            "__corral_done() { printf '%%s\\n' \"$1\" >&%d; }; __corral_done 0\n"
            % (STDERR_FD, STDERR_FD, STATUS_FD)
        )
        self.wait_status()

    def send(self, text):
        data = text.encode("utf-8", "surrogateescape")
        while data:
            try:
                written = os.write(self.commands, data)
            except InterruptedError:
                continue
            except BrokenPipeError:
                return
            data = data[written:]

    def run(self, code):
        """Sends one cell; its status comes from wait_status."""
        self.send("__corral_code=%s\n" % _ansi_c_quote(code))
        self.send('eval "$__corral_code" </dev/null\n')
        self.send("__corral_done $?\n")

    def wait_status(self):
        """The next status the shell reports, or None when the shell ended."""
        while b"\n" not in self.pending:
            try:
                chunk = os.read(self.status, 4096)
            except InterruptedError:
                continue
            if not chunk:
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        try:
            return int(line.strip() or b"0")
        except ValueError:
            return None

    def interrupt(self):
        try:
            os.killpg(self.process.pid, signal.SIGINT)
        except OSError:
            pass

    def close(self):
        for fd in (self.commands, self.status):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            return self.process.wait(timeout=5)
        except Exception:
            return None


def _ansi_c_quote(text):
    """`text` as one line of bash: $'...' with everything unusual escaped."""
    out = ["$'"]
    for ch in text.replace("\x00", ""):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "\n":
            out.append("\\n")
        elif code < 0x20 or code == 0x7F:
            out.append("\\x%02x" % code)
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)


class Driver:
    def __init__(self):
        self.sock = socket.socket(fileno=CONTROL_FD)
        self.sock.set_inheritable(False)
        self.in_cell = False
        self.interrupted = False
        self.early_interrupt = False
        self.shell = None
        self.sync_token = ""
        self.fences = 0

    # ------------------------------------------------------------------ frames

    def send(self, obj):
        if obj.get("type") in ("result", "error") and self.sync_token:
            fence = self.write_fence()
            if fence is not None:
                obj = dict(obj, fence=fence)
        payload = json.dumps(obj, ensure_ascii=False).encode("utf-8", "replace")
        try:
            self.sock.sendall(len(payload).to_bytes(4, "big") + payload)
        except OSError:
            self.exit(0)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except InterruptedError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def read_message(self):
        while True:
            header = self.recv_exact(4)
            if header is None:
                return None
            n = int.from_bytes(header, "big")
            if n > MAX_FRAME:
                note("frame of %d bytes exceeds the protocol limit" % n)
                self.exit(2)
            body = self.recv_exact(n)
            if body is None:
                return None
            try:
                msg = json.loads(body)
            except ValueError as e:
                note("undecodable frame ignored: %s" % e)
                continue
            if isinstance(msg, dict):
                return msg

    def frame_waiting(self):
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    # ------------------------------------------------------------------ markers

    def write_marker(self, suffix):
        marker = SYNC_PREFIX + self.sync_token.encode("ascii", "replace") + suffix + b"\x00"
        for fd in (1, 2):
            try:
                _write_all(fd, marker)
            except OSError:
                return False
        return True

    def write_fence(self):
        self.fences += 1
        return self.fences if self.write_marker(b".%d" % self.fences) else None

    # ------------------------------------------------------------------ cells

    def on_sigint(self, signum, frame):
        if self.in_cell:
            self.interrupted = True
            if self.shell is not None:
                self.shell.interrupt()
        elif self.frame_waiting():
            self.early_interrupt = True

    def serve_exec(self, msg):
        exec_id = msg.get("id")
        count = msg.get("execution_count", 0)
        self.sync_token = str(msg.get("sync_token") or "")
        self.fences = 0
        code = str(msg.get("code", ""))
        if self.shell is None:
            self.shell = Shell()
        self.in_cell = True
        self.interrupted = False
        try:
            if self.early_interrupt:
                self.early_interrupt = False
                self.interrupted = True
                status = 130
            else:
                self.shell.run(code)
                status = self.shell.wait_status()
        finally:
            self.in_cell = False
        error = None
        if status is None:
            exit_status = self.shell.close()
            self.shell = None
            error = ("ShellExit",
                     "the shell exited with status %s; a new shell starts with the next cell"
                     % exit_status)
            status = exit_status if isinstance(exit_status, int) else 1
            status = status if status >= 0 else 128 - status
        self.send({"type": "result", "id": exec_id, "execution_count": count,
                   "data": {"text/plain": str(status), "application/json": status},
                   "metadata": {}})
        if error is None and status != 0 and self.interrupted:
            # The protocol's name for an interrupted cell, whatever the language.
            error = ("KeyboardInterrupt", "interrupted (exit status %d)" % status)
        elif error is None and status != 0:
            error = ("ExitStatus", "exit status %d" % status)
        if error is not None:
            self.send({"type": "error", "id": exec_id, "ename": error[0],
                       "evalue": error[1], "traceback": ["%s: %s" % error]})
        if self.sync_token:
            self.write_marker(b"")
        self.sync_token = ""
        self.send({"type": "done", "id": exec_id, "status": "ok" if error is None else "error"})

    def serve_query(self, msg):
        kind = msg.get("type")
        qid = msg.get("id")
        if kind == "complete":
            cursor = int(msg.get("cursor_pos") or 0)
            self.send({"type": "complete_reply", "id": qid, "matches": [],
                       "cursor_start": cursor, "cursor_end": cursor})
        elif kind == "inspect":
            self.send({"type": "inspect_reply", "id": qid, "found": False, "data": {}})
        elif kind == "is_complete":
            self.send({"type": "is_complete_reply", "id": qid,
                       "status": _completeness(str(msg.get("code", ""))), "indent": ""})
        elif kind == "evaluate":
            results = [[name, {"status": "error", "ename": "NotSupported",
                               "evalue": "the bash runtime does not evaluate expressions",
                               "traceback": []}]
                       for name, _ in msg.get("expressions") or []]
            self.send({"type": "evaluate_reply", "id": qid, "results": results})

    def exit(self, status):
        if self.shell is not None:
            self.shell.close()
        os._exit(status)

    def main(self):
        signal.signal(signal.SIGINT, self.on_sigint)
        self.shell = Shell()
        version = subprocess.run(
            ["bash", "-c", "printf %s \"$BASH_VERSION\""], capture_output=True, text=True,
            stdin=subprocess.DEVNULL, check=False).stdout.strip()
        self.send({"type": "ready", "protocol": PROTOCOL_VERSION, "language": "bash",
                   "language_version": version, "pid": os.getpid()})
        while True:
            try:
                msg = self.read_message()
                if msg is None:
                    self.exit(0)
                kind = msg.get("type")
                if kind != "exec":
                    self.early_interrupt = False
                if kind == "exec":
                    self.serve_exec(msg)
                elif kind in ("complete", "inspect", "is_complete", "evaluate"):
                    self.serve_query(msg)
                elif kind == "shutdown":
                    self.exit(0)
                elif kind != "input_reply":
                    note("unknown frame type %r ignored" % (kind,))
            except Exception as exc:  # the driver keeps serving whatever went wrong
                note("internal error: %r" % (exc,))


def _completeness(code):
    try:
        checked = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True,
                                 timeout=5, check=False)
    except Exception:
        return "unknown"
    if checked.returncode == 0:
        return "complete"
    if "unexpected end of file" in checked.stderr:
        return "incomplete"
    return "invalid"


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        view = view[n:]


def note(text):
    try:
        _write_all(2, ("corral driver: %s\n" % text).encode("utf-8", "replace"))
    except Exception:
        pass


if __name__ == "__main__":
    Driver().main()
