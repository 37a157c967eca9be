"""The asynchronous client: :class:`AsyncClient`, :class:`AsyncSession`, files and keys —
the same calls as the sync client, awaited."""

from __future__ import annotations

import asyncio
import os
from typing import IO, Any, AsyncIterator, Dict, List, Optional, Union

import httpx

from . import _wire
from .errors import ConnectionError, NotFound, error_for
from .models import Event, Execution, FileEntry, IssuedKey, Key


class AsyncClient:
    """Async twin of :class:`corral.Client`; use ``async with`` or ``await client.close()``."""

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = _wire.DEFAULT_TIMEOUT,
        max_retries: int = _wire.DEFAULT_MAX_RETRIES,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ):
        self.url = _wire.base_url(url)
        self.api_key = _wire.env_api_key(api_key)
        self.max_retries = max_retries
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=_wire.headers(self.api_key),
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )
        self.keys = AsyncKeys(self)

    @classmethod
    def from_env(cls, **options: Any) -> "AsyncClient":
        return cls(os.environ.get("CORRAL_SERVER"), os.environ.get("CORRAL_API_KEY"), **options)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                raise ConnectionError(self.url, str(error) or type(error).__name__) from None
            if response.status_code == 429 and attempt < self.max_retries:
                await asyncio.sleep(_wire.retry_wait(response, attempt))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise _wire.error_from(response)
            return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    async def health(self) -> Dict[str, Any]:
        return await self._json("GET", "/healthz")

    async def info(self) -> Dict[str, Any]:
        return await self._json("GET", "/v1/info")

    async def session(self, **options: Any) -> "AsyncSession":
        data = await self._json("POST", "/v1/sessions", json=_wire.session_body(options))
        return AsyncSession(self, data)

    async def get_session(self, session_id: str) -> "AsyncSession":
        return AsyncSession(self, await self._json("GET", f"/v1/sessions/{session_id}"))

    async def list_sessions(self, state: Optional[str] = None) -> List[Dict[str, Any]]:
        sessions: List[Dict[str, Any]] = []
        params: Dict[str, Any] = {"limit": 500}
        if state:
            params["state"] = state
        while True:
            page = await self._json("GET", "/v1/sessions", params=params)
            sessions.extend(page["sessions"])
            if not page.get("next_cursor"):
                return sessions
            params["cursor"] = page["next_cursor"]


class AsyncSession:
    """Async twin of :class:`corral.Session`; ``async with`` closes it on exit."""

    def __init__(self, client: AsyncClient, data: Dict[str, Any]):
        self._client = client
        self.id: str = data["id"]
        self.data = data
        self.files = AsyncFiles(client, self.id)

    def __repr__(self) -> str:
        return f"<corral.AsyncSession {self.id} {self.state}>"

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    @property
    def state(self) -> str:
        return self.data.get("state", "")

    async def refresh(self) -> "AsyncSession":
        self.data = await self._client._json("GET", f"/v1/sessions/{self.id}")
        return self

    async def run(self, code: str, *, timeout: Optional[float] = None) -> Execution:
        data = await self._client._json(
            "POST", f"/v1/sessions/{self.id}/executions", json=_wire.execute_body(code, timeout)
        )
        return Execution.from_json(data)

    async def stream(self, code: str, *, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        http = self._client._http
        try:
            async with http.stream(
                "POST",
                f"/v1/sessions/{self.id}/executions",
                json=_wire.execute_body(code, timeout),
                headers={"accept": "text/event-stream"},
                timeout=httpx.Timeout(http.timeout.connect, read=None),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _wire.error_from(response)
                parser = _wire.SseParser()
                async for line in response.aiter_lines():
                    message = parser.feed(line)
                    if message is None:
                        continue
                    name, data = message
                    if name == "problem":
                        raise error_for(int(data.get("status", 500)), data)
                    yield Event(name, data)
                    if name == "done":
                        return
        except httpx.TransportError as error:
            raise ConnectionError(self._client.url, str(error) or type(error).__name__) from None

    async def history(self, limit: int = 100) -> List[Execution]:
        page = await self._client._json(
            "GET", f"/v1/sessions/{self.id}/executions", params={"limit": limit}
        )
        return [Execution.from_json(item) for item in page["executions"]]

    async def interrupt(self) -> "AsyncSession":
        self.data = await self._client._json("POST", f"/v1/sessions/{self.id}/interrupt")
        return self

    async def restart(self) -> "AsyncSession":
        self.data = await self._client._json("POST", f"/v1/sessions/{self.id}/restart")
        return self

    async def close(self) -> None:
        try:
            self.data = await self._client._json("DELETE", f"/v1/sessions/{self.id}")
        except NotFound:
            pass


class AsyncFiles:
    def __init__(self, client: AsyncClient, session_id: str):
        self._client = client
        self._prefix = f"/v1/sessions/{session_id}/files"

    async def upload(self, path: str, data: Union[bytes, str, IO[bytes]]) -> Dict[str, Any]:
        content = data.encode() if isinstance(data, str) else data
        if hasattr(content, "read"):
            content = content.read()  # type: ignore[union-attr]
        return await self._client._json(
            "PUT",
            f"{self._prefix}/{_wire.file_path(path)}",
            content=content,
            headers={"content-type": "application/octet-stream"},
        )

    async def download(self, path: str) -> bytes:
        response = await self._client._request("GET", f"{self._prefix}/{_wire.file_path(path)}")
        return response.content

    async def list(self, dir: str = "") -> List[FileEntry]:  # noqa: A002
        params = {"dir": _wire.file_path(dir) if dir else ""}
        listing = await self._client._json("GET", self._prefix, params=params)
        return [FileEntry.from_json(entry) for entry in listing["entries"]]

    async def delete(self, path: str) -> None:
        await self._client._request("DELETE", f"{self._prefix}/{_wire.file_path(path)}")


class AsyncKeys:
    def __init__(self, client: AsyncClient):
        self._client = client

    async def create(
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
        data = await self._client._json("POST", "/v1/keys", json=body)
        return IssuedKey(data["key"], Key.from_json(data))

    async def list(self) -> List[Key]:
        data = await self._client._json("GET", "/v1/keys")
        return [Key.from_json(item) for item in data["keys"]]

    async def revoke(self, key_id: str) -> Key:
        return Key.from_json(await self._client._json("DELETE", f"/v1/keys/{key_id}"))
