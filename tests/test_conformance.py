"""The Python client against every client script of conformance/client/.

``moechat-conformance play`` (built by cargo from tools/) plays the server's side of
each script; this driver plays the ``app`` steps with ``moechat.Client``. The script
vocabulary is in conformance/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import moechat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "conformance" / "client").glob("*.jsonl"))
PLAYER = Path(
    os.environ.get("MOECHAT_CONFORMANCE", ROOT / "target" / "debug" / "moechat-conformance")
)
WAIT = 15.0


def steps(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("//"):
            out.append(json.loads(line))
    return out


def matches(want: Any, got: Any) -> bool:
    """Equality, with ``"$any"`` matching anything (the scripts' app-side patterns)."""
    if want == "$any":
        return True
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and want.keys() == got.keys()
            and all(matches(v, got[k]) for k, v in want.items())
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(want) == len(got)
            and all(matches(w, g) for w, g in zip(want, got, strict=True))
        )
    return bool(want == got) and type(want) is type(got)


def error_json(e: moechat.MoeChatError) -> dict[str, Any]:
    return {"closed": isinstance(e, moechat.ConnectionClosed), "code": e.code}


class App:
    """Plays a script's ``app`` steps with one ``moechat.Client``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: moechat.Client | None = None
        self.calls: dict[str, Future[tuple[bool, Any]]] = {}
        self.pool = ThreadPoolExecutor(max_workers=4)

    def run(self, fn: Any) -> Future[tuple[bool, Any]]:
        def call() -> tuple[bool, Any]:
            try:
                return True, fn()
            except moechat.MoeChatError as e:
                return False, error_json(e)

        return self.pool.submit(call)

    def step(self, step: dict[str, Any]) -> None:
        op = step["app"]
        name = step.get("as", op)
        args = step.get("args", [])
        c = self.client
        if op == "connect":
            self.client = moechat.Client("127.0.0.1", self.port, timeout=WAIT)
        elif op == "login":
            assert c is not None
            self.calls[name] = self.run(lambda: c.login(args[0], args[1]))
        elif op == "send":
            assert c is not None

            def send() -> dict[str, Any]:
                r = c.send(args[0], args[1])
                return {"msg_id": r.msg_id, "stored": r.stored, "duplicate": r.duplicate}

            self.calls[name] = self.run(send)
        elif op == "broadcast":
            assert c is not None

            def broadcast() -> dict[str, Any]:
                r = c.broadcast(args[0])
                return {"msg_id": r.msg_id, "recipients": r.recipients, "duplicate": r.duplicate}

            self.calls[name] = self.run(broadcast)
        elif op == "recv":
            assert c is not None
            timeout = step.get("timeout_ms")

            def recv() -> dict[str, Any] | None:
                m = c.recv(timeout=None if timeout is None else timeout / 1000)
                if m is None:
                    return None
                return {
                    "msg_id": m.msg_id,
                    "from": m.sender,
                    "to": m.recipient,
                    "text": m.text,
                    "broadcast": m.kind == "broadcast",
                }

            self.calls[name] = self.run(recv)
        elif op == "await":
            ok, value = self.calls.pop(step["call"]).result(timeout=WAIT)
            want = step["result"] if "result" in step else step["error"]
            assert ok == ("result" in step), f"{step}: got {value}"
            assert matches(want, value), f"{step}: got {value}"
        elif op == "sleep":
            time.sleep(step["ms"] / 1000)
        elif op == "close":
            if c is not None:
                c.close()
        else:
            raise AssertionError(f"unknown app step {op!r}")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_client_script(script: Path) -> None:
    assert PLAYER.exists(), f"{PLAYER} is missing: cargo build -p moechat-tools"
    player = subprocess.Popen(
        [str(PLAYER), "play", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert player.stdout is not None
        first = player.stdout.readline()
        assert first.startswith("listening on "), first
        port = int(first.rsplit(":", 1)[1])
        app = App(port)
        try:
            for step in steps(script):
                if "app" in step:
                    app.step(step)
        finally:
            app.pool.shutdown(wait=False, cancel_futures=True)
        code = player.wait(timeout=WAIT)
        assert player.stderr is not None
        assert code == 0, player.stderr.read()
    finally:
        if player.poll() is None:
            player.kill()
            player.wait()


def test_every_script_is_here() -> None:
    assert len(SCRIPTS) >= 9
