"""corral-client against a real corral server: sessions, runs, streams, rich outputs, files,
keys, from_env, errors mirroring problem types, and 429 retries honouring Retry-After."""

import asyncio
import threading
import time

import httpx
import pytest

import corral

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_returns_a_typed_result(server):
    with corral.Client(server.url) as client:
        with client.session(name="typed") as session:
            execution = session.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\n6 * 7")
            assert execution.ok
            assert execution.text == "42"
            assert execution.stdout == "out\n"
            assert execution.stderr == "err\n"
            assert execution.error is None
            assert [output.type for output in execution.outputs] == ["stream", "stream"]
            failed = session.run("1/0")
            assert failed.status == "error"
            assert failed.error.ename == "ZeroDivisionError"
            with pytest.raises(corral.ExecutionFailed, match="division by zero"):
                failed.raise_for_error()
            # State is kept between runs.
            session.run("x = 5")
            assert session.run("x + 1").text == "6"
        # The context manager closed it.
        assert client.get_session(session.id).state == "closed"


def test_png_helper_and_rich_outputs(server):
    with corral.Client(server.url) as client, client.session() as session:
        drawn = session.run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t');")
        assert drawn.ok, drawn.error
        assert drawn.png is not None and drawn.png.startswith(PNG_MAGIC)
        display = next(output for output in drawn.outputs if output.type == "display")
        assert "image/png" in display.data and display.png.startswith(PNG_MAGIC)
        html = session.run(
            "class T:\n    def _repr_html_(self): return '<b>x</b>'\n    def __repr__(self): return 'T()'\nT()"
        )
        assert html.result["text/html"] == "<b>x</b>"
        assert html.text == "T()"


def test_stream_yields_events_as_they_happen(server):
    with corral.Client(server.url) as client, client.session() as session:
        gate = f"{server.data_dir}/workspaces/{session.id}/gate"
        code = (
            "import os, time\nprint('first', flush=True)\n"
            "while not os.path.exists('gate'):\n    time.sleep(0.02)\nprint('second')\n'end'"
        )
        events = session.stream(code)
        first = next(events)
        assert (first.type, first.name, first.text) == ("stream", "stdout", "first\n")
        # The cell is still waiting for the gate: the first event came before the end.
        open(gate, "w").close()
        rest = list(events)
        assert [event.type for event in rest] == ["stream", "result", "done"]
        assert rest[1].text == "'end'"
        done = rest[-1].execution
        assert done.ok and done.stdout == "first\nsecond\n"


def test_files_upload_list_download_delete(server):
    with corral.Client(server.url) as client, client.session() as session:
        written = session.files.upload("in/data.csv", b"a,b\n1,2\n")
        assert written == {"path": "in/data.csv", "size": 8}
        assert session.run("open('in/data.csv').read()").text == "'a,b\\n1,2\\n'"
        entries = session.files.list("in")
        assert [(entry.name, entry.type, entry.size) for entry in entries] == [("data.csv", "file", 8)]
        assert entries[0].modified is not None and entries[0].modified.tzinfo is not None
        assert session.files.download("in/data.csv") == b"a,b\n1,2\n"
        session.files.delete("in")
        with pytest.raises(corral.NotFound):
            session.files.download("in/data.csv")
        with pytest.raises(ValueError, match="leave the workspace"):
            session.files.upload("../escape.csv", b"x")


def test_errors_mirror_problem_types(server):
    with corral.Client(server.url) as client:
        with pytest.raises(corral.NotFound) as missing:
            client.get_session("00000000-0000-7000-8000-000000000000")
        assert missing.value.status == 404 and missing.value.code == "session_not_found"
        with client.session() as session:
            with pytest.raises(corral.InvalidRequest) as invalid:
                session.run("1", timeout=-1)
            assert invalid.value.status == 422
        with pytest.raises(corral.Conflict):
            session.run("1")
    with pytest.raises(corral.ConnectionError, match="cannot reach"):
        corral.Client("http://127.0.0.1:9", max_retries=0).info()


def test_interrupt_and_restart(server):
    with corral.Client(server.url) as client, client.session() as session:
        events = session.stream("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
        assert next(events).text == "sleeping\n"
        session.interrupt()
        done = [event for event in events if event.type == "done"][0].execution
        assert done.status == "interrupted"
        session.run("kept = 1")
        session.restart()
        assert session.run("'kept' in dir()").text == "False"


def test_keys_and_from_env(fresh_server, monkeypatch):
    with corral.Client(fresh_server.url) as open_client:
        issued = open_client.keys.create("admin", name="ci")
        assert issued.key.startswith("corral_") and issued.details.scope == "admin"
    # The first key ends open mode.
    with pytest.raises(corral.Unauthorized):
        corral.Client(fresh_server.url).info()
    monkeypatch.setenv("CORRAL_SERVER", fresh_server.url.replace("http://", ""))
    monkeypatch.setenv("CORRAL_API_KEY", issued.key)
    with corral.from_env() as client:
        assert client.info()["runtimes"]
        tenant = client.keys.create("tenant", tenant="acme")
        assert [key.id for key in client.keys.list()] == [issued.details.id, tenant.details.id]
        revoked = client.keys.revoke(tenant.details.id)
        assert revoked.revoked_at is not None
        with client.session() as session:
            assert session.run("1 + 1").text == "2"


class ObservingTransport(httpx.HTTPTransport):
    """The real transport, noting each answer's status (to know when a 429 came)."""

    def __init__(self):
        super().__init__()
        self.statuses = []
        self.rate_limited = threading.Event()

    def handle_request(self, request):
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        if response.status_code == 429:
            self.rate_limited.set()
        return response


@pytest.mark.corral_server(config="[limits]\nmax_sessions = 1\n")
def test_429_is_retried_after_retry_after(fresh_server):
    transport = ObservingTransport()
    with corral.Client(fresh_server.url, transport=transport) as client:
        first = client.session()
        result = {}

        def second():
            started = time.monotonic()
            result["session"] = client.session()
            result["waited"] = time.monotonic() - started

        worker = threading.Thread(target=second)
        worker.start()
        assert transport.rate_limited.wait(30), transport.statuses
        first.close()
        worker.join(60)
        assert "session" in result, transport.statuses
        assert transport.statuses.count(429) == 1
        # The server's Retry-After (5 s for the session cap) was waited out.
        assert result["waited"] >= 4.5
        result["session"].close()
    with corral.Client(fresh_server.url, max_retries=0) as client:
        with client.session():
            with pytest.raises(corral.RateLimited) as limited:
                client.session()
            assert limited.value.retry_after == 5


def test_async_client(server):
    async def main():
        async with corral.AsyncClient(server.url) as client:
            async with await client.session() as session:
                assert (await session.run("6 * 7")).text == "42"
                texts = [event.text async for event in session.stream("print('a')\nprint('b')")
                         if event.type == "stream"]
                assert "".join(texts) == "a\nb\n"
                await session.files.upload("f.txt", "hello")
                assert await session.files.download("f.txt") == b"hello"
                assert [entry.name for entry in await session.files.list()] == ["f.txt"]
            assert (await client.get_session(session.id)).state == "closed"
            with pytest.raises(corral.NotFound):
                await client.get_session("00000000-0000-7000-8000-000000000000")

    asyncio.run(main())
