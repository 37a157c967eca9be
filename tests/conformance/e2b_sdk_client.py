"""Drives today's E2B SDKs (`e2b`, `e2b-code-interpreter`), unmodified, against corral: run
by test_e2b_sdk.py in the venv of requirements-e2b.txt with only E2B_API_URL, E2B_SANDBOX_URL
and E2B_API_KEY set. `python e2b_sdk_client.py SCENARIO [OTHER_KEY]` runs one scenario and
prints what it observed as one JSON object on its last line of stdout; assertions are the
test module's.
"""

import asyncio
import io
import json
import os
import sys
import time

from e2b import (
    CommandExitException,
    NotFoundException,
    SandboxException,
    SandboxQuery,
    TimeoutException,
)
from e2b_code_interpreter import AsyncSandbox, Sandbox

PNG_MAGIC = "iVBORw0KGgo"  # base64 of the PNG signature
CHART = (
    "import matplotlib\n"
    "matplotlib.use('Agg')\n"
    "import matplotlib.pyplot as plt\n"
    "plt.plot([1, 2, 3], [3, 1, 2])\n"
    "plt.title('corral')\n"
    "plt.show()\n"
)
SLOW_PRINTS = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second', flush=True)"


def sync_scenario():
    seen = {}
    sbx = Sandbox.create(metadata={"suite": "conformance"}, timeout=120)
    seen["sandbox_id"] = sbx.sandbox_id
    first = sbx.run_code("x = 20\nprint('printed')\nx")
    second = sbx.run_code("x * 2 + 2")
    seen["state"] = [first.text, second.text, first.logs.stdout, second.execution_count]
    raised = sbx.run_code("raise ValueError('boom')")
    seen["error"] = [raised.error.name, raised.error.value, "ValueError" in raised.error.traceback]
    chart = sbx.run_code(CHART)
    seen["chart"] = [
        (result.is_main_result, bool(result.png and result.png.startswith(PNG_MAGIC)))
        for result in chart.results
    ]

    start = time.monotonic()
    arrivals = []
    sbx.run_code(SLOW_PRINTS, on_stdout=lambda message: arrivals.append(
        [message.line, time.monotonic() - start]))
    seen["stdout_arrivals"] = arrivals
    seen["stdout_finished"] = time.monotonic() - start
    # The SDK's own timeout drops the stream; the cell is interrupted, not left running.
    try:
        sbx.run_code("import time\ntime.sleep(60)", timeout=1)
        seen["cell_timeout"] = "finished"
    except TimeoutException:
        seen["cell_timeout"] = "timeout"
    start = time.monotonic()
    seen["after_timeout"] = [sbx.run_code("x").text, time.monotonic() - start]

    context = sbx.create_code_context()
    sbx.run_code("y = 'in a context'", context=context)
    seen["context"] = [
        sbx.run_code("y", context=context).text,
        sbx.run_code("'y' in globals()").text,
        sbx.run_code("x", context=context).error.name,
    ]
    seen["contexts"] = [item.id for item in sbx.list_code_contexts()]
    seen["context_id"] = context.id
    sbx.remove_code_context(context)
    seen["contexts_after_remove"] = [item.id for item in sbx.list_code_contexts()]

    written = sbx.files.write("notes/hello.txt", "hello file")
    seen["written"] = written.path
    seen["read"] = sbx.files.read("notes/hello.txt")
    seen["read_home"] = sbx.files.read("/home/user/notes/hello.txt")
    # A file-like object goes up as a raw octet-stream body (envd 0.5.7).
    sbx.files.write("notes/stream.bin", io.BytesIO(b"\x00\x01streamed"))
    seen["streamed"] = list(sbx.files.read("notes/stream.bin", format="bytes"))
    several = sbx.files.write_files([
        {"path": "many/one.txt", "data": "1"},
        {"path": "/home/user/many/two.txt", "data": b"2"},
    ])
    seen["write_files"] = [info.path for info in several]
    seen["write_files_read"] = sbx.run_code("open('many/one.txt').read() + open('many/two.txt').read()").text
    seen["listed"] = [entry.name for entry in sbx.files.list("notes")]
    seen["from_code"] = sbx.run_code("open('notes/hello.txt').read()").text
    seen["exists"] = [sbx.files.exists("notes/hello.txt"), sbx.files.exists("notes/nope.txt")]
    seen["made_dir"] = sbx.files.make_dir("made/deeper")
    sbx.files.rename("notes/hello.txt", "made/moved.txt")
    sbx.files.remove("notes")
    seen["after_moves"] = sorted(entry.name for entry in sbx.files.list("."))
    try:
        sbx.files.read("missing.txt")
        seen["missing"] = "read"
    except NotFoundException:
        seen["missing"] = "not found"

    listing = sbx.commands.run("ls -la made")
    seen["ls"] = [listing.exit_code, "moved.txt" in listing.stdout, listing.stdout.startswith("total")]
    streamed = []
    sbx.commands.run("echo one; echo two >&2", on_stdout=streamed.append, on_stderr=streamed.append)
    seen["command_callbacks"] = streamed
    seen["command_env"] = sbx.commands.run("echo $GREETING", envs={"GREETING": "hi"}).stdout
    try:
        sbx.commands.run("exit 3")
        seen["exit3"] = 0
    except CommandExitException as error:
        seen["exit3"] = error.exit_code
    sleeper = sbx.commands.run("sleep 30", background=True)
    seen["background_listed"] = sleeper.pid in [process.pid for process in sbx.commands.list()]
    seen["code_while_background"] = sbx.run_code("x").text
    seen["background_killed"] = sleeper.kill()
    try:
        sleeper.wait()
        seen["background_exit"] = "finished"
    except CommandExitException as error:
        seen["background_exit"] = error.exit_code
    echo = sbx.commands.run("sleep 0.5; echo from the background", background=True)
    seen["background_output"] = echo.wait().stdout
    seen["same_sandbox"] = sbx.commands.run("cat made/moved.txt").stdout
    reader = sbx.commands.run("cat", background=True, stdin=True)
    reader.send_stdin("typed in\n")
    reader.close_stdin()
    seen["stdin"] = reader.wait().stdout
    # Disconnecting leaves the command running; connect() follows it again.
    later = sbx.commands.run("sleep 3; echo later", background=True)
    later.disconnect()
    seen["reconnected"] = sbx.commands.connect(later.pid).wait().stdout

    sbx.set_timeout(300)
    info = sbx.get_info()
    seen["info"] = [info.sandbox_id, info.metadata, info.state.value]
    seen["listed_ids"] = [item.sandbox_id for item in Sandbox.list().next_items()]
    seen["listed_by_metadata"] = [
        item.sandbox_id
        for item in Sandbox.list(query=SandboxQuery(metadata={"suite": "conformance"})).next_items()
    ]
    seen["listed_by_other_metadata"] = [
        item.sandbox_id for item in Sandbox.list(query=SandboxQuery(metadata={"suite": "other"})).next_items()
    ]
    again = Sandbox.connect(sbx.sandbox_id)
    seen["connected"] = again.run_code("x").text
    try:
        sbx.pause()
        seen["pause"] = "paused"
    except SandboxException as error:
        seen["pause"] = str(error)
    seen["killed"] = sbx.kill()
    seen["running_after_kill"] = sbx.is_running()
    seen["listed_after_kill"] = [item.sandbox_id for item in Sandbox.list().next_items()]
    return seen


