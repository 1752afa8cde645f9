"""moechat.AsyncClient: the same calls as coroutines, async iteration, async with."""

from __future__ import annotations

import asyncio

import moechat
import pytest


async def _client(
    srv: moechat.Server, user: str, password: str, *, reconnect: bool = True
) -> moechat.AsyncClient:
    c = await moechat.AsyncClient.connect("127.0.0.1", srv.port, timeout=10.0, reconnect=reconnect)
    await c.login(user, password)
    return c


def test_every_call_async(server: moechat.Server) -> None:
    async def main() -> None:
        async with await moechat.AsyncClient.connect("127.0.0.1", server.port) as c:
            with pytest.raises(moechat.QueryError) as q:
                await c.users()
            assert q.value.code == 41
            with pytest.raises(moechat.LoginError) as login:
                await c.login("alice", "nope")
            assert login.value.code == 20
            await c.register("dave", "pw")
            assert len(await c.login("dave", "pw")) == 24
            bob = await _client(server, "bob", "builder")
            assert await c.users() == ["bob", "dave"]
            r = await c.send("bob", "hi")
            assert not r.stored
            m = await bob.recv(timeout=5)
            assert m is not None and m.text == "hi" and m.msg_id == r.msg_id
            b = await c.broadcast("all")
            assert b.recipients == 1
            m = await bob.recv(timeout=5)
            assert m is not None and m.kind == "broadcast"
            assert (await c.send("carol", "later")).stored
            with pytest.raises(moechat.SendError) as s:
                await c.send("nobody", "x")
            assert s.value.code == 71
            assert [x.text for x in await c.history("bob")] == ["hi"]
            assert await bob.recv(timeout=0.1) is None
            assert await c.ping() >= 0
            await c.logout()
            with pytest.raises(moechat.ConnectionClosed):
                await c.users()
        assert c.closed

    asyncio.run(main())


def test_async_for_until_closed(server: moechat.Server) -> None:
    async def main() -> list[str]:
        alice = await _client(server, "alice", "wonderland")
        bob = await _client(server, "bob", "builder", reconnect=False)
        for i in range(5):
            await alice.send("bob", f"m{i}")
        got = []
        async for m in bob:
            got.append(m.text)
            if len(got) == 5:
                await asyncio.get_running_loop().run_in_executor(None, server.stop)
        return got

    assert asyncio.run(main()) == [f"m{i}" for i in range(5)]


def test_cancelled_recv_loses_nothing(server: moechat.Server) -> None:
    async def main() -> None:
        alice = await _client(server, "alice", "wonderland")
        bob = await _client(server, "bob", "builder")
        waiter = asyncio.ensure_future(bob.recv())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await alice.send("bob", "after the cancel")
        m = await bob.recv(timeout=5)
        assert m is not None and m.text == "after the cancel"

    asyncio.run(main())


def test_async_connect_refused() -> None:
    srv = moechat.Server(port=0)
    srv.start()
    port = srv.port
    srv.stop()

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await moechat.AsyncClient.connect("127.0.0.1", port)

    asyncio.run(main())
