"""Exceptions mirroring corral's problem types (RFC 9457 problem+json bodies).

Every failed call raises a subclass of :class:`CorralError`. Answers from the server are
:class:`APIError` subclasses chosen by HTTP status; each keeps the problem's stable ``code``
(e.g. ``session_not_found``), ``title``, ``detail`` and the whole ``problem`` body.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class CorralError(Exception):
    """Base class of every error this client raises."""


class ConnectionError(CorralError):  # noqa: A001 - mirrors the builtin's meaning
    """The server could not be reached (refused, unknown host, timed out, reset)."""

    def __init__(self, url: str, reason: str):
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot reach a corral server at {url} ({reason}); set CORRAL_SERVER or pass url="
        )


class APIError(CorralError):
    """The server answered with an error (a problem+json body when it is corral's)."""

    status: int
    code: str
    title: str
    detail: str
    problem: Dict[str, Any]

    def __init__(self, status: int, problem: Optional[Dict[str, Any]], body: str = ""):
        problem = problem or {}
        self.status = status
        self.problem = problem
        self.code = str(problem.get("code", "")) or f"http_{status}"
        self.type = str(problem.get("type", ""))
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", "")) or body or f"HTTP {status}"
        super().__init__(f"{self.detail} ({self.code}, HTTP {status})")


class InvalidRequest(APIError):
    """400 or 422: malformed JSON, a wrong field, a value out of range."""


class Unauthorized(APIError):
    """401: no key, or a key that is unknown, revoked or expired."""


class Forbidden(APIError):
    """403: the key may not do this (e.g. a session key managing keys)."""


class NotFound(APIError):
    """404: no such session, execution or file (or one the key may not see)."""


class Conflict(APIError):
    """409: the session has ended, is draining, or the path has the wrong type."""


class PayloadTooLarge(APIError):
    """413: the body or file is larger than the server allows."""


class RateLimited(APIError):
    """429: a queue or quota is full; ``retry_after`` is the server's hint in seconds."""

    retry_after: Optional[float] = None


class ServerError(APIError):
    """5xx: the server failed or is shutting down; the detail never carries internals."""


_BY_STATUS = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
}


def error_for(status: int, problem: Optional[Dict[str, Any]], body: str = "") -> APIError:
    """The exception for an error answer."""
    kind = _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else APIError
    return kind(status, problem, body)
