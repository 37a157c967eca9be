"""python_rce (seed 000) driven with plain `requests` through the seed's example flows.

The seed documents four operations of `pythonrce.session`: create, execute, list and close,
with a 404 `SessionNotFoundError` (`e.body["session_id"]`, `e.body["error"]`) and 422
`HTTPValidationError` bodies.
"""

import uuid

TIMEOUT = 60


def create(server):
    response = server.http.post(server.url("/sessions/create"), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"session_id"}
    uuid.UUID(body["session_id"])
    return body["session_id"]


def execute(server, session_id, code):
    return server.http.post(
        server.url("/sessions/execute"),
        json={"session_id": session_id, "code": code},
        timeout=TIMEOUT,
    )


def test_create_execute_list_close(server):
    session_id = create(server)
    listed = server.http.get(server.url("/sessions/list"), timeout=TIMEOUT).json()
    assert {"session_id": session_id} in listed["sessions"]

    response = execute(server, session_id, "print('hi')")
    assert response.status_code == 200
    assert response.json() == {"result": "Success", "output": "hi\n", "error": ""}

    # State persists: variables and imports.
    assert execute(server, session_id, "import math\nx = 41").json()["result"] == "Success"
    body = execute(server, session_id, "x + 1").json()
    assert body == {"result": "Success", "output": "Out[3]: 42\n", "error": ""}
    assert execute(server, session_id, "math.sqrt(16)").json()["output"] == "Out[4]: 4.0\n"

    closed = server.http.post(server.url("/sessions/close"), json={"session_id": session_id}, timeout=TIMEOUT)
    assert closed.status_code == 200
    assert closed.json() == {"message": "Session closed"}
    listed = server.http.get(server.url("/sessions/list"), timeout=TIMEOUT).json()
    assert {"session_id": session_id} not in listed["sessions"]


def test_errors_are_reported_as_strings(server):
    session_id = create(server)
    body = execute(server, session_id, "1/0").json()
    assert body["result"] == "Error"
    assert body["error"] == "division by zero"
    assert "ZeroDivisionError" in body["output"]
    assert "\x1b[" not in body["output"], "no ANSI colours"
    for value in body.values():
        assert isinstance(value, str)
    body = execute(server, session_id, "raise ValueError('bad value')").json()
    assert body["error"] == "bad value"


def test_subprocess_and_stderr_output_is_captured(server):
    session_id = create(server)
    code = "import subprocess, sys\nsubprocess.run(['echo', 'child'])\nprint('err', file=sys.stderr)"
    body = execute(server, session_id, code).json()
    assert body["output"].startswith("child\nerr\n")


def test_session_not_found(server):
    missing = str(uuid.uuid4())
    for path, payload in [
        ("/sessions/execute", {"session_id": missing, "code": "1"}),
        ("/sessions/close", {"session_id": missing}),
    ]:
        response = server.http.post(server.url(path), json=payload, timeout=TIMEOUT)
        assert response.status_code == 404
        assert response.json() == {"session_id": missing, "error": "Session not found"}


def test_validation_errors(server):
    response = server.http.post(server.url("/sessions/execute"), json={"session_id": "x"}, timeout=TIMEOUT)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "code"]
    assert detail[0]["msg"] == "Field required"
    assert detail[0]["type"] == "missing"
    response = server.http.post(
        server.url("/sessions/close"), data="{not json", headers={"content-type": "application/json"}, timeout=TIMEOUT
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_openapi_lists_the_seed_operations(server):
    document = server.http.get(server.url("/openapi.json"), timeout=TIMEOUT).json()
    operations = {
        document["paths"][path][method]["operationId"]
        for path, method in [
            ("/sessions/create", "post"),
            ("/sessions/list", "get"),
            ("/sessions/execute", "post"),
            ("/sessions/close", "post"),
        ]
    }
    assert operations == {"Session_create", "Session_list", "Session_execute", "Session_close"}
