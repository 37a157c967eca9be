"""Tests for the Python worker driver (drivers/python/driver.py).

Run from the repository root:  python3 -m unittest drivers/python/test_driver.py

Each test starts the driver the way the server does (fd 0 on /dev/null, fds 1 and 2 on pipes,
a Unix stream socket on fd 3, a cleared environment, the workspace as cwd and HOME), talks the
frame protocol to it and kills it afterwards. Every wait is bounded.
"""

import base64
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "driver.py")
DRIVER_NAME = os.path.basename(DRIVER)
SYNC_PREFIX = b"\x00CORRAL-SYNC:"
TIMEOUT = 15.0

# Moves the inherited socket to fd 3, then becomes `python3 driver.py` (same pid).
LAUNCHER = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.execv(sys.executable, [sys.executable, sys.argv[2]])\n"
)


def _have_matplotlib():
    env = _worker_env(tempfile.gettempdir())
    try:
        probe = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _worker_env(workspace):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": workspace,
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "",
        "MPLBACKEND": "module://corral_inline",
        "TERM": "dumb",
    }
    # Lets a test run see a matplotlib installed outside the interpreter's site-packages.
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


class PipeReader(threading.Thread):
    """Collects everything written to one of the driver's pipes."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.data = bytearray()
        self.eof = False
        self.cond = threading.Condition()

    def run(self):
        fd = self.stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self.cond:
                if not chunk:
                    self.eof = True
                    self.cond.notify_all()
                    return
                self.data += chunk
                self.cond.notify_all()

    def wait_for(self, needle, start=0, timeout=TIMEOUT):
        """Index of needle at or after start; raises AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                index = self.data.find(needle, start)
                if index >= 0:
                    return index
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    raise AssertionError("%r not seen; got %r" % (needle, bytes(self.data[start:])))
                self.cond.wait(remaining)

    def snapshot(self):
        with self.cond:
            return bytes(self.data)


def split_fences(data, token):
    """The stream without the execution's fences, and each fence's (number, offset) in it."""
    pattern = re.compile(re.escape(SYNC_PREFIX + token.encode()) + rb"\.(\d+)\x00")
    fences = []
    kept = []
    position = 0
    for match in pattern.finditer(data):
        kept.append(data[position:match.start()])
        fences.append((int(match.group(1)), sum(len(part) for part in kept)))
        position = match.end()
    kept.append(data[position:])
    return b"".join(kept), fences


class Execution:
    def __init__(self, frames, stdout, stderr, token):
        self.frames = frames
        self.stdout, self.stdout_fences = split_fences(stdout, token)
        self.stderr, self.stderr_fences = split_fences(stderr, token)
        self.token = token

    def of_type(self, kind):
        return [f for f in self.frames if f["type"] == kind]

    @property
    def done(self):
        return self.frames[-1]

    @property
    def status(self):
        return self.done["status"]

    @property
    def result(self):
        results = self.of_type("result")
        return results[0] if results else None

    @property
    def error(self):
        errors = self.of_type("error")
        return errors[0] if errors else None

    @property
    def text(self):
        return self.result["data"]["text/plain"] if self.result else None


