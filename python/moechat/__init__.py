"""MoeChat: a chat server and clients speaking newline-delimited JSON.

The server and the clients are the Rust implementation, exposed through PyO3::

    import moechat

    with moechat.Server(port=0) as srv:
        srv.add_user("alice", "wonderland")
        with moechat.Client("127.0.0.1", srv.port) as c:
            c.login("alice", "wonderland")
            print(c.users())
"""

from ._aio import AsyncClient
from ._client import Client
from ._errors import (
    ConnectionClosed,
    LoginError,
    MoeChatError,
    ProtocolError,
    QueryError,
    SendError,
    TLSError,
    UserExistsError,
)
from ._moechat import __version__
from ._server import Server
from ._types import Message, Receipt

__all__ = [
    "AsyncClient",
    "Client",
    "ConnectionClosed",
    "LoginError",
    "Message",
    "MoeChatError",
    "ProtocolError",
    "QueryError",
    "Receipt",
    "SendError",
    "Server",
    "TLSError",
    "UserExistsError",
    "__version__",
]
