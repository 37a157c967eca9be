"""Today's E2B SDKs, unmodified, against corral: `e2b` and `e2b-code-interpreter` at the
versions pinned in requirements-e2b.txt, in a venv of their own (scripts/test builds
target/venv-e2b and names its interpreter in CORRAL_E2B_PYTHON), driven by
e2b_sdk_client.py with only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set — the key an
`e2b_…` key printed by `corral keys create --format e2b`.
"""

import json
import os
import re
import subprocess

import pytest
import requests

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2b_sdk_client.py")
SCENARIO_DEADLINE_SECONDS = 240
COMMAND_DEADLINE_SECONDS = 60
# What e2b releases from 2.25 check E2B_API_KEY against (2.63 itself no longer checks).
E2B_KEY = re.compile(r"^e2b_[0-9a-f]+$")


def e2b_python():
    python = os.environ.get("CORRAL_E2B_PYTHON")
    if not python:
        pytest.fail(
            "CORRAL_E2B_PYTHON is not set: it names the interpreter of the venv with the E2B "
            "SDKs (tests/conformance/requirements-e2b.txt); scripts/test builds it as "
            "target/venv-e2b and sets it"
        )
    return python


def corral(*arguments):
    binary = os.environ.get("CORRAL_BIN", "target/debug/corral")
    done = subprocess.run(
        [binary, *arguments], capture_output=True, text=True, timeout=COMMAND_DEADLINE_SECONDS
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def keys(server):
    """An admin key, then two tenants' keys in the E2B spelling (this ends open mode)."""
    admin = corral("keys", "create", "--scope", "admin", "--server", server.base_url)
    tenants = {
        name: corral(
            "keys", "create", "--scope", "tenant", "--tenant", name, "--format", "e2b",
            "--server", server.base_url, "--api-key", admin,
        )
        for name in ("alice", "bob")
    }
    return {"admin": admin, **tenants}


def run(server, key, scenario, *arguments):
    env = {name: value for name, value in os.environ.items() if not name.startswith("E2B_")}
    env.update(E2B_API_URL=server.base_url, E2B_SANDBOX_URL=server.base_url, E2B_API_KEY=key)
    done = subprocess.run(
        [e2b_python(), CLIENT, scenario, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=SCENARIO_DEADLINE_SECONDS,
    )
    assert done.returncode == 0, f"{scenario} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def native(server, keys, session_id):
    response = requests.get(
        server.url(f"/v1/sessions/{session_id}"),
        headers={"Authorization": f"Bearer {keys['admin']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_keys_come_in_the_form_the_sdk_accepts(keys):
    assert keys["admin"].startswith("corral_")
    for tenant in ("alice", "bob"):
        assert E2B_KEY.match(keys[tenant]), keys[tenant]


def test_the_sync_sdk_runs_code_files_and_commands_in_one_sandbox(server, keys):
    seen = run(server, keys["alice"], "sync")
    sandbox_id = seen["sandbox_id"]

    # run_code keeps state, prints, raises, shows a chart.
    assert seen["state"] == ["20", "42", ["printed\n"], 2]
    assert seen["error"] == ["ValueError", "boom", True]
    assert seen["chart"] == [[False, True]], "a PNG display result"
    # on_stdout hears "first" while the cell still sleeps.
    (first, first_at), (second, _) = seen["stdout_arrivals"]
    assert (first, second) == ("first\n", "second\n")
    assert first_at < seen["stdout_finished"] - 1.0, seen
    # A cell past the SDK's timeout is interrupted: the next one runs at once.
    assert seen["cell_timeout"] == "timeout"
    assert seen["after_timeout"][0] == "20" and seen["after_timeout"][1] < 10, seen

    # Contexts are separate namespaces; removing one forgets it.
    assert seen["context"] == ["'in a context'", "False", "NameError"]
    assert seen["contexts"] == ["default", seen["context_id"]]
    assert seen["contexts_after_remove"] == ["default"]

    # Files, in the workspace that is also the home directory.
    assert seen["written"] == "/workspace/notes/hello.txt"
    assert seen["read"] == seen["read_home"] == "hello file"
    assert seen["streamed"] == list(b"\x00\x01streamed")
    assert seen["write_files"] == ["/workspace/many/one.txt", "/workspace/many/two.txt"]
    assert seen["write_files_read"] == "'12'"
    assert seen["listed"] == ["hello.txt", "stream.bin"]
    assert seen["from_code"] == "'hello file'"
    assert seen["exists"] == [True, False]
    assert seen["made_dir"] is True
    assert "made" in seen["after_moves"] and "notes" not in seen["after_moves"]
    assert seen["missing"] == "not found"

    # Commands run in the same sandbox as the code.
    assert seen["ls"] == [0, True, True]
    assert sorted(seen["command_callbacks"]) == ["one\n", "two\n"]
    assert seen["command_env"] == "hi\n"
    assert seen["exit3"] == 3
    assert seen["background_listed"] is True
    assert seen["code_while_background"] == "20"
    assert seen["background_killed"] is True
    assert seen["background_exit"] == -1
    assert seen["background_output"] == "from the background\n"
    assert seen["same_sandbox"] == "hello file"
    assert seen["reconnected"] == "later\n"
    assert seen["stdin"] == "typed in\n"

    # Control plane.
    assert seen["info"] == [sandbox_id, {"suite": "conformance"}, "running"]
    assert sandbox_id in seen["listed_ids"]
    assert sandbox_id in seen["listed_by_metadata"]
    assert seen["listed_by_other_metadata"] == []
    assert seen["connected"] == "20"
    assert "not supported" in seen["pause"]
    assert seen["killed"] is True
    assert seen["running_after_kill"] is False
    assert sandbox_id not in seen["listed_after_kill"]

    # The sandbox was a corral session all along, now closed.
    session = native(server, keys, sandbox_id)
    assert session["state"] == "closed"
    assert session["metadata"]["e2b_sandbox"]["metadata"] == {"suite": "conformance"}


def test_the_async_sdk(server, keys):
    seen = run(server, keys["alice"], "async")
    assert seen["state"] == "2"
    (first, first_at), _ = seen["stdout_arrivals"]
    assert first == "first\n" and first_at < seen["stdout_finished"] - 1.0, seen
    assert seen["read"] == "async file"
    assert "async.txt" in seen["ls"]
    assert (seen["running"], seen["running_after_kill"]) == (True, False)
    assert native(server, keys, seen["sandbox_id"])["state"] == "closed"


def test_another_tenant_sees_none_of_it(server, keys):
    seen = run(server, keys["alice"], "tenants", keys["bob"])
    assert seen["sandbox_id"] not in seen["theirs_listed"]
    assert seen["theirs_connect"] == "not found"
    assert seen["theirs_kill"] is False
    assert seen["other_listed_own"] is True
    assert seen["mine_listed"] == [seen["sandbox_id"]]
    assert seen["mine_still_runs"] == "42"


def test_javascript_and_bash_run_in_the_sandbox_beside_python(server, keys):
    seen = run(server, keys["alice"], "languages")
    # JavaScript: state kept, console.log as stdout, the last expression as the result,
    # top-level await, errors with name, message and stack, the sandbox's own files.
    assert seen["js"] == ["42", ["js says 40\n"], "41"], seen
    assert seen["js_error"] == ["ReferenceError", "undefinedThing is not defined", True], seen
    assert seen["js_timeout"] == "timeout", seen
    assert seen["js_after_timeout"] == ["41", True], seen
    assert seen["js_reads_file"] == "'written through envd'", seen
    # Bash: a persistent shell (directory, variables, functions), stdout and stderr apart.
    assert seen["bash"] == ["hello world\n/tmp\nwritten through envd", "oops\n"], seen
    # A new bash context is a shell of its own.
    assert seen["bash_context"] == ["bash", "unset\n"], seen
    assert seen["contexts"] == ["bash", "python"], seen
    # Python's namespace saw none of it.
    assert seen["python_unchanged"] == ["2", "False"], seen
    assert "not supported" in seen["r"], seen