class Worker:
    def __init__(self, workspace):
        self.workspace = workspace
        parent, child = socket.socketpair()
        self.sock = parent
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(child.fileno()), DRIVER],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(child.fileno(),), cwd=workspace, env=_worker_env(workspace),
            start_new_session=True,
        )
        child.close()
        self.out = PipeReader(self.proc.stdout)
        self.err = PipeReader(self.proc.stderr)
        self.out.start()
        self.err.start()
        self.out_pos = 0
        self.err_pos = 0
        self.count = 0
        self.ready = self.recv()

    # frames
    def send(self, obj):
        payload = json.dumps(obj).encode("utf-8")
        self.sock.sendall(len(payload).to_bytes(4, "big") + payload)

    def _recv_exact(self, n, deadline):
        data = b""
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting for a frame")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(n - len(data))
            except socket.timeout:
                raise AssertionError("timed out waiting for a frame") from None
            if not chunk:
                raise EOFError("driver closed the socket")
            data += chunk
        return data

    def recv(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        n = int.from_bytes(self._recv_exact(4, deadline), "big")
        return json.loads(self._recv_exact(n, deadline).decode("utf-8"))

    # executions
    def start(self, code, count=None, stdin=None):
        self.count += 1
        token = uuid.uuid4().hex
        exec_id = "exec-%d" % self.count
        frame = {"type": "exec", "id": exec_id, "code": code,
                 "execution_count": self.count if count is None else count,
                 "sync_token": token}
        if stdin is not None:
            frame["stdin"] = stdin
        self.send(frame)
        return exec_id, token

    def finish(self, exec_id, token, timeout=TIMEOUT):
        frames = []
        while True:
            frame = self.recv(timeout)
            frames.append(frame)
            if frame["type"] == "done":
                assert frame["id"] == exec_id, frame
                break
        marker = SYNC_PREFIX + token.encode() + b"\x00"
        out_at = self.out.wait_for(marker, self.out_pos, timeout)
        err_at = self.err.wait_for(marker, self.err_pos, timeout)
        stdout = self.out.snapshot()[self.out_pos:out_at]
        stderr = self.err.snapshot()[self.err_pos:err_at]
        self.out_pos = out_at + len(marker)
        self.err_pos = err_at + len(marker)
        return Execution(frames, stdout, stderr, token)

    def execute(self, code, timeout=TIMEOUT, count=None):
        exec_id, token = self.start(textwrap.dedent(code), count)
        return self.finish(exec_id, token, timeout)

    def complete(self, code, cursor_pos=None):
        self.send({"type": "complete", "id": "c1", "code": code,
                   "cursor_pos": len(code) if cursor_pos is None else cursor_pos})
        reply = self.recv()
        assert reply["type"] == "complete_reply" and reply["id"] == "c1", reply
        return reply

    def wait_exit(self, timeout=TIMEOUT):
        return self.proc.wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send({"type": "shutdown"})
                self.proc.wait(5)
            except Exception:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(5)
        else:
            # Anything the driver's cells left running in its group goes too.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        self.sock.close()
        self.out.join(5)
        self.err.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


class DriverTestCase(unittest.TestCase):
    def setUp(self):
        self.workspace = tempfile.mkdtemp(prefix="corral-driver-test-")
        self.addCleanup(shutil.rmtree, self.workspace, ignore_errors=True)
        self.worker = Worker(self.workspace)
        self.addCleanup(self.worker.close)

    def run_ok(self, code, **kwargs):
        execution = self.worker.execute(code, **kwargs)
        self.assertEqual(execution.status, "ok", execution.frames)
        self.assertIsNone(execution.error)
        return execution

    def run_error(self, code, ename, **kwargs):
        execution = self.worker.execute(code, **kwargs)
        self.assertEqual(execution.status, "error", execution.frames)
        self.assertIsNotNone(execution.error, execution.frames)
        self.assertEqual(execution.error["ename"], ename, execution.error)
        return execution

    def assert_no_driver_frames(self, error):
        joined = "".join(error["traceback"])
        self.assertNotIn(DRIVER_NAME, joined)
        self.assertNotIn("driver", joined.lower())


class StartupTests(DriverTestCase):
    def test_ready_frame(self):
        ready = self.worker.ready
        self.assertEqual(ready["type"], "ready")
        self.assertEqual(ready["protocol"], 1)
        self.assertEqual(ready["language"], "python")
        self.assertEqual(ready["language_version"], platform.python_version())
        self.assertEqual(ready["pid"], self.worker.proc.pid)

    def test_shutdown_exits_zero(self):
        self.worker.send({"type": "shutdown"})
        self.assertEqual(self.worker.wait_exit(), 0)

    def test_eof_exits_zero(self):
        self.worker.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(self.worker.wait_exit(), 0)

    def test_unknown_frame_is_ignored(self):
        self.worker.send({"type": "bogus", "id": "x"})
        self.assertEqual(self.run_ok("1 + 1").text, "2")

    def test_control_socket_not_inherited(self):
        code = ("import os, sys\n"
                "os.system(sys.executable + ' -S -c \"import os; print(os.path.exists(\\'/proc/self/fd/3\\'))\"')")
        self.assertEqual(self.run_ok(code).stdout, b"False\n")


class ExecutionTests(DriverTestCase):
    def test_state_persists(self):
        self.run_ok("x = 40")
        self.assertEqual(self.run_ok("x + 2").text, "42")

    def test_result_frame(self):
        execution = self.run_ok("6 * 7")
        result = execution.result
        self.assertEqual(result["id"], "exec-1")
        self.assertEqual(result["execution_count"], 1)
        self.assertEqual(result["data"], {"text/plain": "42"})
        self.assertEqual(result["metadata"], {})
        self.assertEqual(execution.frames[-1], {"type": "done", "id": "exec-1", "status": "ok"})

    def test_underscore_history(self):
        self.run_ok("10")
        self.run_ok("20")
        self.run_ok("30")
        self.assertEqual(self.run_ok("(_, __, ___, _1, _2)").text, "(30, 20, 10, 10, 20)")
        self.assertEqual(self.run_ok("_4[0]", count=5).text, "30")

    def test_semicolon_suppresses_result(self):
        self.assertIsNone(self.run_ok("1 + 1;").result)
        self.assertIsNone(self.run_ok("1 + 1;  # comment\n\n").result)
        self.assertIsNone(self.run_ok("x = 3\nx;\n# trailing comment").result)
        self.assertEqual(self.run_ok("'a;' # b;").text, "'a;'")
        self.assertEqual(self.run_ok("'#;'").text, "'#;'")
        self.assertEqual(self.run_ok("1 # ;").text, "1")

    def test_none_gives_no_result(self):
        self.assertIsNone(self.run_ok("None").result)
        self.assertIsNone(self.run_ok("x = None\nx").result)
        self.assertIsNone(self.run_ok("y = 1").result)

    def test_only_last_expression_is_a_result(self):
        execution = self.run_ok("1\n2\nfor i in range(2):\n    i\n3")
        self.assertEqual(len(execution.of_type("result")), 1)
        self.assertEqual(execution.text, "3")

    def test_main_module_namespace(self):
        self.assertEqual(self.run_ok("__name__").text, "'__main__'")
        self.assertEqual(self.run_ok("import sys; sys.modules['__main__'].__dict__ is globals()").text,
                         "True")
        names = self.run_ok("sorted(k for k in globals() if not k.startswith('_'))").text
        self.assertEqual(names, "['sys']")
        self.assertEqual(self.run_ok("if __name__ == '__main__':\n    ran = 1\nran").text, "1")

    def test_pickle_and_dataclass_in_cells(self):
        code = """
            import pickle, dataclasses
            @dataclasses.dataclass
            class Point:
                x: int
                y: int = 0
            pickle.loads(pickle.dumps(Point(1, 2)))
        """
        self.assertEqual(self.run_ok(code).text, "Point(x=1, y=2)")

    def test_workspace_is_importable_and_cwd(self):
        with open(os.path.join(self.workspace, "helper_mod.py"), "w") as f:
            f.write("VALUE = 17\n")
        self.assertEqual(self.run_ok("import helper_mod; helper_mod.VALUE").text, "17")
        self.assertEqual(self.run_ok("import os; os.getcwd() == os.environ['HOME']").text, "True")

    def test_future_import_persists(self):
        self.run_ok("from __future__ import annotations")
        self.assertEqual(self.run_ok("def f(x: undefined_name): pass\nf.__annotations__").text,
                         "{'x': 'undefined_name'}")

    def test_forked_child_does_not_talk_to_the_server(self):
        execution = self.run_ok("""
            import os
            pid = os.fork()
            if pid == 0:
                print('child')
                display('from child')
            else:
                os.waitpid(pid, 0)
                print('parent')
            'value'
        """)
        self.assertEqual(execution.stdout, b"child\nparent\n")
        self.assertEqual(execution.of_type("display"), [])
        self.assertEqual(execution.text, "'value'")
        self.assertEqual(self.run_ok("1").text, "1")

    def test_input_raises_eof(self):
        self.run_error("input()", "EOFError")

    def test_display_builtin(self):
        execution = self.run_ok("display(1, 'a')\nprint('after')")
        displays = execution.of_type("display")
        self.assertEqual([d["data"] for d in displays],
                         [{"text/plain": "1"}, {"text/plain": "'a'"}])
        self.assertTrue(all(d["id"] == "exec-1" and d["metadata"] == {} for d in displays))
        self.assertIsNone(execution.result)
        self.assertEqual(execution.stdout, b"after\n")

    def test_display_raw_and_from_thread(self):
        execution = self.run_ok("""
            display({'text/html': '<b>x</b>', 'text/plain': 'x'}, raw=True)
            import threading
            t = threading.Thread(target=display, args=(5,))
            t.start(); t.join()
        """)
        displays = execution.of_type("display")
        self.assertEqual(displays[0]["data"], {"text/html": "<b>x</b>", "text/plain": "x"})
        self.assertEqual(displays[1]["data"], {"text/plain": "5"})

    def test_display_after_cell_is_dropped(self):
        self.run_ok("""
            import threading, time
            def later():
                time.sleep(0.3)
                display('late')
            threading.Thread(target=later).start()
        """)
        time.sleep(0.6)
        execution = self.run_ok("2")
        self.assertEqual(execution.of_type("display"), [])
        self.assertEqual(execution.text, "2")


class OutputTests(DriverTestCase):
    def test_print_and_subprocess_output_in_order(self):
        execution = self.run_ok("""
            import os
            print('a')
            os.system('echo hi')
            print('b')
            os.write(1, b'raw\\n')
            print('c', end='')
        """)
        self.assertEqual(execution.stdout, b"a\nhi\nb\nraw\nc")
        self.assertEqual(execution.stderr, b"")

    def test_stderr_captured(self):
        execution = self.run_ok("import sys\nprint('oops', file=sys.stderr)\nprint('fine')")
        self.assertEqual(execution.stderr, b"oops\n")
        self.assertEqual(execution.stdout, b"fine\n")

    def test_stdout_is_line_buffered_while_running(self):
        exec_id, token = self.worker.start("import time\nprint('early')\ntime.sleep(1)\nprint('late')")
        self.worker.out.wait_for(b"early\n", self.worker.out_pos, timeout=0.8)
        execution = self.worker.finish(exec_id, token)
        self.assertEqual(execution.stdout, b"early\nlate\n")

    def test_sys_stdout_is_utf8(self):
        execution = self.run_ok("print('h\\u00e9llo \\u2603')\nimport sys\nsys.stdout.encoding")
        self.assertEqual(execution.stdout, "héllo ☃\n".encode("utf-8"))
        self.assertEqual(execution.text, "'utf-8'")
        execution = self.run_ok("print('\\udcff')")
        self.assertEqual(execution.stdout, b"\\udcff\n")

    def test_non_utf8_bytes(self):
        execution = self.run_ok("import os; os.write(1, b'\\xff\\xfe\\n'); os.write(2, b'\\x80')")
        self.assertEqual(execution.stdout, b"\xff\xfe\n")
        self.assertEqual(execution.stderr, b"\x80")
        self.assertEqual(self.run_ok("print('ok')").stdout, b"ok\n")

    def test_closed_fd1_is_restored(self):
        self.worker.execute("import os\nos.close(1)")
        execution = self.run_ok("print('back')\nimport os; os.system('echo sub')")
        self.assertEqual(execution.stdout, b"back\nsub\n")

    def test_closed_fd2_and_replaced_fd1_are_restored(self):
        path = os.path.join(self.workspace, "elsewhere.txt")
        self.worker.execute("""
            import os
            f = os.open('elsewhere.txt', os.O_WRONLY | os.O_CREAT)
            os.dup2(f, 1)
            os.close(2)
            print('to the file')
        """)
        execution = self.run_ok("import sys\nprint('out')\nprint('err', file=sys.stderr)")
        self.assertEqual(execution.stdout, b"out\n")
        self.assertEqual(execution.stderr, b"err\n")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"to the file\n")

    def test_closed_or_replaced_sys_stdout_is_restored(self):
        self.worker.execute("import sys\nsys.stdout.close()")
        self.assertEqual(self.run_ok("print('one')").stdout, b"one\n")
        self.run_ok("import sys, io\nsys.stdout = io.StringIO()\nsys.stderr = None")
        execution = self.run_ok("import sys\nprint('two')\nprint('e', file=sys.stderr)\n"
                                "sys.__stdout__ is sys.stdout")
        self.assertEqual(execution.stdout, b"two\n")
        self.assertEqual(execution.stderr, b"e\n")
        self.assertEqual(execution.text, "True")

    def test_rich_frames_are_fenced_after_what_was_printed_before_them(self):
        execution = self.run_ok("""
            import sys
            print('before')
            print('err before', file=sys.stderr)
            display('shown')
            print('after')
            6 * 7
        """)
        display, result = execution.of_type("display")[0], execution.result
        self.assertEqual((display["fence"], result["fence"]), (1, 2))
        self.assertEqual(execution.stdout, b"before\nafter\n")
        # The result is the cell's last frame: it follows the sync markers (which pass fence 2)
        # instead of a fence of its own.
        self.assertEqual(execution.stdout_fences, [(1, len(b"before\n"))])
        self.assertEqual(execution.stderr_fences, [(1, len(b"err before\n"))])

    def test_a_last_result_or_error_needs_no_fence_of_its_own(self):
        execution = self.run_ok("print('before')\n6 * 7")
        self.assertEqual((execution.text, execution.result["fence"]), ("42", 1))
        self.assertEqual((execution.stdout, execution.stdout_fences), (b"before\n", []))
        self.assertEqual([f["type"] for f in execution.frames], ["result", "done"])
        failed = self.worker.execute("print('before')\n1 / 0")
        self.assertEqual((failed.error["ename"], failed.error["fence"]), ("ZeroDivisionError", 1))
        self.assertEqual((failed.stdout, failed.stdout_fences), (b"before\n", []))

    def test_a_cell_run_again_comes_from_the_cache_with_its_own_name(self):
        code = "def f():\n    raise ValueError('x')\nf()"
        first = self.worker.execute(code, count=1)
        second = self.worker.execute(code, count=2)
        for execution in (first, second):
            self.assertEqual(execution.error["ename"], "ValueError")
        first_tb, second_tb = "".join(first.error["traceback"]), "".join(second.error["traceback"])
        self.assertIn("<cell 1>", first_tb)
        self.assertIn("<cell 2>", second_tb)
        self.assertNotIn("<cell 1>", second_tb)

    def test_sync_marker_once_per_stream_after_all_output(self):
        code = """
            import sys, os
            for i in range(2000):
                print('line', i)
                print('err', i, file=sys.stderr)
            os.system('echo tail; echo tailerr >&2')
            print('end', end='')
        """
        first = self.run_ok(code)
        second = self.run_ok("print('next')")
        self.assertTrue(first.stdout.startswith(b"line 0\n"))
        self.assertTrue(first.stdout.endswith(b"tail\nend"))
        self.assertTrue(first.stderr.endswith(b"err 1999\ntailerr\n"))
        self.assertEqual(first.stdout.count(b"\n"), 2001)
        self.assertEqual(second.stdout, b"next\n")
        out, err = self.worker.out.snapshot(), self.worker.err.snapshot()
        for execution in (first, second):
            marker = SYNC_PREFIX + execution.token.encode() + b"\x00"
            self.assertEqual(out.count(marker), 1)
            self.assertEqual(err.count(marker), 1)
        self.assertEqual(out.count(SYNC_PREFIX), 2)
        self.assertEqual(err.count(SYNC_PREFIX), 2)

    def test_marker_written_even_when_cell_fails(self):
        execution = self.worker.execute("print('x')\n1/0")
        self.assertEqual(execution.status, "error")
        self.assertEqual(execution.stdout, b"x\n")


