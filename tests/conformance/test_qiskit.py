"""Qiskit Runtime sessions (seed 003) driven by the real `qiskit-ibm-runtime` client,
unmodified: its `RuntimeSession` REST adapter on a `RetrySession`, and its `RuntimeClient`
built from `ClientParameters` with `CloudAuth`, pointed at corral's `/api/v1`.

The client needs pydantic 2 while the main venv pins pydantic 1 for e2b 0.1.0, so it runs in
its own venv (scripts/test builds target/venv-qiskit from requirements-qiskit.txt and names
its interpreter in CORRAL_QISKIT_PYTHON), through qiskit_runtime_client.py, one JSON command
per line. Jobs are corral executions, run here through the native API.
"""

import json
import os
import select
import subprocess
import threading
import time
import uuid

import pytest
import requests

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qiskit_runtime_client.py")
REPLY_DEADLINE_SECONDS = 120
STATE_DEADLINE_SECONDS = 60


class QiskitClient:
    """The driver process: one client, commands in, answers out."""

    def __init__(self, base_url, auth, extra_env=None):
        python = os.environ.get("CORRAL_QISKIT_PYTHON")
        if not python:
            pytest.fail(
                "CORRAL_QISKIT_PYTHON is not set: it names the interpreter of the venv with "
                "qiskit-ibm-runtime (tests/conformance/requirements-qiskit.txt); scripts/test "
                "builds it as target/venv-qiskit and sets it"
            )
        env = dict(os.environ)
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [python, DRIVER, base_url, auth],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._read() == {"ready": True}

    def _read(self):
        ready, _, _ = select.select([self.process.stdout], [], [], REPLY_DEADLINE_SECONDS)
        if not ready:
            self.process.kill()
            pytest.fail("the qiskit client did not answer in time")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            pytest.fail(f"the qiskit client exited: {self.process.stderr.read()}")
        return json.loads(line)

    def call(self, op, **fields):
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def result(self, op, **fields):
        reply = self.call(op, **fields)
        assert "result" in reply, reply
        return reply["result"]

    def stop(self):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def qiskit(server):
    clients = []

    def start(auth="none", extra_env=None):
        client = QiskitClient(server.base_url, auth, extra_env)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.stop()


