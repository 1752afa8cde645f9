"""``moechat.Server``: the Rust MoeChat server, run in this process."""

from __future__ import annotations

import os
from types import TracebackType

from . import _moechat


class Server:
    """A MoeChat server on its own threads; ``start`` returns once it listens.

    ``port=0`` picks a free port (read it from ``port`` after ``start``); ``db`` is a
    SQLite file path or ``":memory:"``. The keyword settings are the command line's flags
    of the same names (``rate_limit=0`` and ``login_rate=0`` turn those limits off).

    ``tls_cert`` and ``tls_key`` (PEM files, given together) make every connection TLS;
    ``start`` raises ``TLSError`` if they cannot be used.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str = ":memory:",
        *,
        heartbeat: float = 60.0,
        registration: bool = True,
        max_frame_bytes: int = 65536,
        max_text_bytes: int = 8192,
        max_connections: int = 10000,
        session_ttl: float = 86400.0,
        rate_limit: float = 0.0,
        rate_burst: int = 100,
        login_rate: int = 120,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        self._core = _moechat.ServerCore(
            host,
            port,
            db,
            heartbeat,
            registration,
            max_frame_bytes,
            max_text_bytes,
            max_connections,
            session_ttl,
            rate_limit,
            rate_burst,
            login_rate,
            tls_cert,
            tls_key,
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
    def running(self) -> bool:
        return self._core.running

    def online_users(self) -> list[str]:
        """Users logged in right now, sorted."""
        return self._core.online_users()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop gracefully (clients get ``e``/65, pending messages are committed); idempotent."""
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