class ErrorTests(DriverTestCase):
    def test_exception_error_frame(self):
        execution = self.run_error("def f():\n    return 1 / 0\n\nf()", "ZeroDivisionError")
        error = execution.error
        self.assertEqual(error["id"], "exec-1")
        self.assertEqual(error["evalue"], "division by zero")
        joined = "".join(error["traceback"])
        self.assertTrue(error["traceback"][0].startswith("Traceback (most recent call last)"))
        self.assertIn('File "<cell 1>", line 4', joined)
        self.assertIn("return 1 / 0", joined)
        self.assertIn("ZeroDivisionError: division by zero", joined)
        self.assert_no_driver_frames(error)
        self.assertEqual(execution.frames[-1]["status"], "error")
        self.assertEqual(execution.frames[-2]["type"], "error")

    def test_traceback_shows_earlier_cell_source(self):
        self.run_ok("def g(x):\n    return x['missing']")
        execution = self.run_error("g({})", "KeyError")
        joined = "".join(execution.error["traceback"])
        self.assertIn("<cell 1>", joined)
        self.assertIn("<cell 2>", joined)
        self.assertIn("return x['missing']", joined)
        self.assertEqual(execution.error["evalue"], "'missing'")
        self.assert_no_driver_frames(execution.error)

    def test_chained_exception(self):
        code = "try:\n    1/0\nexcept Exception as e:\n    raise ValueError('bad') from e"
        execution = self.run_error(code, "ValueError")
        joined = "".join(execution.error["traceback"])
        self.assertIn("ZeroDivisionError", joined)
        self.assertIn("direct cause", joined)
        self.assert_no_driver_frames(execution.error)

    def test_syntax_error(self):
        execution = self.run_error("x = 1\ny = (", "SyntaxError")
        error = execution.error
        joined = "".join(error["traceback"])
        self.assertIn("<cell 1>", joined)
        self.assertIn("y = (", joined)
        self.assertNotIn("Traceback (most recent call last)", joined)
        self.assert_no_driver_frames(error)
        self.assertEqual(self.run_ok("'x' in dir()").text, "False")

    def test_compile_time_errors(self):
        self.run_error("return 5", "SyntaxError")
        self.run_error("def f():\n  x = 1\n   y = 2", "IndentationError")
        execution = self.worker.execute("'a'\n\x00")  # SyntaxError or ValueError by version
        self.assertEqual(execution.status, "error")
        self.assertIn("null bytes", execution.error["evalue"])
        self.assertEqual(self.run_ok("3").text, "3")

    def test_system_exit_is_an_error(self):
        execution = self.run_error("import sys; sys.exit(3)", "SystemExit")
        self.assertEqual(execution.error["evalue"], "3")
        self.run_error("exit()", "SystemExit")
        self.assertEqual(self.run_ok("4").text, "4")
        self.assertIsNone(self.worker.proc.poll())

    def test_exception_from_result_repr_does_not_kill(self):
        execution = self.run_ok("class Bad:\n    def __repr__(self): raise RuntimeError\nBad()")
        self.assertEqual(execution.text, "<unrepresentable Bad object>")

    def test_unprintable_exception(self):
        code = "class E(Exception):\n    def __str__(self): raise RuntimeError\nraise E()"
        execution = self.run_error(code, "E")
        self.assertEqual(execution.error["evalue"], "<exception str() failed>")

    def test_bad_exec_frame_still_gets_done(self):
        self.worker.send({"type": "exec", "id": "bad", "code": None, "execution_count": 1,
                          "sync_token": "abc"})
        execution = self.worker.finish("bad", "abc")
        self.assertEqual(execution.status, "error")
        self.assertEqual(execution.error["id"], "bad")
        self.assertEqual(self.run_ok("5").text, "5")

    def test_recursion_error(self):
        execution = self.run_error("def r(): return r()\nr()", "RecursionError")
        self.assertLess(len(execution.error["traceback"]), 50)
        self.assertEqual(self.run_ok("6").text, "6")


