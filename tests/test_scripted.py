"""The Python face against a scripted server: what the Rust client reads off the
wire reaches Python whole (a receipt's ``stored`` and ``duplicate``), and a login
answered ``r``/24 (busy) is sent again until the server can take it."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import moechat

Frame = dict[str, Any]
Script = Callable[[Callable[[], Frame], Callable[[Frame], None]], None]


@contextmanager
def scripted(script: Script) -> Iterator[tuple[int, list[Frame]]]:
    """A server on a free port that plays ``script`` with the first client; yields the
    port and the frames the client sent."""
    seen: list[Frame] = []
    errors: list[BaseException] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with conn, conn.makefile("rwb") as f:

                def recv() -> Frame:
                    frame: Frame = json.loads(f.readline())
                    seen.append(frame)
                    return frame

                def send(frame: Frame) -> None:
                    f.write(json.dumps(frame).encode() + b"\n")
                    f.flush()

                script(recv, send)
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        t.join(timeout=10)
        listener.close()
    assert not errors, errors


def _login_ok(frame: Frame, port: int) -> Frame:
    info = {"user": "alice", "session": "a" * 24, "port": port, "heartbeat": 60}
    return {"status": "r", "status_code": 10, "info": info, "id": frame["id"]}


def test_a_receipt_tells_stored_and_duplicate() -> None:
    def script(recv: Callable[[], Frame], send: Callable[[Frame], None]) -> None:
        send(_login_ok(recv(), 0))
        sent = recv()
        info = {"msg_id": 7, "duplicate": True}
        send({"status": "r", "status_code": 51, "info": info, "id": sent["id"]})

    with scripted(script) as (port, seen):
        c = moechat.Client("127.0.0.1", port, reconnect=False)
        c.login("alice", "wonderland")
        r = c.send("bob", "hi")
        assert r == moechat.Receipt(msg_id=7, stored=True, recipients=None, duplicate=True)
        c.close()
    assert seen[1]["info"]["to"] == "bob" and seen[1]["info"]["nonce"]


def test_a_busy_login_is_retried() -> None:
    def script(recv: Callable[[], Frame], send: Callable[[Frame], None]) -> None:
        for _ in range(2):
            busy = {"error": "too busy checking passwords; try again shortly"}
            send({"status": "r", "status_code": 24, "info": busy, "id": recv()["id"]})
        send(_login_ok(recv(), 0))

    with scripted(script) as (port, seen):
        c = moechat.Client("127.0.0.1", port, reconnect=False)
        assert c.login("alice", "wonderland", timeout=10) == "a" * 24
        c.close()
    assert [f["info"]["req"] for f in seen] == ["login"] * 3