def native_session(server, session_id, headers=None):
    response = requests.get(server.url(f"/v1/sessions/{session_id}"), headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def execute(server, session_id, code, headers=None):
    return requests.post(
        server.url(f"/v1/sessions/{session_id}/executions"),
        json={"code": code},
        headers=headers,
        timeout=120,
    )


def wait_for_state(client, session_id, state):
    deadline = time.monotonic() + STATE_DEADLINE_SECONDS
    while True:
        details = client.result("details", id=session_id)
        if details["state"] == state:
            return details
        assert time.monotonic() < deadline, f"never {state}: {details}"
        time.sleep(0.02)


def statuses(details):
    return [entry["status"] for entry in details["timestamps"]]


def test_the_rest_adapter_creates_reads_drains_and_cancels(server, qiskit):
    client = qiskit()
    created = client.result("create", args={"backend": "python3", "mode": "dedicated", "max_time": 600})
    session_id = created["id"]
    uuid.UUID(session_id)
    assert created["state"] == "open"
    assert created["accepting_jobs"] is True
    assert created["backend_name"] == "python3"
    assert created["mode"] == "dedicated"
    assert created["max_ttl"] == 600
    assert created["active_ttl"] == 600
    assert statuses(created) == ["open"]
    native = native_session(server, session_id)
    assert native["state"] == "idle"
    assert native["max_ttl"] == 600
    assert native["metadata"]["qiskit"]["mode"] == "dedicated"

    # A job (a native execution): the session is inactive afterwards.
    assert execute(server, session_id, "6 * 7").json()["result"]["text/plain"] == "42"
    details = client.result("details", id=session_id)
    for key in ("id", "backend_name", "interactive_ttl", "max_ttl", "active_ttl", "state",
                "accepting_jobs", "last_job_started", "last_job_completed", "started_at",
                "closed_at", "activated_at", "mode", "elapsed_time", "timestamps"):
        assert key in details, key
    assert details["state"] == "inactive"
    assert statuses(details) == ["open", "active", "inactive"]
    assert details["activated_at"] == details["last_job_started"] == details["timestamps"][1]["timestamp"]

    # Session.close(): PATCH accepting_jobs=false drains; with nothing queued it closes.
    assert client.result("close", id=session_id) is None
    closed = wait_for_state(client, session_id, "closed")
    assert closed["state_reason"] == "drained"
    assert closed["accepting_jobs"] is False
    assert closed["closed_at"]
    assert statuses(closed) == ["open", "active", "inactive", "closed"]
    assert native_session(server, session_id)["state"] == "closed"
    assert execute(server, session_id, "1").status_code == 409

    # Cancelling (and closing) a closed session changes nothing.
    assert client.result("cancel", id=session_id) is None
    assert client.result("close", id=session_id) is None
    assert client.result("details", id=session_id)["state_reason"] == "drained"


def test_the_rest_adapter_cancels_a_running_job(server, qiskit):
    client = qiskit()
    session_id = client.result("create", args={"mode": "batch"})["id"]
    outcome = {}

    def run_forever():
        outcome["response"] = execute(server, session_id, "import time\nwhile True:\n    time.sleep(0.01)")

    runner = threading.Thread(target=run_forever)
    runner.start()
    active = wait_for_state(client, session_id, "active")
    assert active["accepting_jobs"] is True
    assert client.result("cancel", id=session_id) is None
    runner.join(timeout=STATE_DEADLINE_SECONDS)
    assert not runner.is_alive()
    assert outcome["response"].json()["status"] == "killed"
    closed = client.result("details", id=session_id)
    assert closed["state"] == "closed"
    assert closed["state_reason"] == "cancelled"
    assert statuses(closed) == ["open", "active", "closed"]


def test_the_client_reports_errors(server, qiskit):
    client = qiskit()
    unknown = str(uuid.uuid4())
    error = client.call("details", id=unknown)["error"]
    assert (error["type"], error["status_code"]) == ("RequestsApiError", 404)
    assert "session not found" in error["message"]
    # Session.close() swallows a 404, as the client does for IBM.
    assert client.call("close", id=unknown) == {"result": None}
    # Without a mode the create is a 400.
    error = client.call("create", args={"backend": "python3"})["error"]
    assert (error["type"], error["status_code"]) == ("RequestsApiError", 400)
    assert "mode" in error["message"]
    error = client.call("create", args={"backend": "ibm_brisbane", "mode": "batch"})["error"]
    assert (error["type"], error["status_code"]) == ("RequestsApiError", 400)


def test_the_runtime_client_with_cloud_auth_and_tenant_keys(server, qiskit):
    """Last in this module: it adds keys (leaving open mode) and revokes them at the end."""
    admin = requests.post(server.url("/v1/keys"), json={"scope": "admin"}, timeout=30).json()
    admin_headers = {"Authorization": f"Bearer {admin['key']}"}
    tenant = requests.post(
        server.url("/v1/keys"),
        json={"scope": "tenant", "tenant": "qiskit-user"},
        headers=admin_headers,
        timeout=30,
    ).json()
    try:
        # CloudAuth asks IAM for a token first; IAM_URL is this server, which has no token
        # service, so it falls back to `Authorization: apikey <key>` (and sends Service-CRN).
        client = qiskit(f"cloud:{tenant['key']}", {"IAM_URL": server.base_url})
        created = client.result(
            "create", args={"backend": "python3", "mode": "batch", "max_time": 300}
        )
        session_id = created["id"]
        assert created["user_id"] == "qiskit-user"
        assert created["mode"] == "batch"
        assert created["max_ttl"] == 300
        tenant_headers = {"Authorization": f"Bearer {tenant['key']}"}
        assert native_session(server, session_id, tenant_headers)["state"] == "idle"
        assert client.result("details", id=session_id)["state"] == "open"
        assert client.result("cancel", id=session_id) is None
        closed = client.result("details", id=session_id)
        assert (closed["state"], closed["state_reason"]) == ("closed", "cancelled")
        assert client.result("close", id=session_id) is None

        bearer = qiskit(f"bearer:{tenant['key']}")
        assert bearer.result("details", id=session_id)["user_id"] == "qiskit-user"

        for auth in (f"bearer:{tenant['key']}x", "none"):
            error = qiskit(auth).call("create", args={"mode": "batch"})["error"]
            assert error["type"] == "IBMNotAuthorizedError", (auth, error)
        error = qiskit(f"cloud:{tenant['key']}x", {"IAM_URL": server.base_url}).call(
            "details", id=session_id
        )["error"]
        assert error["type"] == "IBMNotAuthorizedError"
    finally:
        for key in (tenant, admin):
            response = requests.delete(
                server.url(f"/v1/keys/{key['id']}"), headers=admin_headers, timeout=30
            )
            assert response.status_code == 200, response.text