async def async_scenario():
    seen = {}
    sbx = await AsyncSandbox.create()
    seen["sandbox_id"] = sbx.sandbox_id
    await sbx.run_code("counter = 1")
    seen["state"] = (await sbx.run_code("counter + 1")).text
    arrivals = []
    start = time.monotonic()
    await sbx.run_code(SLOW_PRINTS, on_stdout=lambda message: arrivals.append(
        [message.line, time.monotonic() - start]))
    seen["stdout_arrivals"] = arrivals
    seen["stdout_finished"] = time.monotonic() - start
    await sbx.files.write("async.txt", "async file")
    seen["read"] = await sbx.files.read("async.txt")
    seen["ls"] = (await sbx.commands.run("ls")).stdout
    seen["running"] = await sbx.is_running()
    await sbx.kill()
    seen["running_after_kill"] = await sbx.is_running()
    return seen


def languages_scenario():
    seen = {}
    sbx = Sandbox.create(timeout=120)
    sbx.files.write("shared.txt", "written through envd")
    first = sbx.run_code("let n = 40; console.log('js says', n); n + 2", language="js")
    second = sbx.run_code("n += 1; await Promise.resolve(n)", language="javascript")
    seen["js"] = [first.text, first.logs.stdout, second.text]
    failed = sbx.run_code("undefinedThing.x", language="js")
    seen["js_error"] = [
        failed.error.name, failed.error.value, "undefinedThing" in failed.error.traceback,
    ]
    # The SDK's timeout drops the stream: the JavaScript loop is interrupted, its state kept.
    try:
        sbx.run_code("while (true) {}", language="js", timeout=1)
        seen["js_timeout"] = "finished"
    except TimeoutException:
        seen["js_timeout"] = "timeout"
    start = time.monotonic()
    seen["js_after_timeout"] = [
        sbx.run_code("n", language="js").text, time.monotonic() - start < 10,
    ]
    seen["js_reads_file"] = sbx.run_code(
        "require('fs').readFileSync('shared.txt', 'utf8')", language="js").text
    sbx.run_code('cd /tmp && GREETING=hello; greet() { echo "$GREETING $1"; }', language="bash")
    shell = sbx.run_code("greet world; pwd; echo oops >&2; cat ~/shared.txt", language="bash")
    seen["bash"] = ["".join(shell.logs.stdout), "".join(shell.logs.stderr)]
    context = sbx.create_code_context(language="bash")
    fresh = sbx.run_code("echo ${GREETING:-unset}", context=context)
    seen["bash_context"] = [context.language, "".join(fresh.logs.stdout)]
    seen["contexts"] = sorted(item.language for item in sbx.list_code_contexts())
    seen["python_unchanged"] = [sbx.run_code("1 + 1").text, sbx.run_code("'n' in globals()").text]
    try:
        sbx.run_code("1", language="r")
        seen["r"] = "ran"
    except Exception as error:
        seen["r"] = str(error)
    sbx.kill()
    return seen