class RichOutputTests(DriverTestCase):
    def test_repr_html(self):
        code = """
            class H:
                def _repr_html_(self): return '<b>hi</b>'
                def __repr__(self): return 'H()'
            H()
        """
        self.assertEqual(self.run_ok(code).result["data"],
                         {"text/html": "<b>hi</b>", "text/plain": "H()"})

    def test_failing_and_none_repr_methods_are_skipped(self):
        code = """
            class H:
                def _repr_html_(self): raise ValueError('nope')
                def _repr_markdown_(self): return None
                def _repr_latex_(self): return 5
                def __repr__(self): return 'H()'
            H()
        """
        self.assertEqual(self.run_ok(code).result["data"], {"text/plain": "H()"})

    def test_image_and_json_reprs(self):
        code = """
            class R:
                def _repr_png_(self): return b'\\x89PNG'
                def _repr_jpeg_(self): return 'already-b64'
                def _repr_json_(self): return {'a': [1, 2]}
                def _repr_svg_(self): return '<svg/>'
            R()
        """
        data = self.run_ok(code).result["data"]
        self.assertEqual(base64.b64decode(data["image/png"]), b"\x89PNG")
        self.assertEqual(data["image/jpeg"], "already-b64")
        self.assertEqual(data["application/json"], {"a": [1, 2]})
        self.assertEqual(data["image/svg+xml"], "<svg/>")
        self.assertTrue(data["text/plain"].startswith("<__main__.R object"))

    def test_json_values_that_cannot_be_sent_are_dropped(self):
        code = """
            class R:
                def _repr_json_(self): return {'x': float('nan')}
                def _repr_html_(self): return object()
            R()
        """
        self.assertEqual(list(self.run_ok(code).result["data"]), ["text/plain"])

    def test_repr_mimebundle(self):
        code = """
            class M:
                def _repr_mimebundle_(self, include=None, exclude=None):
                    return {'text/markdown': '*m*', 'text/plain': 'M!'}, {'text/markdown': {'k': 1}}
                def _repr_html_(self): return '<i>m</i>'
            display(M())
            class D:
                def _repr_mimebundle_(self, include=None, exclude=None):
                    return {'application/vnd.x+json': {'v': 1}}
            D()
        """
        execution = self.run_ok(code)
        shown = execution.of_type("display")[0]
        self.assertEqual(shown["data"], {"text/markdown": "*m*", "text/plain": "M!",
                                         "text/html": "<i>m</i>"})
        self.assertEqual(shown["metadata"], {"text/markdown": {"k": 1}})
        self.assertEqual(execution.result["data"]["application/vnd.x+json"], {"v": 1})
        self.assertIn("text/plain", execution.result["data"])

    def test_getattr_catch_all_objects(self):
        code = """
            class Any:
                def __getattr__(self, name): return lambda *a, **k: '<x>'
                def __repr__(self): return 'Any()'
            Any()
        """
        self.assertEqual(self.run_ok(code).result["data"], {"text/plain": "Any()"})

    def test_classes_are_not_rendered_with_their_methods(self):
        code = "class H:\n    def _repr_html_(self): return '<b/>'\nH"
        self.assertEqual(list(self.run_ok(code).result["data"]), ["text/plain"])


