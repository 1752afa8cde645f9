"""moechat.Client from Python against a real server over TCP."""

from __future__ import annotations

import datetime
import socket
import threading
import time

import moechat
import pytest
from conftest import logged_in


def test_every_call(server: moechat.Server) -> None:
    with moechat.Client("127.0.0.1", server.port) as c:
        c.register("dave", "pw")
        with pytest.raises(moechat.QueryError) as taken:
            c.register("dave", "pw")
        assert taken.value.code == 43
        token = c.login("dave", "pw")
        assert len(token) == 24
        bob = logged_in(server, "bob")
        assert c.users() == ["bob", "dave"]
        r = c.send("bob", "hi")
        assert r == moechat.Receipt(msg_id=r.msg_id, stored=False, recipients=None)
        m = bob.recv(timeout=5)
        assert m is not None
        assert (m.msg_id, m.kind, m.sender, m.recipient, m.text) == (
            r.msg_id,
            "direct",
            "dave",
            "bob",
            "hi",
        )
        assert m.time.tzinfo == datetime.timezone.utc
        assert abs(m.time.timestamp() - time.time()) < 60
        assert "hi" in repr(m)
        b = c.broadcast("all")
        assert b.recipients == 1 and not b.stored
        m2 = bob.recv(timeout=5)
        assert m2 is not None and m2.kind == "broadcast" and m2.recipient is None
        stored = c.send("carol", "later")
        assert stored.stored
        h = c.history("bob")
        assert [x.text for x in h] == ["hi"]
        assert h[0] == m  # equality by value
        assert [x.text for x in c.history("*")] == ["all"]
        assert 0 <= c.ping() < 5
        c.logout()
        with pytest.raises(moechat.ConnectionClosed):
            c.users()
        c.close()
        c.close()  # idempotent


def test_errors_carry_codes(server: moechat.Server) -> None:
    c = moechat.Client("127.0.0.1", server.port)
    with pytest.raises(moechat.QueryError) as q:
        c.users()
    assert q.value.code == 41
    with pytest.raises(moechat.LoginError) as login:
        c.login("alice", "wrong")
    assert login.value.code == 20
    assert login.value.reason == "wrong name or password"
    assert isinstance(login.value, moechat.MoeChatError)
    c.login("alice", "wonderland")
    with pytest.raises(moechat.SendError) as s:
        c.send("nobody", "x")
    assert s.value.code == 71
    with pytest.raises(moechat.SendError) as s:
        c.send("bob", "")
    assert s.value.code == 73


def test_connect_refused() -> None:
    srv = moechat.Server(port=0)
    srv.start()
    port = srv.port
    srv.stop()
    with pytest.raises(ConnectionError):
        moechat.Client("127.0.0.1", port)


def test_recv_timeout_returns_none(server: moechat.Server) -> None:
    c = logged_in(server, "alice")
    start = time.monotonic()
    assert c.recv(timeout=0.2) is None
    assert 0.15 < time.monotonic() - start < 5


def test_timeouts_past_the_clock_are_value_errors_or_no_limit(server: moechat.Server) -> None:
    """Too large for a duration: ValueError. A duration too far off to be a deadline:
    waits like no limit. Neither may panic (both did)."""
    with pytest.raises(ValueError, match="too large"):
        moechat.Client("127.0.0.1", server.port, timeout=1e30)
    with pytest.raises(ValueError, match="heartbeat must be"):
        moechat.Server(heartbeat=1e30)
    c = logged_in(server, "alice")
    with pytest.raises(ValueError, match="too large"):
        c.recv(timeout=1e30)
    assert c.ping(timeout=1e19) >= 0
    c.send("alice", "to myself")
    m = c.recv(timeout=1e19)
    assert m is not None and m.text == "to myself"
    # Attributes are stored the way a dataclass stores them.
    assert vars(m) == {
        "msg_id": m.msg_id,
        "kind": "direct",
        "sender": "alice",
        "recipient": "alice",
        "text": "to myself",
        "ts": m.ts,
    }


