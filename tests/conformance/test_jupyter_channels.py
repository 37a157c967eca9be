"""Kernel channels (issue 11) with real clients: jupyter_server 2.21.1 in gateway mode
(`--gateway-url`) at corral, a session created through jupyter_server's REST API and its
channels websocket opened *through jupyter_server* with websocket-client, speaking the Jupyter
messaging protocol (5.3) as a notebook front-end does; the assertions are on the messages a
front-end renders.

The same tests run against Jupyter Kernel Gateway (CONFORMANCE_KERNEL_GATEWAY, see conftest.py)
to check the tests themselves; what differs by design (kernel_info's implementation, corral's own
execution counts) is asserted per gateway.
"""

import base64
import datetime
import json
import re
import threading
import time
import urllib.parse
import uuid

import pytest
import requests
import websocket

TIMEOUT = 30
PROTOCOL_VERSION = "5.3"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"


def plain(text):
    return ANSI.sub("", text)


def parse_date(value):
    assert isinstance(value, str), f"header date {value!r} is not an ISO 8601 string"
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def build_message(session, channel, msg_type, content, parent_header=None):
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": "conformance",
            "session": session,
            "msg_type": msg_type,
            "version": PROTOCOL_VERSION,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        "parent_header": parent_header or {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


class Reply:
    """Everything one request caused: the reply on its channel and the iopub messages whose
    parent is the request, in arrival order."""

    def __init__(self, request):
        self.request = request
        self.msg_id = request["header"]["msg_id"]
        self.reply = None
        self.iopub = []
        self.stdin = []

    @property
    def content(self):
        return self.reply["content"]

    def types(self):
        return [message["msg_type"] for message in self.iopub]

    def outputs(self, *types):
        return [message for message in self.iopub if message["msg_type"] in types]

    def stream_text(self, name="stdout"):
        return "".join(m["content"]["text"] for m in self.outputs("stream") if m["content"]["name"] == name)

    def ok(self):
        assert self.content["status"] == "ok", (
            f"{self.content.get('ename')}: {self.content.get('evalue')}\n"
            + plain("\n".join(self.content.get("traceback", [])))
        )
        return self

    def idle(self):
        return any(
            m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in self.iopub
        )


class Channels:
    """One websocket to /api/kernels/{id}/channels, JSON text frames with a `channel` field."""

    def __init__(self, ws_url, token=None, subprotocols=None):
        headers = [f"Authorization: token {token}"] if token else []
        self.ws = websocket.create_connection(
            ws_url, timeout=TIMEOUT, header=headers, subprotocols=subprotocols
        )
        self.session = uuid.uuid4().hex
        self.seen = []  # every message received, in order

    def close(self):
        self.ws.close()

    def message(self, channel, msg_type, content, parent_header=None):
        return build_message(self.session, channel, msg_type, content, parent_header)

    def send(self, channel, msg_type, content, parent_header=None):
        message = self.message(channel, msg_type, content, parent_header)
        self.ws.send(json.dumps(message))
        return message

    def receive(self, deadline):
        opcode, data = receive_frame(self.ws, deadline)
        assert opcode == websocket.ABNF.OPCODE_TEXT, f"expected a JSON text frame, got opcode {opcode}"
        message = json.loads(data)
        check_message(message)
        self.seen.append(message)
        return message

    def wait_for(self, predicate, timeout=TIMEOUT, what="a message"):
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            try:
                message = self.receive(deadline)
            except TimeoutError:
                raise AssertionError(f"never received {what}; got {summary(skipped)}") from None
            if predicate(message):
                return message
            skipped.append(message)

    def request(self, channel, msg_type, content, timeout=TIMEOUT, on_stdin=None):
        """Sends a request; returns once its reply and its iopub `idle` have both arrived."""
        request = self.send(channel, msg_type, content)
        result = Reply(request)
        deadline = time.monotonic() + timeout
        while result.reply is None or not result.idle():
            try:
                message = self.receive(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"{msg_type}: no reply and idle before the deadline; for it: reply={result.reply is not None}, "
                    f"iopub {result.types()}; all seen: {summary(self.seen[-30:])}"
                ) from None
            if message["parent_header"].get("msg_id") != result.msg_id:
                continue
            if message["channel"] == "iopub":
                result.iopub.append(message)
            elif message["channel"] == "stdin":
                result.stdin.append(message)
                assert on_stdin is not None, f"unexpected stdin message {message['msg_type']}"
                on_stdin(self, message)
            else:
                assert message["channel"] == channel, f"{message['msg_type']} on {message['channel']}"
                assert result.reply is None, "two replies to one request"
                result.reply = message
        assert result.reply["msg_type"] == msg_type.replace("_request", "_reply")
        return result

    def execute(self, code, timeout=TIMEOUT, on_stdin=None, **options):
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        content.update(options)
        return self.request("shell", "execute_request", content, timeout=timeout, on_stdin=on_stdin)


def receive_frame(ws, deadline):
    """The next data frame, by the deadline however often the peer pings in between (a socket
    timeout alone restarts with every ping)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no message before the deadline")
        ws.settimeout(remaining)
        try:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            raise TimeoutError("no message before the deadline") from None
        if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
            continue  # websocket-client has answered a ping already
        assert opcode != websocket.ABNF.OPCODE_CLOSE, "the server closed the websocket"
        return opcode, frame.data


def summary(messages):
    return [
        (m.get("channel"), m.get("msg_type"), (m.get("content") or {}).get("execution_state"),
         (m.get("parent_header") or {}).get("msg_id", "")[:8])
        for m in messages
    ]


def check_message(message):
    """What every message must carry (the Jupyter messaging spec's message model)."""
    for field in ("header", "parent_header", "metadata", "content", "channel"):
        assert field in message, f"message without {field}: {message}"
    header = message["header"]
    for field in ("msg_id", "msg_type", "session", "date", "version", "username"):
        assert field in header, f"header without {field}: {header}"
    assert header["msg_id"] and header["msg_type"] == message["msg_type"]
    assert message["channel"] in ("shell", "iopub", "stdin", "control"), message["channel"]
    parse_date(header["date"])


def assert_renders_as_cell(result, outputs):
    """status busy -> execute_input -> outputs (these types, in order) -> status idle, every
    message a child of the request, fresh ids, the asker's session in parent_header."""
    types = result.types()
    assert types == ["status", "execute_input", *outputs, "status"], types
    assert [m["content"]["execution_state"] for m in result.outputs("status")] == ["busy", "idle"]
    ids = {m["header"]["msg_id"] for m in result.iopub} | {result.reply["header"]["msg_id"]}
    assert len(ids) == len(result.iopub) + 1 and result.msg_id not in ids
    for message in [*result.iopub, result.reply]:
        assert message["parent_header"]["msg_id"] == result.msg_id
        assert message["parent_header"]["session"] == result.request["header"]["session"]
        assert message["parent_header"]["msg_type"] == "execute_request"
    started = result.outputs("execute_input")[0]["content"]
    assert started["code"] == result.request["content"]["code"]
    assert started["execution_count"] == result.content["execution_count"]
    for message in result.outputs("execute_result"):
        assert message["content"]["execution_count"] == result.content["execution_count"]


# ---------------------------------------------------------------------------------------------
# Fixtures: a notebook session through jupyter_server, and its channels through jupyter_server.


class Notebook:
    def __init__(self, jupyter, gateway, session):
        self.jupyter = jupyter
        self.gateway = gateway
        self.session = session
        self.kernel_id = session["kernel"]["id"]
        self.sockets = []

    def connect(self, session_id=None, subprotocols=None):
        query = {"session_id": session_id or uuid.uuid4().hex}
        url = (f"{self.jupyter.ws_base_url}/api/kernels/{self.kernel_id}/channels?"
               f"{urllib.parse.urlencode(query)}")
        channels = Channels(url, token=self.jupyter.TOKEN, subprotocols=subprotocols)
        self.sockets.append(channels)
        return channels

    def rest(self, method, path, **kwargs):
        return self.jupyter.http.request(method, self.jupyter.url(path), timeout=TIMEOUT, **kwargs)

    def corral_execution_count(self):
        return self.gateway.native_session(self.kernel_id)["execution_count"]


def create_notebook_session(jupyter, path):
    created = jupyter.http.post(
        jupyter.url("/api/sessions"),
        json={"path": path, "type": "notebook", "name": path, "kernel": {"name": "python3"}},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text + jupyter.log_text()[-3000:]
    return created.json()


@pytest.fixture
def notebook(gateway_jupyter, kernel_gateway):
    session = create_notebook_session(gateway_jupyter, f"channels-{uuid.uuid4().hex[:8]}.ipynb")
    book = Notebook(gateway_jupyter, kernel_gateway, session)
    try:
        yield book
    finally:
        for channels in book.sockets:
            channels.close()
        deleted = gateway_jupyter.http.delete(gateway_jupyter.url(f"/api/sessions/{session['id']}"),
                                              timeout=TIMEOUT)
        assert deleted.status_code == 204, deleted.text


@pytest.fixture
def channels(notebook):
    return notebook.connect()


# ---------------------------------------------------------------------------------------------


def test_kernel_info_and_other_shell_requests(notebook, channels, kernel_gateway):
    info = channels.request("shell", "kernel_info_request", {})
    content = info.content
    assert content["status"] == "ok"
    assert content["protocol_version"] == PROTOCOL_VERSION
    assert content["language_info"]["name"] == "python"
    assert content["language_info"]["file_extension"] == ".py"
    assert re.match(r"^3\.\d+\.\d+", content["language_info"]["version"])
    expected = "corral" if kernel_gateway.is_corral else "ipython"
    assert content["implementation"] == expected
    assert [m["content"]["execution_state"] for m in info.outputs("status")] == ["busy", "idle"]

    comms = channels.request("shell", "comm_info_request", {})
    assert comms.content["status"] == "ok" and comms.content["comms"] == {}

    channels.execute("history_marker = 1")
    history = channels.request("shell", "history_request",
                               {"output": False, "raw": True, "hist_access_type": "tail", "n": 10})
    assert history.content["status"] == "ok"
    assert any(entry[2] == "history_marker = 1" for entry in history.content["history"]), history.content

    # kernel_info on the control channel too (JupyterLab asks there).
    control = channels.request("control", "kernel_info_request", {})
    assert control.reply["channel"] == "control"
    assert control.content["protocol_version"] == PROTOCOL_VERSION


def test_cells_keep_state_and_render_in_order(notebook, channels, kernel_gateway):
    first = channels.execute("x = 20")
    first.ok()
    assert_renders_as_cell(first, [])
    second = channels.execute("x * 2 + 2")
    assert_renders_as_cell(second, ["execute_result"])
    result = second.outputs("execute_result")[0]["content"]
    assert result["data"]["text/plain"] == "42"
    assert second.content["execution_count"] == first.content["execution_count"] + 1
    if kernel_gateway.is_corral:
        assert notebook.corral_execution_count() == second.content["execution_count"]

    # silent: no execute_input, no result, the count does not move; user_expressions answered.
    quiet = channels.execute("y = x + 1\ny", silent=True, store_history=False)
    assert quiet.types() == ["status", "status"], quiet.types()
    expressions = channels.execute("z = 1", user_expressions={"double": "x * 2", "bad": "nope"})
    assert expressions.content["execution_count"] == second.content["execution_count"] + 1
    assert expressions.content["user_expressions"]["double"]["status"] == "ok"
    assert expressions.content["user_expressions"]["double"]["data"]["text/plain"] == "40"
    assert expressions.content["user_expressions"]["bad"]["status"] == "error"
    assert expressions.content["user_expressions"]["bad"]["ename"] == "NameError"
    assert channels.execute("y").outputs("execute_result")[0]["content"]["data"]["text/plain"] == "21"
    if kernel_gateway.is_corral:
        assert notebook.corral_execution_count() == expressions.content["execution_count"] + 1


def test_print_streams(channels):
    result = channels.execute("import sys\nprint('hello', 'world')\nprint('oops', file=sys.stderr)\nprint(3)")
    result.ok()
    assert result.stream_text("stdout") == "hello world\n3\n"
    assert result.stream_text("stderr") == "oops\n"
    types = result.types()
    assert types[:2] == ["status", "execute_input"] and types[-1] == "status"
    assert set(types[2:-1]) == {"stream"}
    assert_renders_as_cell(result, types[2:-1])


def test_raise_gives_error_and_error_reply(notebook, channels, kernel_gateway):
    result = channels.execute("def f():\n    return 1 / 0\nf()")
    assert_renders_as_cell(result, ["error"])
    error = result.outputs("error")[0]["content"]
    assert error["ename"] == "ZeroDivisionError"
    assert error["evalue"] == "division by zero"
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert all(isinstance(line, str) for line in error["traceback"])
    joined = plain("\n".join(error["traceback"]))
    assert "ZeroDivisionError" in joined and "1 / 0" in joined
    reply = result.content
    assert reply["status"] == "error"
    assert (reply["ename"], reply["evalue"]) == ("ZeroDivisionError", "division by zero")
    assert reply["traceback"] == error["traceback"]
    if kernel_gateway.is_corral:
        assert notebook.corral_execution_count() == reply["execution_count"]
    # The next cell runs (the error only aborts requests queued behind it).
    after = channels.execute("'still alive'")
    after.ok()
    assert after.content["execution_count"] == reply["execution_count"] + 1


def test_stop_on_error_aborts_queued_cells(channels):
    failing = channels.send("shell", "execute_request", {
        "code": "import time\ntime.sleep(1)\nraise ValueError('first')", "silent": False,
        "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
    })
    queued = channels.send("shell", "execute_request", {
        "code": "never_set = 1", "silent": False, "store_history": True, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True,
    })
    replies = {}
    deadline = time.monotonic() + TIMEOUT
    while len(replies) < 2:
        message = channels.receive(deadline)
        if message["msg_type"] == "execute_reply":
            replies[message["parent_header"]["msg_id"]] = message["content"]
    assert replies[failing["header"]["msg_id"]]["status"] == "error"
    assert replies[failing["header"]["msg_id"]]["ename"] == "ValueError"
    assert replies[queued["header"]["msg_id"]]["status"] == "aborted"
    check = channels.execute("'never_set' in globals()")
    assert check.outputs("execute_result")[0]["content"]["data"]["text/plain"] == "False"


def test_rich_output(channels):
    plot = channels.execute(
        "import matplotlib\nimport matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\nax.plot([1, 2, 3], [1, 4, 9])\nplt.show()"
    )
    plot.ok()
    assert_renders_as_cell(plot, ["display_data"])
    shown = plot.outputs("display_data")[0]["content"]
    assert base64.b64decode(shown["data"]["image/png"]).startswith(PNG_MAGIC)
    assert "text/plain" in shown["data"] and isinstance(shown["metadata"], dict)

    frame = channels.execute("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert_renders_as_cell(frame, ["execute_result"])
    data = frame.outputs("execute_result")[0]["content"]["data"]
    assert "<table" in data["text/html"] and "</table>" in data["text/html"]
    assert plain(data["text/plain"]).split() == ["a", "b", "0", "1", "x", "1", "2", "y"]

    # A display with a display id, updated in place by a later cell.
    first = channels.execute("handle = display({'text/plain': 'v1', 'text/html': '<b>v1</b>'}, raw=True, display_id=True)")
    assert_renders_as_cell(first, ["display_data"])
    created = first.outputs("display_data")[0]["content"]
    display_id = created["transient"]["display_id"]
    assert display_id and created["data"] == {"text/plain": "v1", "text/html": "<b>v1</b>"}
    second = channels.execute("handle.update({'text/plain': 'v2', 'text/html': '<b>v2</b>'}, raw=True)")
    assert_renders_as_cell(second, ["update_display_data"])
    updated = second.outputs("update_display_data")[0]["content"]
    assert updated["transient"]["display_id"] == display_id
    assert updated["data"] == {"text/plain": "v2", "text/html": "<b>v2</b>"}


def test_ipython_display_functions(channels):
    """What notebooks import: IPython.display's display / update_display / clear_output and
    its HTML / Markdown objects reach the front-end as messages, not as printed text."""
    result = channels.execute(
        "from IPython.display import display, update_display, clear_output, HTML, Markdown\n"
        "print('before clear', flush=True)\n"
        "clear_output(wait=False)\n"
        "display(HTML('<i>html</i>'), display_id='fixed-id')\n"
        "update_display(Markdown('*md*'), display_id='fixed-id')\n"
        "print('after clear')"
    )
    result.ok()
    assert_renders_as_cell(result, ["stream", "clear_output", "display_data", "update_display_data", "stream"])
    streams = result.outputs("stream")
    assert [m["content"]["text"] for m in streams] == ["before clear\n", "after clear\n"]
    assert result.outputs("clear_output")[0]["content"] == {"wait": False}
    shown, updated = result.outputs("display_data")[0]["content"], result.outputs("update_display_data")[0]["content"]
    assert shown["data"]["text/html"] == "<i>html</i>" and shown["transient"] == {"display_id": "fixed-id"}
    assert updated["data"]["text/markdown"] == "*md*" and updated["transient"] == {"display_id": "fixed-id"}


def test_input_with_stdin_allowed(channels):
    prompts = []

    def answer(sock, request):
        assert request["msg_type"] == "input_request"
        prompts.append(request["content"])
        sock.send("stdin", "input_reply", {"value": f"answer {len(prompts)}"}, parent_header=request["header"])

    result = channels.execute(
        "name = input('your name? ')\nother = input()\nprint('got', name, '|', other)\nlen(name)",
        allow_stdin=True, on_stdin=answer,
    )
    result.ok()
    assert [p["prompt"] for p in prompts] == ["your name? ", ""]
    assert all(p["password"] is False for p in prompts)
    assert [m["parent_header"]["msg_id"] for m in result.stdin] == [result.msg_id] * 2
    assert "got answer 1 | answer 2\n" in result.stream_text()
    assert result.outputs("execute_result")[0]["content"]["data"]["text/plain"] == "8"
    assert channels.execute("name").outputs("execute_result")[0]["content"]["data"]["text/plain"] == "'answer 1'"

    secret = channels.execute("import getpass\npw = getpass.getpass('pw: ')\nlen(pw)",
                              allow_stdin=True, on_stdin=answer)
    assert prompts[-1] == {"prompt": "pw: ", "password": True}
    assert secret.outputs("execute_result")[0]["content"]["data"]["text/plain"] == "8"


def test_input_without_stdin_fails_at_once(channels):
    started = time.monotonic()
    result = channels.execute("value = input('never answered? ')", allow_stdin=False, timeout=10)
    assert time.monotonic() - started < 10
    assert result.stdin == []
    assert result.content["status"] == "error"
    assert result.content["ename"] == "StdinNotImplementedError"
    assert "does not support input requests" in result.content["evalue"]
    assert result.outputs("error")[0]["content"]["ename"] == "StdinNotImplementedError"


def test_complete_inspect_is_complete(channels):
    channels.execute("import os\nsome_long_variable_name = 3")
    code = "os.pa"
    completed = channels.request("shell", "complete_request", {"code": code, "cursor_pos": len(code)})
    content = completed.content
    assert content["status"] == "ok"
    assert 0 <= content["cursor_start"] <= content["cursor_end"] == len(code)
    applied = {code[:content["cursor_start"]] + match + code[content["cursor_end"]:] for match in content["matches"]}
    assert "os.path" in applied and "os.pardir" in applied, content
    assert isinstance(content["metadata"], dict)

    code = "x = some_long_v"
    variable = channels.request("shell", "complete_request", {"code": code, "cursor_pos": len(code)}).content
    applied = {code[:variable["cursor_start"]] + match + code[variable["cursor_end"]:] for match in variable["matches"]}
    assert "x = some_long_variable_name" in applied, variable

    inspected = channels.request("shell", "inspect_request", {"code": "len(", "cursor_pos": 3, "detail_level": 0})
    assert inspected.content["status"] == "ok" and inspected.content["found"] is True
    text = plain(inspected.content["data"]["text/plain"])
    assert "Return the number of items in a container." in text
    missing = channels.request("shell", "inspect_request",
                               {"code": "no_such_name_here", "cursor_pos": 5, "detail_level": 0}).content
    assert missing["status"] == "ok" and missing["found"] is False

    def is_complete(code):
        return channels.request("shell", "is_complete_request", {"code": code}).content

    assert is_complete("x = 1")["status"] == "complete"
    block = is_complete("for i in range(3):")
    assert block["status"] == "incomplete" and block["indent"] == "    "
    assert is_complete("x = (1,")["status"] == "incomplete"
    assert is_complete("x = )")["status"] == "invalid"


def test_interrupt_from_rest_while_looping(notebook, channels, kernel_gateway):
    channels.execute("kept = 'yes'")
    request = channels.send("shell", "execute_request", {
        "code": "print('looping', flush=True)\nwhile True:\n    pass", "silent": False,
        "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
    })
    msg_id = request["header"]["msg_id"]
    channels.wait_for(lambda m: m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id
                      and "looping" in m["content"]["text"], what="the loop's first print")
    if kernel_gateway.is_corral:
        assert kernel_gateway.native_session(notebook.kernel_id)["state"] == "busy"
    interrupted = notebook.rest("POST", f"/api/kernels/{notebook.kernel_id}/interrupt")
    assert interrupted.status_code == 204, interrupted.text
    result = Reply(request)
    deadline = time.monotonic() + TIMEOUT
    while result.reply is None or not result.idle():
        message = channels.receive(deadline)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["channel"] == "iopub":
            result.iopub.append(message)
        else:
            result.reply = message
    error = result.outputs("error")
    assert [m["content"]["ename"] for m in error] == ["KeyboardInterrupt"], result.types()
    assert result.content["status"] == "error" and result.content["ename"] == "KeyboardInterrupt"
    assert result.types()[-1] == "status"
    after = channels.execute("kept")
    assert after.outputs("execute_result")[0]["content"]["data"]["text/plain"] == "'yes'"


def test_interrupt_request_on_control(channels):
    request = channels.send("shell", "execute_request", {
        "code": "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", "silent": False,
        "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
    })
    msg_id = request["header"]["msg_id"]
    channels.wait_for(lambda m: m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id,
                      what="the cell's print")
    started = time.monotonic()
    interrupt = channels.send("control", "interrupt_request", {})
    replies = {}
    deadline = time.monotonic() + TIMEOUT
    while len(replies) < 2:
        message = channels.receive(deadline)
        if message["msg_type"] in ("interrupt_reply", "execute_reply"):
            replies[message["msg_type"]] = message
    assert time.monotonic() - started < 20
    assert replies["interrupt_reply"]["parent_header"]["msg_id"] == interrupt["header"]["msg_id"]
    assert replies["interrupt_reply"]["channel"] == "control"
    assert replies["interrupt_reply"]["content"]["status"] == "ok"
    assert replies["execute_reply"]["content"]["status"] == "error"
    assert replies["execute_reply"]["content"]["ename"] == "KeyboardInterrupt"


def test_restart_from_rest(notebook, channels, kernel_gateway):
    """As JupyterLab restarts: POST .../restart, watch iopub, then reconnect the websocket."""
    ours = {channels.execute("before_restart = 1").msg_id}
    counted_before = notebook.corral_execution_count() if kernel_gateway.is_corral else None
    restarted = notebook.rest("POST", f"/api/kernels/{notebook.kernel_id}/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["id"] == notebook.kernel_id
    status = channels.wait_for(
        lambda m: m["msg_type"] == "status" and m["parent_header"].get("msg_id") not in ours
        and m["content"]["execution_state"] in ("restarting", "starting", "idle"),
        what="iopub status restarting, starting or idle from the restart",
    )
    assert status["channel"] == "iopub"
    again = notebook.connect()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the new kernel may still be starting: ask until it answers
        try:
            info = again.request("shell", "kernel_info_request", {}, timeout=5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the kernel never answered after the restart"
    assert info.content["status"] == "ok"
    after = again.execute("before_restart")
    assert after.content["status"] == "error" and after.content["ename"] == "NameError"
    assert after.content["execution_count"] == 1
    fresh = again.execute("1")
    assert fresh.content["execution_count"] == 2
    if kernel_gateway.is_corral:
        # Jupyter numbers cells from the restart; corral's own count (its history) goes on.
        assert notebook.corral_execution_count() == counted_before + fresh.content["execution_count"]
    model = notebook.rest("GET", f"/api/kernels/{notebook.kernel_id}").json()
    # jupyter_server's own kernels (so JKG) leave "starting" in the model after a REST restart
    # until their internal iopub listener sees a status; corral's model is the session's state.
    assert model["execution_state"] in (("idle",) if kernel_gateway.is_corral else ("idle", "starting"))


def test_shutdown_request_with_restart(notebook, channels):
    channels.execute("will_vanish = 1")
    shutdown = channels.send("control", "shutdown_request", {"restart": True})
    reply = channels.wait_for(
        lambda m: m["msg_type"] == "shutdown_reply" and m["channel"] == "control"
        and m["parent_header"].get("msg_id") == shutdown["header"]["msg_id"],
        what="shutdown_reply",
    )
    assert reply["channel"] == "control"
    assert reply["content"]["restart"] is True and reply["content"]["status"] == "ok"
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            after = channels.execute("'will_vanish' in globals()", timeout=5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the kernel never ran a cell after shutdown_request(restart)"
    assert after.outputs("execute_result")[0]["content"]["data"]["text/plain"] == "False"


def test_two_connections_share_iopub_and_replies_go_to_the_asker(notebook):
    asker = notebook.connect()
    watcher = notebook.connect()
    # Both sockets are live before the cell runs: the watcher's own request round-trips first.
    watcher.request("shell", "kernel_info_request", {})
    result = asker.execute("print('to everyone')\n6 * 7")
    assert result.stream_text() == "to everyone\n"
    seen = []

    def complete(message):
        if message["parent_header"].get("msg_id") == result.msg_id:
            seen.append(message)
        return (message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
                and message["parent_header"].get("msg_id") == result.msg_id)

    watcher.wait_for(complete, what="the other connection's cell on iopub")
    assert [m["msg_type"] for m in seen] == result.types()
    assert [m["header"]["msg_id"] for m in seen] == [m["header"]["msg_id"] for m in result.iopub]
    assert all(m["channel"] == "iopub" for m in seen), "only iopub is shared; the reply is the asker's"
    # Nothing more for the watcher: the execute_reply went only to the asker.
    probe = watcher.request("shell", "kernel_info_request", {})
    leaked = [m for m in watcher.seen if m["parent_header"].get("msg_id") == result.msg_id and m["channel"] != "iopub"]
    assert leaked == [] and probe.content["status"] == "ok"
    # A dropped connection loses nothing for the others, and a new one works.
    watcher.close()
    notebook.sockets.remove(watcher)
    assert asker.execute("6 * 7").outputs("execute_result")[0]["content"]["data"]["text/plain"] == "42"
    again = notebook.connect()
    assert again.execute("'reconnected'").outputs("execute_result")[0]["content"]["data"]["text/plain"] == "'reconnected'"


def test_concurrent_cells_from_two_connections_share_one_queue(notebook):
    first, second = notebook.connect(), notebook.connect()
    first.execute("import time\norder = []")
    results = {}

    def run(name, sock, code):
        results[name] = sock.execute(code)

    slow_code = "time.sleep(1)\norder.append('slow')"
    slow = threading.Thread(target=run, args=("slow", first, slow_code))
    slow.start()
    # The slow cell has started (everyone sees its execute_input) before the fast one is sent.
    second.wait_for(lambda m: m["msg_type"] == "execute_input" and m["content"]["code"] == slow_code,
                    what="the slow cell's execute_input")
    run("fast", second, "order.append('fast')\nlist(order)")
    slow.join(TIMEOUT)
    assert not slow.is_alive()
    assert results["fast"].outputs("execute_result")[0]["content"]["data"]["text/plain"] == "['slow', 'fast']"
    assert results["fast"].content["execution_count"] == results["slow"].content["execution_count"] + 1


def test_messages_as_jupyter_clients_send_them(channels):
    """jupyter_client's Session.msg as jupyter_server's own GatewayKernelClient sends it (which
    nbclient uses through a gateway): no `channel` field (jupyter_server takes it as shell), the
    date a float timestamp, msg_id/msg_type repeated at the top level, protocol version 5.4."""
    from jupyter_client.session import Session
    from jupyter_server.gateway.managers import ChannelQueue

    session = Session()
    for msg_type, content in [
        ("kernel_info_request", {}),
        ("execute_request", {"code": "'no channel field'", "silent": False, "store_history": True,
                             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}),
    ]:
        message = session.msg(msg_type, content)
        assert "channel" not in message
        channels.ws.send(json.dumps(message, default=ChannelQueue.serialize_datetime))
        msg_id, reply_type = message["header"]["msg_id"], msg_type.replace("_request", "_reply")

        def children(kind):
            return [m for m in channels.seen if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == kind]

        # shell reply and iopub idle come on different channels, in either order
        channels.wait_for(
            lambda _: children(reply_type) and any(m["content"]["execution_state"] == "idle" for m in children("status")),
            what=f"the {reply_type} and idle for a message without a channel field",
        )
        [reply] = children(reply_type)
        assert reply["channel"] == "shell" and reply["content"]["status"] == "ok"
        assert reply["parent_header"]["session"] == session.session
    results = [m for m in channels.seen if m["msg_type"] == "execute_result"
               and m["parent_header"].get("msg_id") == message["header"]["msg_id"]]
    assert [m["content"]["data"]["text/plain"] for m in results] == ["'no channel field'"]


def test_unauthenticated_websocket_is_refused(notebook):
    url = f"{notebook.jupyter.ws_base_url}/api/kernels/{notebook.kernel_id}/channels"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=TIMEOUT)
    assert refused.value.status_code == 403


# ---------------------------------------------------------------------------------------------
# Straight to the gateway (no jupyter_server in between): the binary subprotocol, framed with
# jupyter_server's own v1 serializer, and what the kernel model shows.


def test_v1_binary_subprotocol_direct_to_the_gateway(kernel_gateway):
    from jupyter_server.services.kernels.connection.base import (
        deserialize_msg_from_ws_v1,
        serialize_msg_to_ws_v1,
    )

    started = requests.post(kernel_gateway.url("/api/kernels"), json={"name": "python3"}, timeout=TIMEOUT)
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    try:
        ws = websocket.create_connection(
            f"ws://{kernel_gateway.base_url.split('://', 1)[1]}/api/kernels/{kernel_id}/channels",
            timeout=TIMEOUT, subprotocols=[V1_SUBPROTOCOL],
        )
        try:
            assert ws.getsubprotocol() == V1_SUBPROTOCOL
            request = build_message(uuid.uuid4().hex, "shell", "execute_request", {
                "code": "print('binary')\n40 + 2", "silent": False, "store_history": True,
                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True,
            })
            parts = [json.dumps(request[key]).encode() for key in ("header", "parent_header", "metadata", "content")]
            ws.send_binary(serialize_msg_to_ws_v1(parts, "shell"))
            seen, deadline = [], time.monotonic() + TIMEOUT
            while not ({"execute_reply", "idle"} <= {m[0] for m in seen}):
                opcode, frame = receive_frame(ws, deadline)
                assert opcode == websocket.ABNF.OPCODE_BINARY, "the v1 subprotocol answers in binary frames"
                channel, parts = deserialize_msg_from_ws_v1(frame)
                header, parent, _metadata, content = (json.loads(part) for part in parts[:4])
                assert channel in ("shell", "iopub")
                if parent.get("msg_id") != request["header"]["msg_id"]:
                    continue
                kind = header["msg_type"]
                if kind == "status":
                    kind = content["execution_state"]
                seen.append((kind, channel, content))
                assert time.monotonic() < deadline
            kinds = [kind for kind, _, _ in seen if kind != "execute_reply"]
            assert kinds == ["busy", "execute_input", "stream", "execute_result", "idle"], kinds
            by_kind = {kind: (channel, content) for kind, channel, content in seen}
            assert by_kind["execute_reply"][0] == "shell" and by_kind["execute_reply"][1]["status"] == "ok"
            assert by_kind["stream"][1]["text"] == "binary\n"
            assert by_kind["execute_result"][1]["data"]["text/plain"] == "42"
            model = requests.get(kernel_gateway.url(f"/api/kernels/{kernel_id}"), timeout=TIMEOUT).json()
            assert model["connections"] == 1
            assert model["execution_state"] == "idle"
        finally:
            ws.close()
    finally:
        requests.delete(kernel_gateway.url(f"/api/kernels/{kernel_id}"), timeout=TIMEOUT)
