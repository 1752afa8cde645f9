"""moechat in other processes: Ctrl-C on a blocked recv and on serve_forever,
``python -m moechat.server`` driven by a Client, and a server stopped under load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import moechat

BLOCKED_RECV = """
import sys, moechat
srv = moechat.Server(port=0)
srv.add_user("alice", "wonderland")
srv.start()
c = moechat.Client("127.0.0.1", srv.port)
c.login("alice", "wonderland")
print("ready", flush=True)
try:
    c.recv()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    srv.stop()
    sys.exit(3)
"""

SERVE_FOREVER = """
import moechat
srv = moechat.Server(port=0)
srv.start()
print("ready", srv.port, flush=True)
srv.serve_forever()
print("stopped cleanly", srv.running, flush=True)
"""


def _spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_line(p: subprocess.Popen[str], prefix: str) -> str:
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith(prefix), (line, p.stderr.read() if p.stderr else "")
    return line


def test_ctrl_c_interrupts_a_blocked_recv() -> None:
    p = _spawn(BLOCKED_RECV)
    _wait_line(p, "ready")
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 3, err
    assert "interrupted" in out


def test_ctrl_c_stops_serve_forever_cleanly() -> None:
    p = _spawn(SERVE_FOREVER)
    port = int(_wait_line(p, "ready").split()[1])
    c = moechat.Client("127.0.0.1", port)
    c.register("zed", "pw")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    assert "stopped cleanly False" in out
    assert "Traceback" not in err


def test_python_m_moechat_server(tmp_path: Path) -> None:
    db = tmp_path / "py.db"
    p = subprocess.Popen(
        [sys.executable, "-m", "moechat.server", "--port", "0", "--db", str(db), "--http", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MOECHAT_HEARTBEAT": "30"},
    )
    assert p.stderr is not None
    port = 0
    for line in p.stderr:
        if "listening on " in line:
            port = int(line.rsplit(":", 1)[1])
            break
    assert port
    alice = moechat.Client("127.0.0.1", port)
    alice.register("alice", "wonderland")
    alice.login("alice", "wonderland")
    bob = moechat.Client("127.0.0.1", port)
    bob.register("bob", "builder")
    assert alice.send("bob", "stored").stored
    bob.login("bob", "builder")
    m = bob.recv(timeout=5)
    assert m is not None and m.text == "stored"
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=15) == 0, rest
    assert "Traceback" not in rest
    assert db.exists()
    # The same flags and subcommands as the Rust binary.
    listed = subprocess.run(
        [sys.executable, "-m", "moechat.server", "list-users", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "alice\nbob\n"
    bad = subprocess.run(
        [sys.executable, "-m", "moechat.server", "--bogus"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_server_stopped_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = str(tmp_path / "load.db")
    srv = moechat.Server(port=0, db=db)
    for u in ["bob", "s0", "s1", "s2", "s3"]:
        srv.add_user(u, "pw")
    srv.start()
    acked: list[int] = []
    lock = threading.Lock()
    closed_codes: list[object] = []

    def sender(name: str) -> None:
        c = moechat.Client("127.0.0.1", srv.port, reconnect=False)
        c.login(name, "pw")
        n = 0
        while True:
            try:
                r = c.send("bob", f"{name}:{n}")
            except moechat.ConnectionClosed as e:
                closed_codes.append(e.code)
                return
            with lock:
                acked.append(r.msg_id)
            n += 1

    threads = [threading.Thread(target=sender, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    srv.stop()
    for t in threads:
        t.join(timeout=20)
    assert len(acked) > 20
    assert set(closed_codes) <= {65, None}
    srv2 = moechat.Server(port=0, db=db)
    srv2.start()
    try:
        bob = moechat.Client("127.0.0.1", srv2.port)
        bob.login("bob", "pw")
        got: set[int] = set()
        while not set(acked) <= got:
            m = bob.recv(timeout=10)
            assert m is not None, f"{len(set(acked) - got)} acknowledged messages missing"
            got.add(m.msg_id)
    finally:
        srv2.stop()


EXIT_WHILE_CONNECTED = """
import socket, subprocess, sys, time, moechat
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen(
    [sys.executable, "-m", "moechat.server", "--port", str(port), "--db", ":memory:",
     "--http", "off"],
    stderr=subprocess.DEVNULL,
)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
clients = []
for i in range(8):
    # Half with a disconnect callback, half without: neither may reach a dying interpreter.
    hook = (lambda e: None) if i % 2 else None
    c = moechat.Client("127.0.0.1", port, on_disconnect=hook)
    c.register(f"u{i}", "pw")
    c.login(f"u{i}", "pw")
    clients.append(c)
print("ready", flush=True)
sys.stdin.readline()
server.kill()  # every connection breaks while this interpreter exits
sys.exit(0)
"""


def test_exiting_with_connected_clients_prints_no_panic() -> None:
    """Connections breaking while the interpreter shuts down must not reach Python
    (a regression: the disconnect hook attached to a finalized interpreter and panicked)."""
    for _ in range(3):
        p = subprocess.Popen(
            [sys.executable, "-c", EXIT_WHILE_CONNECTED],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_line(p, "ready")
        _, err = p.communicate("\n", timeout=30)
        assert p.returncode == 0, err
        assert "panicked" not in err, err
