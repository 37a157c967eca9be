"""The synchronous client: :class:`Client`, :class:`Session`, files and keys."""

from __future__ import annotations

import os
import time
from typing import IO, Any, Dict, Iterator, List, Optional, Union

import httpx

from . import _wire
from .errors import ConnectionError, error_for
from .models import Event, Execution, FileEntry, IssuedKey, Key


class Client:
    """A client of one corral server.

    ``url`` defaults to ``CORRAL_SERVER`` (else ``http://127.0.0.1:8000``), ``api_key`` to
    ``CORRAL_API_KEY``. 429 answers are retried up to ``max_retries`` times, waiting as the
    ``Retry-After`` header says.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = _wire.DEFAULT_TIMEOUT,
        max_retries: int = _wire.DEFAULT_MAX_RETRIES,
        transport: Optional[httpx.BaseTransport] = None,
    ):
        self.url = _wire.base_url(url)
        self.api_key = _wire.env_api_key(api_key)
        self.max_retries = max_retries
        self._http = httpx.Client(
            base_url=self.url,
            headers=_wire.headers(self.api_key),
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )
        self.keys = Keys(self)

    @classmethod
    def from_env(cls, **options: Any) -> "Client":
        """A client for ``CORRAL_SERVER`` with ``CORRAL_API_KEY``."""
        return cls(os.environ.get("CORRAL_SERVER"), os.environ.get("CORRAL_API_KEY"), **options)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                raise ConnectionError(self.url, str(error) or type(error).__name__) from None
            if response.status_code == 429 and attempt < self.max_retries:
                time.sleep(_wire.retry_wait(response, attempt))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _wire.error_from(response)
            return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- the server ------------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        return self._json("GET", "/healthz")

    def info(self) -> Dict[str, Any]:
        """``GET /v1/info``: version, runtimes, limits, isolation."""
        return self._json("GET", "/v1/info")

    # -- sessions --------------------------------------------------------------------------

    def session(self, **options: Any) -> "Session":
        """Creates a session (``name``, ``metadata``, ``runtime``, ``limits``, ``idle_ttl``,
        ``max_ttl``); use it as a context manager to close it on exit."""
        data = self._json("POST", "/v1/sessions", json=_wire.session_body(options))
        return Session(self, data)

    def get_session(self, session_id: str) -> "Session":
        return Session(self, self._json("GET", f"/v1/sessions/{session_id}"))

    def list_sessions(self, state: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every session the key may see (all pages), optionally only those in ``state``."""
        sessions: List[Dict[str, Any]] = []
        params: Dict[str, Any] = {"limit": 500}
        if state:
            params["state"] = state
        while True:
            page = self._json("GET", "/v1/sessions", params=params)
            sessions.extend(page["sessions"])
            if not page.get("next_cursor"):
                return sessions
            params["cursor"] = page["next_cursor"]


class Session:
    """A live session: run code, stream it, move files, interrupt, restart, close."""

    def __init__(self, client: Client, data: Dict[str, Any]):
        self._client = client
        self.id: str = data["id"]
        self.data = data
        self.files = Files(client, self.id)

    def __repr__(self) -> str:
        return f"<corral.Session {self.id} {self.state}>"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def state(self) -> str:
        return self.data.get("state", "")

    def refresh(self) -> "Session":
        """Re-reads the session (state, execution count, expiry)."""
        self.data = self._client._json("GET", f"/v1/sessions/{self.id}")
        return self

    def run(self, code: str, *, timeout: Optional[float] = None) -> Execution:
        """Runs ``code`` after whatever is queued and returns the finished execution (also
        when the code raised: see ``.error`` and ``.raise_for_error()``)."""
        data = self._client._json(
            "POST", f"/v1/sessions/{self.id}/executions", json=_wire.execute_body(code, timeout)
        )
        return Execution.from_json(data)

    def stream(self, code: str, *, timeout: Optional[float] = None) -> Iterator[Event]:
        """Runs ``code`` and yields its events as they happen, ending with ``done``."""
        http = self._client._http
        body = _wire.execute_body(code, timeout)
        try:
            with http.stream(
                "POST",
                f"/v1/sessions/{self.id}/executions",
                json=body,
                headers={"accept": "text/event-stream"},
                timeout=httpx.Timeout(self._client._http.timeout.connect, read=None),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _wire.error_from(response)
                for name, data in _wire.SseParser().parse(response.iter_lines()):
                    if name == "problem":
                        raise error_for(int(data.get("status", 500)), data)
                    yield Event(name, data)
                    if name == "done":
                        return
        except httpx.TransportError as error:
            raise ConnectionError(self._client.url, str(error) or type(error).__name__) from None

    def history(self, limit: int = 100) -> List[Execution]:
        page = self._client._json(
            "GET", f"/v1/sessions/{self.id}/executions", params={"limit": limit}
        )
        return [Execution.from_json(item) for item in page["executions"]]

    def interrupt(self) -> "Session":
        self.data = self._client._json("POST", f"/v1/sessions/{self.id}/interrupt")
        return self

    def restart(self) -> "Session":
        self.data = self._client._json("POST", f"/v1/sessions/{self.id}/restart")
        return self

    def close(self) -> None:
        """Closes the session (a session already gone is fine)."""
        from .errors import NotFound

        try:
            self.data = self._client._json("DELETE", f"/v1/sessions/{self.id}")
        except NotFound:
            pass


class Files:
    """A session's workspace: ``upload``, ``download``, ``list``, ``delete``."""

    def __init__(self, client: Client, session_id: str):
        self._client = client
        self._prefix = f"/v1/sessions/{session_id}/files"

    def upload(self, path: str, data: Union[bytes, str, IO[bytes]]) -> Dict[str, Any]:
        """Writes ``data`` (bytes, text, or a binary file object) to ``path``; parent
        directories are created. Returns ``{path, size}``."""
        content = data.encode() if isinstance(data, str) else data
        return self._client._json(
            "PUT",
            f"{self._prefix}/{_wire.file_path(path)}",
            content=content,
            headers={"content-type": "application/octet-stream"},
        )

    def download(self, path: str) -> bytes:
        return self._client._request("GET", f"{self._prefix}/{_wire.file_path(path)}").content

    def list(self, dir: str = "") -> List[FileEntry]:  # noqa: A002 - the API's name
        params = {"dir": _wire.file_path(dir) if dir else ""}
        listing = self._client._json("GET", self._prefix, params=params)
        return [FileEntry.from_json(entry) for entry in listing["entries"]]

    def delete(self, path: str) -> None:
        self._client._request("DELETE", f"{self._prefix}/{_wire.file_path(path)}")


class Keys:
    """API keys: ``create`` (the secret is returned once), ``list``, ``revoke``."""

    def __init__(self, client: Client):
        self._client = client

    def create(
        self,
        scope: str,
        *,
        tenant: Optional[str] = None,
        session_id: Optional[str] = None,
        name: Optional[str] = None,
        expires_at: Optional[str] = None,
    ) -> IssuedKey:
        body = _wire.session_body(
            {"scope": scope, "tenant": tenant, "session_id": session_id, "name": name,
             "expires_at": expires_at}
        )
        data = self._client._json("POST", "/v1/keys", json=body)
        return IssuedKey(data["key"], Key.from_json(data))

    def list(self) -> List[Key]:
        return [Key.from_json(item) for item in self._client._json("GET", "/v1/keys")["keys"]]

    def revoke(self, key_id: str) -> Key:
        return Key.from_json(self._client._json("DELETE", f"/v1/keys/{key_id}"))