def tenants_scenario(other_key):
    seen = {}
    mine = Sandbox.create()
    mine.run_code("secret = 42")
    seen["sandbox_id"] = mine.sandbox_id
    seen["theirs_listed"] = [item.sandbox_id for item in Sandbox.list(api_key=other_key).next_items()]
    try:
        Sandbox.connect(mine.sandbox_id, api_key=other_key)
        seen["theirs_connect"] = "connected"
    except NotFoundException:
        seen["theirs_connect"] = "not found"
    seen["theirs_kill"] = Sandbox.kill(mine.sandbox_id, api_key=other_key)
    # The other tenant's own sandbox, with a token that is not this sandbox's.
    theirs = Sandbox.create(api_key=other_key)
    seen["other_listed_own"] = [
        item.sandbox_id for item in Sandbox.list(api_key=other_key).next_items()
    ] == [theirs.sandbox_id]
    seen["mine_listed"] = [item.sandbox_id for item in Sandbox.list().next_items()]
    seen["mine_still_runs"] = mine.run_code("secret").text
    theirs.kill()
    mine.kill()
    return seen


def main():
    scenario = sys.argv[1]
    if scenario == "sync":
        seen = sync_scenario()
    elif scenario == "async":
        seen = asyncio.run(async_scenario())
    elif scenario == "languages":
        seen = languages_scenario()
    elif scenario == "tenants":
        seen = tenants_scenario(sys.argv[2])
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(seen), flush=True)
    # Leave without interpreter teardown: the SDK's native HTTP transport (pyqwest) can
    # abort the process while it is torn down after the async client (SIGABRT, seen about
    # once in five runs), after everything above has completed.
    os._exit(0)


if __name__ == "__main__":
    main()
