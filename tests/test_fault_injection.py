"""Nothing acknowledged is lost, end to end: senders and receivers talk through the
real ``moechat-server`` process, which is killed with SIGKILL twice mid-run and
restarted on the same database; one receiver process is killed and restarted too.

At the end every message that got a 50/51 receipt is in its recipient's output
exactly once, and each sender's messages are there in the order they were sent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import moechat

SENDERS = 4
RECEIVERS = 2
PER_SENDER = 500

# The receiving application: writes each message it takes to its file. It drops
# what its file already holds, by msg_id, because a message it took just before
# being killed comes again after its next login (at-least-once delivery).
RECEIVER = """
import sys, moechat
port, user, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
seen = set()
try:
    with open(path) as f:
        seen = {int(line.split()[0]) for line in f if line.strip()}
except FileNotFoundError:
    pass
out = open(path, "a", buffering=1)
c = moechat.Client("127.0.0.1", port, timeout=30)
c.login(user, "pw")
print("ready", flush=True)
for m in c:
    if m.kind == "direct" and m.msg_id not in seen:
        seen.add(m.msg_id)
        out.write(f"{m.msg_id} {m.sender} {m.text}\\n")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(port: int, db: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moechat.server",
            "--port",
            str(port),
            "--db",
            str(db),
            "--http",
            "off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stderr is not None
    for line in p.stderr:
        if "listening on" in line:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p
    raise AssertionError(f"server did not start (exit {p.wait()})")


def _start_receiver(port: int, user: str, out: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", RECEIVER, str(port), user, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
    return p


def _kill9(p: subprocess.Popen[str]) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


def test_kill_9_of_server_and_receiver_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    setup = moechat.Server(port=0, db=str(db))
    names = [f"s{i}" for i in range(SENDERS)] + [f"r{i}" for i in range(RECEIVERS)]
    for name in names:
        setup.add_user(name, "pw")
    setup.stop()
    port = _free_port()
    server = _start_server(port, db)
    outputs = {f"r{i}": tmp_path / f"r{i}.txt" for i in range(RECEIVERS)}
    receivers = {user: _start_receiver(port, user, path) for user, path in outputs.items()}

    acked: dict[str, list[tuple[int, str]]] = {user: [] for user in outputs}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def sender(i: int) -> None:
        to = f"r{i % RECEIVERS}"
        try:
            c = moechat.Client("127.0.0.1", port, timeout=30)
            c.login(f"s{i}", "pw")
            for n in range(PER_SENDER):
                text = f"s{i}:{n}"
                r = c.send(to, text)
                with lock:
                    acked[to].append((r.msg_id, text))
                time.sleep(0.005)
            c.close()
        except BaseException as e:  # recorded, and the test fails below
            failures.append(e)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    for t in threads:
        t.start()
    try:

        def running() -> int:
            return sum(t.is_alive() for t in threads)

        time.sleep(0.4)
        assert running() == SENDERS, "the faults come mid-run"
        _kill9(server)
        server = _start_server(port, db)
        time.sleep(0.3)
        assert running() == SENDERS
        _kill9(receivers["r0"])
        receivers["r0"] = _start_receiver(port, "r0", outputs["r0"])
        time.sleep(0.3)
        assert running() == SENDERS
        _kill9(server)
        server = _start_server(port, db)
        for t in threads:
            t.join(timeout=45)
        assert not failures, failures
        assert all(not t.is_alive() for t in threads)

        def delivered(user: str) -> list[tuple[int, str, str]]:
            lines = outputs[user].read_text().splitlines() if outputs[user].exists() else []
            return [(int(a), b, c) for a, b, c in (line.split(" ", 2) for line in lines)]

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all({m for m, _ in acked[u]} <= {m for m, _, _ in delivered(u)} for u in outputs):
                break
            time.sleep(0.1)
        for user in outputs:
            got = delivered(user)
            ids = [m for m, _, _ in got]
            assert len(ids) == len(set(ids)), f"{user} got a message twice"
            missing = {m for m, _ in acked[user]} - set(ids)
            assert not missing, f"{user} lost {len(missing)} acknowledged messages"
            # Per-sender order: each sender's numbers arrive increasing, none skipped.
            by_sender: dict[str, list[int]] = {}
            for _, sender_name, text in got:
                by_sender.setdefault(sender_name, []).append(int(text.split(":")[1]))
            for sender_name, ns in by_sender.items():
                assert ns == sorted(ns), f"{sender_name} → {user} out of order"
        total = sum(len(v) for v in acked.values())
        assert total == SENDERS * PER_SENDER
    finally:
        for p in [server, *receivers.values()]:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