FAKE_PYPLOT = '''
from matplotlib.figure import Figure
_figures = {}
def figure(num=None):
    if num is None:
        num = max(_figures, default=0) + 1
    if num not in _figures:
        _figures[num] = Figure(num)
    return _figures[num]
def get_fignums():
    return sorted(_figures)
def close(which):
    assert which == "all"
    _figures.clear()
'''

FAKE_FIGURE = '''
class Canvas:
    def __init__(self, figure):
        self.figure = figure
class Figure:
    def __init__(self, num=0):
        self.num = num
        self.canvas = Canvas(self)
    def savefig(self, buf, format=None, bbox_inches=None):
        assert format == "png" and bbox_inches == "tight"
        buf.write(b"PNG-%d" % self.num)
    def __repr__(self):
        return "<Figure %d>" % self.num
'''


class FakeMatplotlibTests(DriverTestCase):
    """The inline-figure logic, against a stand-in `matplotlib` package in the workspace."""

    def setUp(self):
        super().setUp()
        package = os.path.join(self.workspace, "matplotlib")
        os.mkdir(package)
        for name, text in (("__init__.py", ""), ("pyplot.py", FAKE_PYPLOT),
                           ("figure.py", FAKE_FIGURE)):
            with open(os.path.join(package, name), "w") as f:
                f.write(text)

    def test_figure_result_is_png_and_not_sent_twice(self):
        execution = self.run_ok("import matplotlib.pyplot as plt\nplt.figure(); plt.figure(2)")
        data = execution.result["data"]
        self.assertEqual(base64.b64decode(data["image/png"]), b"PNG-2")
        self.assertEqual(data["text/plain"], "<Figure 2>")
        displays = execution.of_type("display")
        self.assertEqual([base64.b64decode(d["data"]["image/png"]) for d in displays], [b"PNG-1"])
        self.assertEqual(self.run_ok("plt.get_fignums()").text, "[]")

    def test_open_figures_flushed_even_after_error(self):
        execution = self.run_error("import matplotlib.pyplot as plt\nplt.figure()\n1/0",
                                   "ZeroDivisionError")
        self.assertEqual(len(execution.of_type("display")), 1)
        self.assertEqual(execution.frames[-2]["type"], "display")


