"""corral-client: a Python client for corral's native API.

    import corral

    with corral.Client("http://127.0.0.1:8000") as client:
        with client.session() as session:
            print(session.run("6 * 7").text)   # '42'
"""

from ._async import AsyncClient, AsyncFiles, AsyncKeys, AsyncSession
from ._sync import Client, Files, Keys, Session
from .errors import (
    APIError,
    Conflict,
    ConnectionError,
    CorralError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Unauthorized,
)
from .models import (
    Event,
    Execution,
    ExecutionError,
    ExecutionFailed,
    FileEntry,
    IssuedKey,
    Key,
    Output,
)

__version__ = "0.1.0"


def from_env(**options):
    """A :class:`Client` for ``CORRAL_SERVER`` (default ``http://127.0.0.1:8000``) with
    ``CORRAL_API_KEY``."""
    return Client.from_env(**options)


__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncFiles",
    "AsyncKeys",
    "AsyncSession",
    "Client",
    "Conflict",
    "ConnectionError",
    "CorralError",
    "Event",
    "Execution",
    "ExecutionError",
    "ExecutionFailed",
    "FileEntry",
    "Files",
    "Forbidden",
    "InvalidRequest",
    "IssuedKey",
    "Key",
    "Keys",
    "NotFound",
    "Output",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "Session",
    "Unauthorized",
    "from_env",
]
