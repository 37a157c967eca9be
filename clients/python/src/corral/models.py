"""Typed views of the native API's JSON: executions, their outputs and errors, stream events,
files, sessions and keys. Each keeps the JSON it came from as ``raw``."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional


def _time(value: Any) -> Optional[datetime]:
    """An RFC 3339 time (older servers sent file times as Unix seconds)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass
class ExecutionError:
    """What the code raised: ``ename``, ``evalue`` and the traceback's lines."""

    ename: str
    evalue: str
    traceback: List[str]

    @classmethod
    def from_json(cls, data: Optional[Dict[str, Any]]) -> Optional["ExecutionError"]:
        if not data:
            return None
        return cls(data.get("ename", ""), data.get("evalue", ""), list(data.get("traceback", [])))

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}"


@dataclass
class Output:
    """One ordered output: a ``stream`` chunk (``name``, ``text``) or a ``display`` bundle
    (``data`` keyed by MIME type, ``metadata``)."""

    type: str
    name: Optional[str] = None
    text: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)
    metadata: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Output":
        return cls(
            type=data.get("type", ""),
            name=data.get("name"),
            text=data.get("text"),
            data=dict(data.get("data") or {}),
            metadata=dict(data.get("metadata") or {}),
        )

    @property
    def png(self) -> Optional[bytes]:
        """The decoded ``image/png`` of a display, if it has one."""
        encoded = self.data.get("image/png")
        return base64.b64decode(encoded) if isinstance(encoded, str) else None


@dataclass
class Execution:
    """A finished execution."""

    session_id: str
    execution_count: int
    status: str
    stdout: str
    stderr: str
    outputs: List[Output]
    result: Optional[Dict[str, Any]]
    error: Optional[ExecutionError]
    duration_ms: int
    truncated: bool
    raw: Dict[str, Any]

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Execution":
        return cls(
            session_id=data.get("session_id", ""),
            execution_count=int(data.get("execution_count", 0)),
            status=data.get("status", ""),
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            outputs=[Output.from_json(item) for item in data.get("outputs", [])],
            result=data.get("result"),
            error=ExecutionError.from_json(data.get("error")),
            duration_ms=int(data.get("duration_ms", 0)),
            truncated=bool(data.get("truncated", False)),
            raw=data,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> Optional[str]:
        """The ``text/plain`` of the last expression's value (``None`` when there is none)."""
        if not self.result:
            return None
        value = self.result.get("text/plain")
        return value if isinstance(value, str) else None

    @property
    def png(self) -> Optional[bytes]:
        """The first PNG the execution produced (its result, else a display), decoded."""
        if self.result and isinstance(self.result.get("image/png"), str):
            return base64.b64decode(self.result["image/png"])
        for output in self.outputs:
            if output.png is not None:
                return output.png
        return None

    def raise_for_error(self) -> "Execution":
        """Raises :class:`ExecutionFailed` unless the status is ``ok``; returns ``self``."""
        if not self.ok:
            raise ExecutionFailed(self)
        return self


class ExecutionFailed(Exception):
    """Raised by :meth:`Execution.raise_for_error` for an execution that did not succeed."""

    def __init__(self, execution: Execution):
        self.execution = execution
        what = str(execution.error) if execution.error else execution.status
        super().__init__(what)


@dataclass
class Event:
    """One event of a streamed execution: ``stream`` (``name``, ``text``), ``display`` and
    ``result`` (``data``), ``error`` (``error``), and finally ``done`` (``execution``)."""

    type: str
    data: Dict[str, Any]

    @property
    def name(self) -> Optional[str]:
        return self.data.get("name")

    @property
    def text(self) -> Optional[str]:
        if self.type == "stream":
            return self.data.get("text")
        bundle = self.data.get("data") or {}
        value = bundle.get("text/plain")
        return value if isinstance(value, str) else None

    @property
    def error(self) -> Optional[ExecutionError]:
        return ExecutionError.from_json(self.data) if self.type == "error" else None

    @property
    def execution(self) -> Optional[Execution]:
        return Execution.from_json(self.data) if self.type == "done" else None


@dataclass
class FileEntry:
    """One entry of a workspace directory listing."""

    name: str
    type: str
    size: int
    modified: Optional[datetime]

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "FileEntry":
        return cls(data["name"], data.get("type", ""), int(data.get("size", 0)),
                   _time(data.get("modified")))


@dataclass
class Key:
    """An API key's record (never its secret)."""

    id: str
    scope: str
    name: Optional[str]
    tenant: Optional[str]
    session_id: Optional[str]
    created_at: Optional[datetime]
    revoked_at: Optional[datetime]
    expires_at: Optional[datetime]
    raw: Dict[str, Any]

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Key":
        return cls(
            id=data["id"],
            scope=data.get("scope", ""),
            name=data.get("name"),
            tenant=data.get("tenant"),
            session_id=data.get("session_id"),
            created_at=_time(data.get("created_at")),
            revoked_at=_time(data.get("revoked_at")),
            expires_at=_time(data.get("expires_at")),
            raw=data,
        )


@dataclass
class IssuedKey:
    """A newly issued key: ``key`` is the secret, shown this once."""

    key: str
    details: Key
