"""``moechat.Client``: a blocking client over the Rust async client.

Every call releases the GIL while it waits, so one thread may ``recv`` while another
sends; the connection answers the server's heartbeat pings by itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import TracebackType

from . import _moechat
from ._errors import ConnectionClosed, MoeChatError
from ._types import Message, Receipt


class Client:
    """A connection to a MoeChat server (``ConnectionError`` if it cannot be made).

    ``timeout`` (seconds) is the default for every network call; each call also takes
    its own ``timeout=`` and raises the built-in ``TimeoutError`` when it expires.

    After ``login`` the client delivers at least once: it acknowledges a direct message
    once the application is done with it, that is when it comes back to ``recv`` for the
    next one (or closes the client), so a program that crashes while handling a message
    gets it again at its next login. It drops repeats, and when the connection breaks it
    reconnects with backoff and resumes the session, re-sending what had no receipt
    yet (each send carries a nonce, so nothing is stored twice). ``on_disconnect(error)``
    and ``on_reconnect()`` are called from a background thread when that happens.
    ``reconnect=False`` keeps one connection: any break ends the client. It never
    reconnects after a takeover (``ConnectionClosed`` with code 64) or ``logout``.

    ``tls=True`` speaks TLS and verifies the server against the system's CA roots, or
    only against the PEM file ``ca``, for the name ``host`` (or ``server_name``);
    ``TLSError`` when it fails (another name, expired, unknown CA).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3541,
        timeout: float | None = 10.0,
        *,
        reconnect: bool = True,
        on_disconnect: Callable[[MoeChatError], object] | None = None,
        on_reconnect: Callable[[], object] | None = None,
        tls: bool = False,
        ca: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> None:
        self._core = _moechat.ClientCore(
            host,
            port,
            timeout,
            reconnect,
            on_disconnect,
            on_reconnect,
            tls,
            ca,
            server_name,
        )
        # The receive loop's one call per message goes straight into the extension:
        # the method below documents it, this skips its Python frame (W5 in
        # docs/BENCHMARKS.md). Same signature, same result; a subclass that
        # overrides recv keeps its own.
        if type(self).recv is Client.recv:
            self.recv = self._core.recv  # type: ignore[method-assign]

    def register(self, user: str, password: str, *, timeout: float | None = None) -> None:
        """Create a user; ``QueryError`` with code 43 if taken, 44 if registration is closed."""
        self._core.register(user, password, timeout)

    def login(self, user: str, password: str, *, timeout: float | None = None) -> str:
        """Log in; returns the session token. ``LoginError`` (code 20, …) on failure."""
        return self._core.login(user, password, timeout)

    def users(self, *, timeout: float | None = None) -> list[str]:
        """Online users, sorted."""
        return self._core.users(timeout)

    def send(self, to: str, text: str, *, timeout: float | None = None) -> Receipt:
        """Send a direct message; the receipt says whether it was stored for an offline user."""
        return Receipt._from_core(self._core.send(to, text, timeout))

    def broadcast(self, text: str, *, timeout: float | None = None) -> Receipt:
        """Send to every online user but yourself."""
        return Receipt._from_core(self._core.broadcast(text, timeout))

    def history(
        self,
        with_: str,
        limit: int = 50,
        before: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[Message]:
        """Stored messages with a user (``"*"`` for broadcasts), oldest first."""
        return self._core.history(with_, limit, before, timeout)

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next pushed message, or ``None`` when ``timeout`` seconds pass first.

        ``timeout=None`` waits until a message arrives; ``ConnectionClosed`` once the
        connection has ended."""
        return self._core.recv(timeout)

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes."""
        while True:
            try:
                message = self.recv()
            except ConnectionClosed:
                return
            if message is not None:
                yield message

    def ping(self, *, timeout: float | None = None) -> float:
        """Round-trip time to the server, seconds."""
        return self._core.ping(timeout)

    def logout(self, *, timeout: float | None = None) -> None:
        """End the session; the server closes the connection."""
        self._core.logout(timeout)

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
