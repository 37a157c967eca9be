"""Agent sessions API (seed 004, `agent_sessions_api`) over plain HTTP with `requests`, at
corral's `/agents` mount.

There is no published client: `AgentSessionsApi` below is written from the seed's generated
client documentation (four operations, JSON in and out, every success a 200 with a body,
identifiers percent-encoded including `|`, an `X-Span-ID` header as the generated rust client
sends). The seed names the models (`Session`, `SessionContainer`, `SessionArray`, `ErrorList`)
but not their fields, so the field names checked here are corral's INFERRED schema
(`/work/shared/seed-apis.md`, "Decisions"): `{"session": {identifier, agent_id, state,
created_at, last_activity_at, expires_at, metadata, api_key once}}`, a bare array, and
`{"errors": [{"code", "message"}]}`.
"""

import threading
import uuid
from datetime import datetime
from urllib.parse import quote

import requests

TIMEOUT_SECONDS = 60


class AgentSessionsApi:
    """The seed's four operations. The seed's generated names are swapped relative to their
    methods (its `clear_session` is the GET, its `get_session` the DELETE); they are kept."""

    def __init__(self, base_url, api_key=None):
        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def _send(self, method, path, body=None):
        headers = {"X-Span-ID": str(uuid.uuid4())}
        if body is not None:
            headers["Content-Type"] = "application/json"
        response = self.http.request(
            method, self.base_url + path, json=body, headers=headers, timeout=TIMEOUT_SECONDS
        )
        return response.status_code, response.json()

    @staticmethod
    def _path(identifier):
        return "/sessions/" + quote(identifier, safe="")

    def get_sessions(self):
        return self._send("GET", "/sessions")

    def put_session(self, identifier, session):
        return self._send("PUT", self._path(identifier), session)

    def clear_session(self, identifier):
        return self._send("GET", self._path(identifier))

    def get_session(self, identifier):
        return self._send("DELETE", self._path(identifier))


def assert_error_list(reply, status, code):
    got, body = reply
    assert got == status, body
    assert list(body) == ["errors"], body
    assert len(body["errors"]) == 1, body
    assert body["errors"][0]["code"] == code, body
    assert isinstance(body["errors"][0]["message"], str), body


def test_the_full_lifecycle_with_the_minted_key_on_the_native_api(server):
    api = AgentSessionsApi(server.url("/agents"))
    identifier = "agent|" + uuid.uuid4().hex[:8]

    status, created = api.put_session(identifier, {"name": "helper", "metadata": {"team": "a"}})
    assert status == 200, created
    session = created["session"]
    assert session["identifier"] == identifier
    assert session["state"] == "idle"
    assert session["metadata"] == {"team": "a"}
    for stamp in ("created_at", "last_activity_at", "expires_at"):
        assert datetime.fromisoformat(session[stamp]).tzinfo is not None, session
    agent_id = session["agent_id"]
    key = session["api_key"]
    assert key.startswith("corral_")

    # Idempotent: the same session, and the key is never shown again.
    status, again = api.put_session(identifier, {})
    assert status == 200
    assert again["session"]["agent_id"] == agent_id
    assert "api_key" not in again["session"]
    status, read = api.clear_session(identifier)
    assert status == 200
    assert read == again
    status, listed = api.get_sessions()
    assert status == 200
    assert isinstance(listed, list)
    assert [item["agent_id"] for item in listed if item["identifier"] == identifier] == [agent_id]

    # The minted key drives this session on the native API, and nothing else.
    native = requests.Session()
    native.headers["Authorization"] = f"Bearer {key}"
    execution = native.post(
        server.url(f"/v1/sessions/{agent_id}/executions"),
        json={"code": "x = 40\nx + 2"},
        timeout=TIMEOUT_SECONDS,
    )
    assert execution.status_code == 200, execution.text
    assert execution.json()["result"]["text/plain"] == "42"
    other = requests.post(server.url("/v1/sessions"), json={}, timeout=TIMEOUT_SECONDS).json()
    assert native.get(server.url(f"/v1/sessions/{other['id']}"), timeout=TIMEOUT_SECONDS).status_code == 404
    assert native.post(server.url("/v1/sessions"), json={}, timeout=TIMEOUT_SECONDS).status_code == 403
    assert native.get(server.url("/v1/keys"), timeout=TIMEOUT_SECONDS).status_code == 403
    requests.delete(server.url(f"/v1/sessions/{other['id']}"), timeout=TIMEOUT_SECONDS)

    # DELETE closes the session everywhere and revokes the key.
    status, deleted = api.get_session(identifier)
    assert status == 200, deleted
    assert deleted["session"]["agent_id"] == agent_id
    assert deleted["session"]["state"] == "closed"
    state = requests.get(server.url(f"/v1/sessions/{agent_id}"), timeout=TIMEOUT_SECONDS).json()["state"]
    assert state == "closed"
    assert native.get(server.url(f"/v1/sessions/{agent_id}"), timeout=TIMEOUT_SECONDS).status_code == 401
    assert_error_list(api.clear_session(identifier), 404, "session_not_found")
    assert_error_list(api.get_session(identifier), 404, "session_not_found")

    # The identifier can be used again: a new session with a new key.
    status, renewed = api.put_session(identifier, {})
    assert status == 200
    assert renewed["session"]["agent_id"] != agent_id
    assert renewed["session"]["api_key"] != key
    api.get_session(identifier)


def test_bad_input_is_an_error_list(server):
    api = AgentSessionsApi(server.url("/agents"))
    response = requests.put(
        server.url("/agents/sessions/bad-json"),
        data="{nope",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_SECONDS,
    )
    assert_error_list((response.status_code, response.json()), 400, "malformed_json")
    assert_error_list(api.put_session("wrong-shape", []), 422, "invalid_body")
    assert_error_list(api.put_session("wrong-type", {"metadata": "no"}), 422, "invalid_body")
    assert_error_list(api.put_session("x" * 129, {}), 422, "invalid_identifier")
    assert_error_list(api.put_session("a/b", {}), 422, "invalid_identifier")
    assert_error_list(api.clear_session("never-made"), 404, "session_not_found")
    assert_error_list(api.get_session("never-made"), 404, "session_not_found")
    status, listed = api.get_sessions()
    assert status == 200
    assert not [item for item in listed if item["identifier"] in ("bad-json", "wrong-shape", "wrong-type")]


def test_concurrent_puts_make_one_session_and_one_key(server):
    identifier = "race-" + uuid.uuid4().hex[:8]
    replies = []

    def put():
        replies.append(AgentSessionsApi(server.url("/agents")).put_session(identifier, {}))

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in replies] == [200] * 8, replies
    assert len({body["session"]["agent_id"] for _, body in replies}) == 1
    assert sum("api_key" in body["session"] for _, body in replies) == 1
    AgentSessionsApi(server.url("/agents")).get_session(identifier)