def test_a_subclass_that_overrides_recv_keeps_its_own(server: moechat.Server) -> None:
    """Client binds recv straight to the extension for speed, but not over an override."""

    class Counting(moechat.Client):
        calls = 0

        def recv(self, timeout: float | None = None) -> moechat.Message | None:
            Counting.calls += 1
            return super().recv(timeout)

    c = Counting("127.0.0.1", server.port, timeout=10.0)
    c.login("alice", "wonderland")
    c.send("alice", "hi")
    got = next(iter(c))
    assert got.text == "hi" and Counting.calls == 1
    plain = logged_in(server, "bob")
    assert plain.recv(timeout=0.05) is None


def test_takeover_closes_the_old_client_with_64(server: moechat.Server) -> None:
    old = logged_in(server, "alice")
    logged_in(server, "alice")
    with pytest.raises(moechat.ConnectionClosed) as info:
        old.recv(timeout=5)
    assert info.value.code == 64


def test_iteration_ends_when_the_connection_closes(server: moechat.Server) -> None:
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob", reconnect=False)
    for i in range(3):
        alice.send("bob", f"m{i}")
    got = []
    for m in bob:
        got.append(m.text)
        if len(got) == 3:
            server.stop()
    assert got == ["m0", "m1", "m2"]


def test_one_thread_receives_while_another_sends(server: moechat.Server) -> None:
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob")
    received: list[str] = []

    def reader() -> None:
        while len(received) < 200:
            m = alice.recv(timeout=10)
            assert m is not None
            received.append(m.text)

    t = threading.Thread(target=reader)
    t.start()
    # alice sends too, from this thread, while her reader blocks in recv.
    for i in range(200):
        bob.send("alice", str(i))
        alice.send("carol", str(i))
    t.join(timeout=30)
    assert received == [str(i) for i in range(200)]


def test_timeout_on_a_call_is_timeout_error() -> None:
    # A peer that accepts and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        c = moechat.Client("127.0.0.1", silent.getsockname()[1], timeout=0.3)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            c.ping()
        with pytest.raises(TimeoutError):
            c.users(timeout=0.1)
        assert time.monotonic() - start < 5
        c.close()


def test_a_reply_of_the_wrong_shape_is_protocol_error() -> None:
    import json

    with socket.socket() as fake:
        fake.bind(("127.0.0.1", 0))
        fake.listen()

        def serve() -> None:
            conn, _ = fake.accept()
            with conn, conn.makefile("rwb") as f:
                request = json.loads(f.readline())
                reply = {"status": "r", "status_code": 30, "info": {"users": 5}}
                reply["id"] = request["id"]
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()
                f.readline()  # hold the connection until the client closes

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        c = moechat.Client("127.0.0.1", fake.getsockname()[1], timeout=5)
        with pytest.raises(moechat.ProtocolError) as info:
            c.users()
        assert info.value.code is None
        c.close()
        t.join(timeout=5)


def test_received_messages_equal_constructed_ones(server: moechat.Server) -> None:
    """Messages built by the receive fast path behave as dataclass instances."""
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob")
    r = alice.send("bob", "same")
    m = bob.recv(timeout=5)
    assert m is not None
    made = moechat.Message(r.msg_id, "direct", "alice", "bob", "same", m.ts)
    assert m == made
    assert hash(m) == hash(made)
    assert repr(m) == repr(made)
    with pytest.raises(AttributeError):
        m.text = "changed"  # type: ignore[misc]
    # The same construction serves history and broadcasts.
    assert bob.history("alice")[-1] == made
    # Text that is not ASCII, and text the server must escape, arrive as sent.
    for text in ["héllo 日本 🎉", 'quote " backslash \\ newline \n tab \t']:
        alice.send("bob", text)
        got = bob.recv(timeout=5)
        assert got is not None and got.text == text
    alice.broadcast("everyone")
    b = bob.recv(timeout=5)
    assert b is not None and (b.kind, b.recipient, b.sender) == ("broadcast", None, "alice")
    assert isinstance(b, moechat.Message)
