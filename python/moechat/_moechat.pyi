from collections.abc import Awaitable, Callable
from os import PathLike
from typing import Any, TypeAlias, final

from ._types import Message

__all__ = [
    "__version__",
    "cli_main",
    "DEFAULTS",
    "Defaults",
    "ServerCore",
    "ClientCore",
    "AsyncClientCore",
]

__version__: str

_ReceiptTuple: TypeAlias = tuple[int, bool, int | None, bool]
_Path: TypeAlias = str | PathLike[str]

def cli_main(argv: list[str]) -> int: ...

@final
class Defaults:
    @property
    def heartbeat(self) -> float: ...
    @property
    def registration(self) -> bool: ...
    @property
    def max_frame_bytes(self) -> int: ...
    @property
    def max_text_bytes(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def session_ttl(self) -> float: ...
    @property
    def rate_limit(self) -> float: ...
    @property
    def rate_burst(self) -> int: ...
    @property
    def login_rate(self) -> int: ...
    @property
    def account_failures(self) -> int: ...
    @property
    def hash_queue(self) -> int: ...
    @property
    def hash_wait(self) -> float: ...

DEFAULTS: Defaults

@final
class ServerCore:
    def __new__(
        cls,
        host: str,
        port: int,
        db: str,
        *,
        heartbeat: float,
        registration: bool,
        max_frame_bytes: int,
        max_text_bytes: int,
        max_connections: int,
        session_ttl: float,
        rate_limit: float,
        rate_burst: int,
        login_rate: int,
        account_failures: int,
        hash_workers: int | None,
        hash_queue: int,
        hash_wait: float,
        tls_cert: _Path | None,
        tls_key: _Path | None,
    ) -> ServerCore: ...
    def add_user(self, name: str, password: str) -> None: ...
    def start(self) -> None: ...
    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def running(self) -> bool: ...
    def online_users(self) -> list[str]: ...
    def stop(self, timeout: float | None = 10.0) -> None: ...
    def wait_stopped(self) -> None: ...

@final
class ClientCore:
    def __new__(
        cls,
        host: str,
        port: int,
        timeout: float | None = None,
        reconnect: bool = True,
        on_disconnect: Callable[[Any], object] | None = None,
        on_reconnect: Callable[[], object] | None = None,
        tls: bool = False,
        ca: _Path | None = None,
        server_name: str | None = None,
    ) -> ClientCore: ...
    def login(self, user: str, password: str, timeout: float | None = None) -> str: ...
    def register(self, user: str, password: str, timeout: float | None = None) -> None: ...
    def users(self, timeout: float | None = None) -> list[str]: ...
    def send(self, to: str, text: str, timeout: float | None = None) -> _ReceiptTuple: ...
    def broadcast(self, text: str, timeout: float | None = None) -> _ReceiptTuple: ...
    def history(
        self,
        with_: str,
        limit: int = 50,
        before: int | None = None,
        timeout: float | None = None,
    ) -> list[Message]: ...
    def ping(self, timeout: float | None = None) -> float: ...
    def logout(self, timeout: float | None = None) -> None: ...
    def recv(self, timeout: float | None = None) -> Message | None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

@final
class AsyncClientCore:
    @staticmethod
    def connect(
        host: str,
        port: int,
        timeout: float | None = None,
        reconnect: bool = True,
        on_disconnect: Callable[[Any], object] | None = None,
        on_reconnect: Callable[[], object] | None = None,
        tls: bool = False,
        ca: _Path | None = None,
        server_name: str | None = None,
    ) -> Awaitable[AsyncClientCore]: ...
    def login(self, user: str, password: str, timeout: float | None = None) -> Awaitable[str]: ...
    def register(
        self, user: str, password: str, timeout: float | None = None
    ) -> Awaitable[None]: ...
    def users(self, timeout: float | None = None) -> Awaitable[list[str]]: ...
    def send(
        self, to: str, text: str, timeout: float | None = None
    ) -> Awaitable[_ReceiptTuple]: ...
    def broadcast(self, text: str, timeout: float | None = None) -> Awaitable[_ReceiptTuple]: ...
    def history(
        self,
        with_: str,
        limit: int = 50,
        before: int | None = None,
        timeout: float | None = None,
    ) -> Awaitable[list[Message]]: ...
    def ping(self, timeout: float | None = None) -> Awaitable[float]: ...
    def logout(self, timeout: float | None = None) -> Awaitable[None]: ...
    def recv(self, timeout: float | None = None) -> Awaitable[Message | None]: ...
    def try_recv(self) -> Message | None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
