"""Reconnecting Python clients: a server restart on the same port and database is
survived, sends made meanwhile wait and get their receipt, callbacks report it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import moechat
import pytest


def _restartable(tmp_path: Path) -> moechat.Server:
    srv = moechat.Server(port=0, db=str(tmp_path / "chat.db"))
    for u, p in [("alice", "wonderland"), ("bob", "builder")]:
        srv.add_user(u, p)
    srv.start()
    return srv


def test_client_survives_a_server_restart(tmp_path: Path) -> None:
    srv = _restartable(tmp_path)
    port = srv.port
    events: list[str] = []
    back = threading.Event()

    def disconnected(err: moechat.MoeChatError) -> None:
        events.append(f"down {err.code}")

    def reconnected() -> None:
        events.append("up")
        back.set()

    bob = moechat.Client("127.0.0.1", port, on_disconnect=disconnected, on_reconnect=reconnected)
    bob.login("bob", "builder")
    alice = moechat.Client("127.0.0.1", port, reconnect=False)
    alice.login("alice", "wonderland")
    first = alice.send("bob", "before")
    got = bob.recv(timeout=5)
    assert got is not None and got.msg_id == first.msg_id
    srv.stop()

    # bob sends while the server is down: the call waits and gets its receipt later.
    receipts: list[moechat.Receipt] = []
    t = threading.Thread(target=lambda: receipts.append(bob.send("alice", "while down")))
    t.start()
    srv2 = moechat.Server(port=port, db=str(tmp_path / "chat.db"))
    srv2.start()
    try:
        assert back.wait(timeout=15), events
        t.join(timeout=15)
        assert len(receipts) == 1 and receipts[0].stored
        alice2 = moechat.Client("127.0.0.1", port)
        alice2.login("alice", "wonderland")
        m = alice2.recv(timeout=5)
        assert m is not None and m.text == "while down"
        assert alice2.recv(timeout=0.3) is None, "delivered once"
        sent = alice2.send("bob", "after")
        m = bob.recv(timeout=5)
        assert m is not None and (m.msg_id, m.text) == (sent.msg_id, "after")
        assert events == ["down 65", "up"]
    finally:
        srv2.stop()


def test_async_client_survives_a_server_restart(tmp_path: Path) -> None:
    srv = _restartable(tmp_path)
    port = srv.port

    async def main() -> None:
        bob = await moechat.AsyncClient.connect("127.0.0.1", port)
        await bob.login("bob", "builder")
        srv.stop()
        srv2 = moechat.Server(port=port, db=str(tmp_path / "chat.db"))
        srv2.start()
        try:
            assert await bob.users(timeout=15) == ["bob"]
        finally:
            await asyncio.get_running_loop().run_in_executor(None, srv2.stop)

    asyncio.run(main())


def test_no_reconnect_after_logout(server: moechat.Server) -> None:
    c = moechat.Client("127.0.0.1", server.port)
    c.login("alice", "wonderland")
    c.logout()
    with pytest.raises(moechat.ConnectionClosed):
        c.recv(timeout=5)