@unittest.skipUnless(_have_matplotlib(), "matplotlib is not installed")
class MatplotlibTests(DriverTestCase):
    def test_figure_result_is_png(self):
        execution = self.run_ok("""
            import matplotlib
            matplotlib.use('Agg')
            from matplotlib.figure import Figure
            fig = Figure()
            fig.add_subplot().plot([1, 2, 3])
            fig
        """, timeout=120)
        png = base64.b64decode(execution.result["data"]["image/png"])
        self.assertTrue(png.startswith(b"\x89PNG"))
        self.assertIn("Figure", execution.result["data"]["text/plain"])

    def test_open_pyplot_figures_are_displayed_and_closed(self):
        execution = self.run_ok("""
            import matplotlib.pyplot as plt
            plt.plot([1, 2, 3])
            fig2 = plt.figure()
            plt.plot([3, 2, 1])
            fig2
        """, timeout=120)
        self.assertIn("image/png", execution.result["data"])
        displays = execution.of_type("display")
        self.assertEqual(len(displays), 1)
        self.assertTrue(base64.b64decode(displays[0]["data"]["image/png"]).startswith(b"\x89PNG"))
        self.assertEqual(self.run_ok("plt.get_fignums()").text, "[]")

    def test_show_displays_with_the_inline_backend(self):
        execution = self.run_ok("""
            import matplotlib, matplotlib.pyplot as plt
            print(matplotlib.get_backend())
            plt.plot([1, 2, 3])
            plt.show()
            print('after show')
        """, timeout=120)
        self.assertEqual(execution.stdout, b"module://corral_inline\nafter show\n")
        self.assertEqual(execution.stderr, b"")
        displays = execution.of_type("display")
        self.assertEqual(len(displays), 1)
        self.assertIn("image/png", displays[0]["data"])


def _have_ipython():
    try:
        import IPython  # noqa: F401
        return True
    except ImportError:
        return False


@unittest.skipUnless(_have_ipython(), "IPython is not installed")
class IPythonDisplayTests(DriverTestCase):
    def test_ipython_display_functions_give_rich_output(self):
        execution = self.run_ok("""
            from IPython.display import display, HTML, Markdown, clear_output, update_display
            display(HTML('<b>bold</b>'))
            h = display(Markdown('*one*'), display_id='m')
            update_display(Markdown('*two*'), display_id='m')
            clear_output(wait=True)
        """, timeout=120)
        frames = [f for f in execution.frames if f["type"] in ("display", "clear_output")]
        self.assertEqual([f["type"] for f in frames], ["display", "display", "display", "clear_output"])
        self.assertEqual(frames[0]["data"]["text/html"], "<b>bold</b>")
        self.assertEqual((frames[1]["display_id"], frames[1]["data"]["text/markdown"]), ("m", "*one*"))
        self.assertEqual((frames[2].get("update"), frames[2]["data"]["text/markdown"]), (True, "*two*"))
        self.assertEqual(execution.stdout, b"")


class AsyncTests(DriverTestCase):
    def test_top_level_await(self):
        execution = self.run_ok("import asyncio\nawait asyncio.sleep(0)\n5")
        self.assertEqual(execution.text, "5")
        self.assertEqual(self.run_ok("await asyncio.sleep(0, result='r')").text, "'r'")
        self.assertEqual(self.run_ok("[await asyncio.sleep(0, result=i) for i in range(3)]").text,
                         "[0, 1, 2]")

    def test_event_loop_persists_between_cells(self):
        self.run_ok("import asyncio\nloop1 = asyncio.get_running_loop() if False else None\n"
                    "async def cur(): return asyncio.get_running_loop()\nl1 = await cur()")
        self.assertEqual(self.run_ok("(await cur()) is l1").text, "True")

    def test_asyncio_run_in_a_cell_then_await(self):
        self.run_ok("import asyncio\nasync def f(): return 1\nasyncio.run(f())")
        self.assertEqual(self.run_ok("await f()").text, "1")

    def test_await_error_traceback(self):
        execution = self.run_error("import asyncio\nasync def boom():\n    raise KeyError('k')\n"
                                   "await boom()", "KeyError")
        joined = "".join(execution.error["traceback"])
        self.assertIn("<cell 1>", joined)
        self.assertIn("raise KeyError('k')", joined)
        self.assert_no_driver_frames(execution.error)


