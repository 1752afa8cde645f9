"""moechat.Server from Python: lifecycle, users, errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import moechat
import pytest


def test_version_matches_cargo() -> None:
    with open("Cargo.toml", encoding="utf-8") as f:
        line = next(line for line in f if line.startswith("version"))
    assert moechat.__version__ == line.split('"')[1]


def test_lifecycle_and_context_manager() -> None:
    srv = moechat.Server(port=0)
    assert not srv.running
    srv.start()
    assert srv.running
    assert srv.port != 0
    assert srv.host == "127.0.0.1"
    assert srv.address == ("127.0.0.1", srv.port)
    with pytest.raises(RuntimeError):
        srv.start()
    srv.stop()
    assert not srv.running
    srv.stop()  # idempotent
    with moechat.Server(port=0) as s2:
        assert s2.running
        with socket.create_connection(("127.0.0.1", s2.port)):
            pass
    assert not s2.running


def test_add_user_errors(server: moechat.Server) -> None:
    with pytest.raises(ValueError):
        server.add_user("Not Valid", "pw")
    with pytest.raises(ValueError):
        server.add_user("dave", "")
    with pytest.raises(moechat.UserExistsError):
        server.add_user("alice", "again")
    server.add_user("dave", "pw")


def test_rate_limit_from_python() -> None:
    with moechat.Server(port=0, rate_limit=1.0, rate_burst=2) as srv:
        srv.add_user("alice", "wonderland")
        c = moechat.Client("127.0.0.1", srv.port, reconnect=False)
        c.login("alice", "wonderland")
        c.send("alice", "one")
        c.send("alice", "two")
        with pytest.raises(moechat.SendError) as info:
            c.send("alice", "three")
        assert info.value.code == 74


def test_settings_out_of_bounds_get_the_command_lines_sentence() -> None:
    """The same bad value, the same sentence from Python and from the command line.
    Before, heartbeat=1e19 passed and then panicked in every connection task."""
    cases: list[tuple[str, Any, str, str]] = [
        ("heartbeat", 1e19, "--heartbeat", "1e19"),
        ("max_frame_bytes", 2**64 - 1, "--max-frame-bytes", str(2**64 - 1)),
        ("max_connections", 0, "--max-connections", "0"),
        ("hash_workers", 0, "--hash-workers", "0"),
        ("session_ttl", 0, "--session-ttl", "0"),
    ]
    for name, value, flag, text in cases:
        with pytest.raises(ValueError) as info:
            moechat.Server(**{name: value})
        done = subprocess.run(
            [sys.executable, "-m", "moechat.server", flag, text, "--db", ":memory:"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr == f"moechat-server: {info.value}\n", (name, done.stderr)
        assert str(info.value).startswith(f"{name} must be"), info.value
    with pytest.raises(ValueError, match=r"max_frame_bytes must be from 64 to 16777216, not -1"):
        moechat.Server(max_frame_bytes=-1)


def test_the_defaults_are_the_command_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "moechat.server", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    d = moechat._moechat.DEFAULTS
    assert d.heartbeat == 60.0 and d.max_frame_bytes == 65536 and d.login_rate == 120
    assert "[default: 65536]" in out and "[default: 120]" in out


def test_bad_settings_are_value_errors() -> None:
    with pytest.raises(ValueError):
        moechat.Server(heartbeat=0)
    with pytest.raises(ValueError):
        moechat.Server(heartbeat=-1.0)
    with pytest.raises(ValueError):
        moechat.Server(max_connections=0)
    with pytest.raises(ValueError):
        moechat.Server(session_ttl=0)
    with pytest.raises(ValueError):
        moechat.Server(rate_limit=-1.0)


def test_http_listener_serves_health_metrics_and_the_page() -> None:
    with moechat.Server(port=0, http="127.0.0.1:0") as srv:
        address = srv.http_address
        assert address is not None and address[0] == "127.0.0.1" and address[1] != 0
        assert srv.http_port == address[1]
        base = f"http://127.0.0.1:{srv.http_port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as r:
            assert r.status == 200 and r.read() == b"ok\n"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'moechat_connections_open{transport="ws"} 0' in text
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            assert "<title>MoeChat</title>" in r.read().decode()


def test_http_is_off_unless_asked_and_bad_values_say_why() -> None:
    assert moechat.Server(port=0).http_address is None
    assert moechat.Server(port=0, http="off").http_port is None
    assert moechat.Server(http="127.0.0.1:3542").http_address == ("127.0.0.1", 3542)
    with pytest.raises(ValueError, match=r'http must be HOST:PORT or off, not "nope"'):
        moechat.Server(http="nope")
    with pytest.raises(ValueError, match=r"http_origins must be"):
        moechat.Server(http="127.0.0.1:0", http_origins=["example.com/path"])


def test_http_port_in_use_is_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = moechat.Server(port=0, http=f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(OSError):
            srv.start()


def test_port_in_use_is_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        srv = moechat.Server(port=taken.getsockname()[1])
        with pytest.raises(OSError):
            srv.start()


def test_online_users_and_graceful_stop(server: moechat.Server) -> None:
    c = moechat.Client("127.0.0.1", server.port, reconnect=False)
    c.login("bob", "builder")
    assert server.online_users() == ["bob"]
    server.stop()
    with pytest.raises(moechat.ConnectionClosed) as info:
        c.recv(timeout=5)
    assert info.value.code == 65
    assert isinstance(info.value, ConnectionError)


def test_registration_closed() -> None:
    with moechat.Server(port=0, registration=False) as srv:
        c = moechat.Client("127.0.0.1", srv.port)
        with pytest.raises(moechat.QueryError) as info:
            c.register("dave", "pw")
        assert info.value.code == 44


def test_imports_with_the_standard_library_only() -> None:
    # typing_extensions comes with mypy in the test venv, not with moechat: block it.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'typing_extensions':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import moechat, moechat.server, moechat.client\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == "ok\n", done.stderr


def test_a_collected_server_stops_serving() -> None:
    import gc

    srv = moechat.Server(port=0)
    srv.start()
    port = srv.port
    del srv
    gc.collect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError("the port still accepts connections")


def test_a_dropped_client_disconnects(server: moechat.Server) -> None:
    import gc

    c = moechat.Client("127.0.0.1", server.port)
    c.login("alice", "wonderland")
    assert server.online_users() == ["alice"]
    del c
    gc.collect()
    deadline = time.monotonic() + 10
    while server.online_users() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.online_users() == []


def test_stop_says_when_it_did_not_finish_in_time() -> None:
    """Before, a stop past its timeout returned as if done."""
    srv = moechat.Server(port=0)
    srv.add_user("alice", "wonderland")
    srv.start()
    c = moechat.Client("127.0.0.1", srv.port, reconnect=False)
    c.login("alice", "wonderland")
    with pytest.raises(TimeoutError, match="did not stop within 0"):
        srv.stop(timeout=0)
    srv.stop()  # waits for the rest of the same stop
    assert not srv.running
    srv.stop()  # idempotent
    c.close()
