"""``moechat.Server``: the Rust MoeChat server, run in this process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType

from . import _moechat

_D = _moechat.DEFAULTS


class Server:
    """A MoeChat server on its own threads; ``start`` returns once it listens.

    ``port=0`` picks a free port (read it from ``port`` after ``start``); ``db`` is a
    SQLite file path or ``":memory:"``. The keyword settings are the command line's flags
    of the same names, with the same defaults and bounds (``rate_limit=0``,
    ``login_rate=0`` and ``account_failures=0`` turn those limits off;
    ``hash_workers=None`` is one per core). A value out of bounds raises ``ValueError``
    with the sentence the command line prints for it.

    ``tls_cert`` and ``tls_key`` (PEM files, given together) make every connection TLS;
    ``start`` raises ``TLSError`` if they cannot be used.

    ``http="HOST:PORT"`` also serves the chat page, the protocol over WebSocket at
    ``/ws``, ``/metrics`` and ``/healthz`` (HTTPS with a certificate); port 0 picks a
    free port, read back from ``http_port``. ``None`` or ``"off"`` (the default for an
    embedded server) opens no HTTP listener. ``http_origins`` lists the other sites
    whose pages may open ``/ws`` (``"*"``: any).
    """

    def __init__(
        self,
        host: str = _D.host,
        port: int = _D.port,
        db: str = _D.db,
        *,
        heartbeat: float = _D.heartbeat,
        registration: bool = _D.registration,
        max_frame_bytes: int = _D.max_frame_bytes,
        max_text_bytes: int = _D.max_text_bytes,
        max_connections: int = _D.max_connections,
        outbound_queue: int = _D.outbound_queue,
        session_ttl: float = _D.session_ttl,
        rate_limit: float = _D.rate_limit,
        rate_burst: int = _D.rate_burst,
        login_rate: int = _D.login_rate,
        account_failures: int = _D.account_failures,
        hash_workers: int | None = None,
        hash_queue: int = _D.hash_queue,
        hash_wait: float = _D.hash_wait,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        http: str | None = None,
        http_origins: Sequence[str] = (),
    ) -> None:
        self._core = _moechat.ServerCore(
            host,
            port,
            db,
            heartbeat=heartbeat,
            registration=registration,
            max_frame_bytes=max_frame_bytes,
            max_text_bytes=max_text_bytes,
            max_connections=max_connections,
            outbound_queue=outbound_queue,
            session_ttl=session_ttl,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            login_rate=login_rate,
            account_failures=account_failures,
            hash_workers=hash_workers,
            hash_queue=hash_queue,
            hash_wait=hash_wait,
            tls_cert=tls_cert,
            tls_key=tls_key,
            http=http,
            http_origins=list(http_origins),
        )

    def add_user(self, name: str, password: str) -> None:
        """Create a user; ``ValueError`` for an invalid name or password,
        ``UserExistsError`` if the name is taken."""
        self._core.add_user(name, password)

    def start(self) -> None:
        """Start serving; ``RuntimeError`` if already running, ``OSError`` if the port is taken."""
        self._core.start()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, with the real port once started."""
        return self._core.address

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The HTTP listener's ``(host, port)`` (the real port once started), or ``None``."""
        return self._core.http_address

    @property
    def http_port(self) -> int | None:
        """The HTTP listener's port (the real one once started), or ``None`` if it is off."""
        address = self.http_address
        return None if address is None else address[1]

    @property
    def running(self) -> bool:
        return self._core.running

    def online_users(self) -> list[str]:
        """Users logged in right now, sorted."""
        return self._core.online_users()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop gracefully (clients get ``e``/65, pending messages are committed); idempotent.

        Raises ``TimeoutError`` if the server has not stopped within ``timeout`` seconds
        (it goes on stopping; call ``stop`` again to wait more), and ``MoeChatError`` if
        it ended abnormally."""
        self._core.stop(timeout)

    def serve_forever(self) -> None:
        """Start if needed and block until stopped; Ctrl-C stops the server cleanly."""
        if not self.running:
            self.start()
        try:
            self._core.wait_stopped()
        except KeyboardInterrupt:
            self.stop()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<moechat.Server {self.host}:{self.port} {state}>"