class InterruptTests(DriverTestCase):
    def interrupt_when_started(self, code):
        exec_id, token = self.worker.start(code)
        self.worker.out.wait_for(b"started\n", self.worker.out_pos)
        time.sleep(0.1)
        began = time.monotonic()
        self.worker.proc.send_signal(signal.SIGINT)
        execution = self.worker.finish(exec_id, token, timeout=10)
        self.assertLess(time.monotonic() - began, 5)
        self.assertEqual(execution.status, "error")
        self.assertEqual(execution.error["ename"], "KeyboardInterrupt")
        self.assert_no_driver_frames(execution.error)
        return execution

    def test_sigint_interrupts_sleep(self):
        execution = self.interrupt_when_started("import time\nprint('started')\ntime.sleep(30)")
        self.assertIn("time.sleep(30)", "".join(execution.error["traceback"]))
        self.assertEqual(self.run_ok("1 + 1").text, "2")

    def test_sigint_interrupts_busy_loop(self):
        self.interrupt_when_started("print('started')\nwhile True:\n    pass")
        self.assertEqual(self.run_ok("'alive'").text, "'alive'")

    def test_sigint_interrupts_await(self):
        self.interrupt_when_started("import asyncio\nprint('started')\nawait asyncio.sleep(30)")
        self.assertEqual(self.run_ok("await asyncio.sleep(0, result=3)").text, "3")

    def test_sigint_while_idle_is_ignored(self):
        self.run_ok("x = 1")
        for _ in range(5):
            self.worker.proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        time.sleep(0.2)
        self.assertIsNone(self.worker.proc.poll())
        self.assertEqual(self.run_ok("x").text, "1")
        reply = self.worker.complete("x")
        self.assertIn("x", reply["matches"])

    def test_sigint_storm_around_cells(self):
        # Big frames take many send() calls: an interrupt must never tear one, and one that
        # lands between cells must not kill the driver.
        self.run_ok("BIG = 'x' * 3000000")
        stop = threading.Event()
        rng = random.Random(7)

        def storm():
            while not stop.is_set():
                try:
                    self.worker.proc.send_signal(signal.SIGINT)
                except OSError:
                    return
                time.sleep(rng.uniform(0.001, 0.03))

        thread = threading.Thread(target=storm)
        thread.start()
        try:
            for i in range(60):
                execution = self.worker.execute("display(BIG)\ndisplay(%d)\n%d" % (i, i))
                self.assertIn(execution.status, ("ok", "error"))
                if execution.status == "error":
                    self.assertEqual(execution.error["ename"], "KeyboardInterrupt")
        finally:
            stop.set()
            thread.join(5)
        self.assertIsNone(self.worker.proc.poll())
        self.assertEqual(self.run_ok("'survived'").text, "'survived'")

    def test_interrupt_sent_right_after_exec_reaches_the_cell(self):
        # The server may interrupt as soon as it has written the exec frame, before the driver
        # has read it: the interrupt must apply to that cell, not be lost.
        for _ in range(5):
            exec_id, token = self.worker.start("import time\ntime.sleep(30)")
            self.worker.proc.send_signal(signal.SIGINT)
            execution = self.worker.finish(exec_id, token, timeout=10)
            self.assertEqual(execution.status, "error")
            self.assertEqual(execution.error["ename"], "KeyboardInterrupt")
        self.assertEqual(self.run_ok("'next'").text, "'next'")

    def test_cell_installed_handler_does_not_outlive_cell(self):
        self.run_ok("import signal\nsignal.signal(signal.SIGINT, signal.SIG_DFL)")
        self.worker.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        self.assertIsNone(self.worker.proc.poll())
        self.assertEqual(self.run_ok("7").text, "7")


class CompletionTests(DriverTestCase):
    def test_keyword_and_builtin(self):
        reply = self.worker.complete("imp")
        self.assertIn("import", reply["matches"])
        self.assertEqual((reply["cursor_start"], reply["cursor_end"]), (0, 3))
        self.assertIn("print", self.worker.complete("pri")["matches"])

    def test_attribute(self):
        self.run_ok("import os")
        reply = self.worker.complete("x = os.pa")
        self.assertIn("path", reply["matches"])
        self.assertIn("pardir", reply["matches"])
        self.assertEqual((reply["cursor_start"], reply["cursor_end"]), (7, 9))

    def test_user_names_and_cursor_in_middle(self):
        self.run_ok("my_variable = 1\nmy_value = 2")
        reply = self.worker.complete("print(my_v) + 1", cursor_pos=10)
        self.assertEqual(reply["matches"], ["my_value", "my_variable"])
        self.assertEqual((reply["cursor_start"], reply["cursor_end"]), (6, 10))

    def test_nonsense_gives_no_matches(self):
        self.assertEqual(self.worker.complete("zzzqqq")["matches"], [])
        self.assertEqual(self.worker.complete("undefined_thing.at")["matches"], [])
        reply = self.worker.complete("abc", cursor_pos=99)
        self.assertEqual(reply["cursor_end"], 3)


class StdinTests(DriverTestCase):
    def test_requested_input_waits_for_the_reply(self):
        exec_id, token = self.worker.start("name = input('who? ')\nprint('hello', name)",
                                           stdin="requested")
        request = self.worker.recv()
        self.assertEqual(request["type"], "input_request", request)
        self.assertEqual((request["id"], request["prompt"], request["password"]),
                         (exec_id, "who? ", False))
        self.worker.send({"type": "input_reply", "id": exec_id, "value": "ada"})
        execution = self.worker.finish(exec_id, token)
        self.assertEqual(execution.status, "ok", execution.frames)
        self.assertEqual(execution.stdout, b"hello ada\n")

    def test_getpass_asks_for_a_password(self):
        exec_id, token = self.worker.start("import getpass\nsecret = getpass.getpass()\nlen(secret)",
                                           stdin="requested")
        request = self.worker.recv()
        self.assertEqual((request["type"], request["password"], request["prompt"]),
                         ("input_request", True, "Password: "))
        self.worker.send({"type": "input_reply", "id": exec_id, "value": "hunter2"})
        execution = self.worker.finish(exec_id, token)
        self.assertEqual(execution.text, "7")

    def test_refused_input_raises_at_once(self):
        exec_id, token = self.worker.start("input('x')", stdin="refused")
        execution = self.worker.finish(exec_id, token)
        self.assertEqual(execution.error["ename"], "StdinNotImplementedError")
        self.assertIn("does not support input requests", execution.error["evalue"])

    def test_empty_stdin_is_end_of_file(self):
        execution = self.worker.execute("input()")
        self.assertEqual(execution.error["ename"], "EOFError")

    def test_an_interrupt_while_waiting_for_input_ends_the_cell(self):
        exec_id, token = self.worker.start("input()", stdin="requested")
        self.assertEqual(self.worker.recv()["type"], "input_request")
        self.worker.proc.send_signal(signal.SIGINT)
        execution = self.worker.finish(exec_id, token)
        self.assertEqual(execution.error["ename"], "KeyboardInterrupt")
        # A late answer is ignored and the next cell runs normally.
        self.worker.send({"type": "input_reply", "id": exec_id, "value": "late"})
        self.assertEqual(self.worker.execute("6 * 7").text, "42")

    def test_the_mode_is_per_execution(self):
        exec_id, token = self.worker.start("input()", stdin="refused")
        self.worker.finish(exec_id, token)
        self.assertEqual(self.worker.execute("input()").error["ename"], "EOFError")


