"""The exception hierarchy of the moechat package.

Every error from a server carries the protocol ``code`` it was answered with (or
``None`` when there was none) and the server's one-sentence ``reason``.
"""

from __future__ import annotations


class MoeChatError(Exception):
    """Base class of every MoeChat error."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason if code is None else f"{reason} (code {code})")
        self.reason = reason
        self.code = code


class LoginError(MoeChatError):
    """A login failed: 20 wrong credentials, 21 malformed, 22 too many attempts, 23 already
    logged in, 24 busy (the client retries it for up to 30 s before raising it)."""


class QueryError(MoeChatError):
    """A query failed: 40 unknown, 41 not logged in, 42 bad arguments, 43 name taken,
    44 registration closed."""


class SendError(MoeChatError):
    """A message was refused: codes 70 to 75."""


class ProtocolError(MoeChatError):
    """The server answered with something unexpected or reported a server-side error (60s)."""


class UserExistsError(MoeChatError):
    """A user of that name already exists."""


class TLSError(MoeChatError, ConnectionError):
    """TLS could not be set up: the server's certificate failed verification (another
    name, expired, not from a trusted CA), the server does not speak TLS, or a
    certificate, key or CA file cannot be used."""


class ConnectionClosed(MoeChatError, ConnectionError):
    """The connection ended; ``code`` is the server's closing code (64, 65, 66, 67, 68, …)
    when it sent one."""
