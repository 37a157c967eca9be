"""What the sync and async clients share: URLs, headers, error answers, Retry-After, and
server-sent event parsing. No IO here."""

from __future__ import annotations

import email.utils
import json
import os
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple
from urllib.parse import quote

import httpx

from .errors import APIError, RateLimited, error_for

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
# Longest wait for one Retry-After before retrying (a longer hint is honoured up to this).
MAX_RETRY_WAIT = 30.0


def base_url(url: Optional[str]) -> str:
    """The server's base URL: ``url``, else ``CORRAL_SERVER``, else the default; ``http://``
    is assumed without a scheme."""
    url = (url or os.environ.get("CORRAL_SERVER") or DEFAULT_URL).strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def env_api_key(api_key: Optional[str]) -> Optional[str]:
    return api_key if api_key is not None else (os.environ.get("CORRAL_API_KEY") or None)


def headers(api_key: Optional[str]) -> Dict[str, str]:
    result = {"user-agent": "corral-client-python/0.1.0"}
    if api_key:
        result["authorization"] = f"Bearer {api_key}"
    return result


def file_path(path: str) -> str:
    """A workspace path for a URL; refuses what would leave the workspace before sending."""
    if path.startswith("/"):
        raise ValueError(f"workspace path {path!r} is absolute; paths are relative to the workspace")
    if ".." in path.split("/"):
        raise ValueError(f"workspace path {path!r} contains '..'; paths may not leave the workspace")
    return quote(path, safe="/")


def error_from(response: httpx.Response) -> APIError:
    body = response.text
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            problem = None
    except ValueError:
        problem = None
    error = error_for(response.status_code, problem, body)
    if isinstance(error, RateLimited):
        error.retry_after = retry_after(response)
    return error


def retry_after(response: httpx.Response) -> Optional[float]:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), if the server sent one."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_wait(response: httpx.Response, attempt: int) -> float:
    """How long to wait before retrying a 429: the server's hint, else a growing backoff."""
    hinted = retry_after(response)
    wait = hinted if hinted is not None else 0.25 * (2 ** attempt)
    return min(wait, MAX_RETRY_WAIT)


def session_body(options: Dict[str, Any]) -> Dict[str, Any]:
    """The create-session body: name, metadata, runtime, limits, idle_ttl, max_ttl."""
    return {key: value for key, value in options.items() if value is not None}


def execute_body(code: str, timeout: Optional[float]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"code": code}
    if timeout is not None:
        body["timeout"] = timeout
    return body


class SseParser:
    """Incremental ``text/event-stream`` parser: lines in, ``(event, data)`` pairs out."""

    def __init__(self) -> None:
        self._event: Optional[str] = None
        self._data: Optional[List[str]] = None

    def feed(self, line: str) -> Optional[Tuple[str, Any]]:
        line = line.rstrip("\r\n")
        if line == "":
            if self._data is None:
                self._event = None
                return None
            event, data = self._event or "message", "\n".join(self._data)
            self._event, self._data = None, None
            try:
                return event, json.loads(data)
            except ValueError:
                return event, data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data = (self._data or []) + [value]
        return None

    def parse(self, lines: Iterable[str]) -> Iterator[Tuple[str, Any]]:
        for line in lines:
            message = self.feed(line)
            if message is not None:
                yield message