class HistoryTests(DriverTestCase):
    def test_without_history_the_result_is_not_bound(self):
        self.run_ok("1 + 1")
        exec_id, token = self.worker.start("40 + 2", count=1)
        self.worker.finish(exec_id, token)
        frame = {"type": "exec", "id": "quiet", "code": "'not kept'", "execution_count": 1,
                 "sync_token": "ab", "store_history": False}
        self.worker.send(frame)
        while self.worker.recv()["type"] != "done":
            pass
        self.assertEqual(self.run_ok("_", count=2).text, "42")


class DisplayIdTests(DriverTestCase):
    def test_display_ids_updates_and_clear_output(self):
        execution = self.run_ok("""
            h = display('first', display_id='d1')
            h.update('second')
            update_display('third', display_id='d1')
            auto = display('x', display_id=True)
            clear_output(wait=True)
            print(type(h).__name__, len(auto.display_id))
        """)
        frames = [f for f in execution.frames if f["type"] in ("display", "clear_output")]
        self.assertEqual([f["type"] for f in frames],
                         ["display", "display", "display", "display", "clear_output"])
        self.assertEqual([(f.get("display_id"), f.get("update", False), f["data"]["text/plain"])
                          for f in frames[:3]],
                         [("d1", False, "'first'"), ("d1", True, "'second'"), ("d1", True, "'third'")])
        self.assertEqual(len(frames[3]["display_id"]), 32)
        self.assertTrue(frames[4]["wait"])
        self.assertEqual(execution.stdout, b"DisplayHandle 32\n")

    def test_update_needs_a_display_id(self):
        self.run_error("display(1, update=True)", "TypeError")


class InspectionTests(DriverTestCase):
    def inspect(self, code, cursor_pos=None, detail_level=0):
        self.worker.send({"type": "inspect", "id": "i1", "code": code,
                          "cursor_pos": len(code) if cursor_pos is None else cursor_pos,
                          "detail_level": detail_level})
        reply = self.worker.recv()
        self.assertEqual((reply["type"], reply["id"]), ("inspect_reply", "i1"), reply)
        return reply

    def is_complete(self, code):
        self.worker.send({"type": "is_complete", "id": "c1", "code": code})
        reply = self.worker.recv()
        self.assertEqual((reply["type"], reply["id"]), ("is_complete_reply", "c1"), reply)
        return reply["status"], reply["indent"]

    def test_inspect_shows_signature_and_docstring(self):
        self.run_ok('''
            def area(width, height=2):
                "The area of a rectangle."
                return width * height
        ''')
        reply = self.inspect("area(3", cursor_pos=6)
        self.assertTrue(reply["found"])
        text = reply["data"]["text/plain"]
        self.assertIn("area(width, height=2)", text)
        self.assertIn("The area of a rectangle.", text)
        detailed = self.inspect("area", detail_level=1)["data"]["text/plain"]
        self.assertIn("return width * height", detailed)

    def test_inspect_of_an_unknown_name_finds_nothing(self):
        reply = self.inspect("no_such_name")
        self.assertEqual((reply["found"], reply["data"]), (False, {}))

    def test_inspect_of_attributes_and_builtins(self):
        self.run_ok("import os")
        self.assertIn("Signature: join(", self.inspect("os.path.join")["data"]["text/plain"])
        self.assertTrue(self.inspect("len")["found"])

    def test_evaluate_user_expressions(self):
        self.run_ok("x = 6")
        self.worker.send({"type": "evaluate", "id": "e1",
                          "expressions": [["double", "x * 2"], ["bad", "1 / 0"]]})
        reply = self.worker.recv()
        self.assertEqual((reply["type"], reply["id"]), ("evaluate_reply", "e1"), reply)
        (first, good), (second, bad) = reply["results"]
        self.assertEqual((first, good["status"], good["data"]["text/plain"]), ("double", "ok", "12"))
        self.assertEqual((second, bad["status"], bad["ename"]), ("bad", "error", "ZeroDivisionError"))

    def test_evaluate_tracebacks_have_no_driver_frames(self):
        self.worker.send({"type": "evaluate", "id": "e2", "expressions": [["bad", "undefined_name"]]})
        (_, bad), = self.worker.recv()["results"]
        self.assertEqual(bad["ename"], "NameError")
        self.assertFalse(any(DRIVER_NAME in line for line in bad["traceback"]), bad["traceback"])

    def test_is_complete(self):
        self.assertEqual(self.is_complete("x = 1"), ("complete", ""))
        self.assertEqual(self.is_complete("for i in range(3):"), ("incomplete", "    "))
        self.assertEqual(self.is_complete("x = (1,"), ("incomplete", ""))
        self.assertEqual(self.is_complete("def f(:"), ("invalid", ""))


class StartupTimeTests(unittest.TestCase):
    def test_ready_is_fast(self):
        workspace = tempfile.mkdtemp(prefix="corral-driver-test-")
        self.addCleanup(shutil.rmtree, workspace, ignore_errors=True)
        # The baseline is a bare interpreter started the same way (launcher included).
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], env=_worker_env(workspace), timeout=30)
        baseline = time.monotonic() - began
        began = time.monotonic()
        worker = Worker(workspace)
        self.addCleanup(worker.close)
        elapsed = time.monotonic() - began
        # Two interpreter starts (launcher + driver) plus the driver's own work.
        self.assertLess(elapsed, 2 * baseline + 0.5, (elapsed, baseline))


if __name__ == "__main__":
    unittest.main()
