"""``moechat.AsyncClient``: the asyncio twin of ``moechat.Client``, same Rust client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from . import _moechat
from ._errors import ConnectionClosed, MoeChatError
from ._types import Message, Receipt


class AsyncClient:
    """A connection to a MoeChat server for asyncio.

    Make one with ``await AsyncClient.connect(host, port)``.

    Every method is a coroutine with the same arguments and errors as on ``Client``.
    """

    def __init__(self, core: _moechat.AsyncClientCore) -> None:
        self._core = core

    @classmethod
    async def connect(
        cls,
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
    ) -> AsyncClient:
        """Connect; ``ConnectionError`` if the server cannot be reached.

        Delivery, reconnection and TLS (``tls``, ``ca``, ``server_name``) work as on
        ``Client``; the callbacks are called from a background thread, not from the
        event loop."""
        core = await _moechat.AsyncClientCore.connect(
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
        return cls(core)

    async def register(self, user: str, password: str, *, timeout: float | None = None) -> None:
        await self._core.register(user, password, timeout)

    async def login(self, user: str, password: str, *, timeout: float | None = None) -> str:
        return await self._core.login(user, password, timeout)

    async def users(self, *, timeout: float | None = None) -> list[str]:
        return await self._core.users(timeout)

    async def send(self, to: str, text: str, *, timeout: float | None = None) -> Receipt:
        return Receipt._from_core(await self._core.send(to, text, timeout))

    async def broadcast(self, text: str, *, timeout: float | None = None) -> Receipt:
        return Receipt._from_core(await self._core.broadcast(text, timeout))

    async def history(
        self,
        with_: str,
        limit: int = 50,
        before: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[Message]:
        return await self._core.history(with_, limit, before, timeout)

    async def recv(self, timeout: float | None = None) -> Message | None:
        """The next pushed message, or ``None`` when ``timeout`` seconds pass first."""
        # Messages arrive in batches; those already here need no trip to the runtime.
        message = self._core.try_recv()
        if message is None:
            message = await self._core.recv(timeout)
        return message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        while True:
            try:
                message = await self.recv()
            except ConnectionClosed:
                raise StopAsyncIteration from None
            if message is not None:
                return message

    async def ping(self, *, timeout: float | None = None) -> float:
        return await self._core.ping(timeout)

    async def logout(self, *, timeout: float | None = None) -> None:
        await self._core.logout(timeout)

    async def close(self) -> None:
        """Close the connection; idempotent."""
        self._core.close()

    @property
    def closed(self) -> bool:
        return self._core.closed

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
