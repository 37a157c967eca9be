"""Drives the real qiskit-ibm-runtime client (unmodified) against a corral server, for
test_qiskit.py. It runs in the qiskit venv (target/venv-qiskit: pydantic 2, which the main
venv cannot have beside e2b 0.1.0), reads one JSON command per line on stdin and answers one
JSON line on stdout.

    python qiskit_runtime_client.py BASE_URL AUTH
        AUTH = none          RetrySession without credentials (corral's open mode)
             | bearer:KEY    RetrySession with `Authorization: Bearer KEY`
             | cloud:KEY     RuntimeClient as the package builds it: ClientParameters with
                             CloudAuth. IAM_URL must point at a loopback address that is not
                             IBM's token service, so the token request fails there and
                             CloudAuth falls back to `Authorization: apikey KEY`. A fresh
                             client per command: after a failed token request the IAM token
                             manager waits 60 s before it tries (and falls back) again.

Commands: {"op": "create", "args": {...}} (RuntimeSession.create / create_session
keyword arguments), {"op": "details" | "close" | "cancel", "id": ...}. Answers:
{"result": ...} or {"error": {"type": ..., "status_code": ..., "message": ...}}.

Nothing here talks to IBM: the only addresses used are the ones given.
"""

import json
import sys

from requests.auth import AuthBase

from qiskit_ibm_runtime.api.client import RuntimeClient
from qiskit_ibm_runtime.api.client_parameters import ClientParameters
from qiskit_ibm_runtime.api.rest.runtime import Runtime
from qiskit_ibm_runtime.api.session import RetrySession


class BearerAuth(AuthBase):
    """`Authorization: Bearer <key>`, in place of an IAM token."""

    def __init__(self, key):
        self.key = key

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.key}"
        return request


class RestAdapterCalls:
    """The REST adapter (`Runtime.runtime_session` → `RuntimeSession`) on a `RetrySession`."""

    def __init__(self, api_url, auth):
        self.runtime = Runtime(RetrySession(base_url=api_url, auth=auth, retries_total=0))

    def create(self, **args):
        return self.runtime.runtime_session(None).create(**args)

    def details(self, session_id):
        return self.runtime.runtime_session(session_id).details()

    def close(self, session_id):
        return self.runtime.runtime_session(session_id).close()

    def cancel(self, session_id):
        return self.runtime.runtime_session(session_id).cancel()


class RuntimeClientCalls:
    """`RuntimeClient`, built from `ClientParameters` as the package's service does, anew for
    each call."""

    def __init__(self, api_url, key):
        self.parameters = ClientParameters(
            channel="ibm_cloud",
            token=key,
            instance="crn:v1:corral:conformance",
            url_resolver=lambda url, instance, private, channel: api_url,
        )

    def client(self):
        return RuntimeClient(self.parameters)

    def create(self, **args):
        return self.client().create_session(**args)

    def details(self, session_id):
        return self.client().session_details(session_id)

    def close(self, session_id):
        return self.client().close_session(session_id)

    def cancel(self, session_id):
        return self.client().cancel_session(session_id)


def client_for(base_url, auth):
    api_url = base_url.rstrip("/") + "/api/v1"
    kind, _, key = auth.partition(":")
    if kind == "none":
        return RestAdapterCalls(api_url, None)
    if kind == "bearer":
        return RestAdapterCalls(api_url, BearerAuth(key))
    if kind == "cloud":
        return RuntimeClientCalls(api_url, key)
    raise SystemExit(f"unknown auth {auth!r}")


def answer(client, command):
    operation = command["op"]
    try:
        if operation == "create":
            result = client.create(**command.get("args", {}))
        else:
            result = getattr(client, operation)(command["id"])
        return {"result": result}
    except Exception as error:  # reported to the test, which asserts on it
        return {
            "error": {
                "type": type(error).__name__,
                "status_code": getattr(error, "status_code", None),
                "message": str(error),
            }
        }


def main():
    base_url, auth = sys.argv[1], sys.argv[2]
    client = client_for(base_url, auth)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(client, json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
