"""``python -m moechat.client`` driven through a pseudo-terminal, as a person would."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import moechat
from conftest import logged_in
from moechat.client import PROMPT

TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Pty:
    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        # In its own session with the pty as controlling terminal, Ctrl-C is a SIGINT:
        # a tiny launcher claims the terminal, then execs the real command.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TAKE_TERMINAL, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = ""

    def expect(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not seen; screen so far: {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"terminal closed before {needle!r}; screen: {self.seen!r}"
                self.seen += chunk.decode(errors="replace")
        return self.seen

    def expect_after(self, marker: str, needle: str, timeout: float = 10.0) -> None:
        """Waits until `needle` appears after the last `marker` on the screen."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen or needle not in self.seen[self.seen.rindex(marker) :]:
            assert time.monotonic() < deadline, (
                f"{needle!r} not seen after {marker!r}: {self.seen!r}"
            )
            self._read_some(0.05)

    def enter(self, line: str) -> None:
        """Types `line` and Enter, then waits, as a person would, for the next prompt.

        Typing before the prompt is typing ahead: the terminal, not the line editor,
        echoes it, and what the screen shows then depends on who wins a race.
        """
        self.type(line + "\n")
        self.expect_after(line + "\r\n", "\n" + PROMPT)

    def _read_some(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                self.seen += os.read(self.master, 4096).decode(errors="replace")
            except OSError:
                pass

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)


def test_interactive_chat(server: moechat.Server) -> None:
    bob = logged_in(server, "bob")
    t = Pty([sys.executable, "-m", "moechat.client", "--port", str(server.port), "--user", "alice"])
    try:
        t.expect("Password for alice: ")
        t.type("wonderland\n")
        t.expect_after("logged in as alice", "\n" + PROMPT)
        assert "wonderland" not in t.seen, "the password is not echoed"
        t.enter("/users")
        t.expect("online: alice, bob")
        t.enter("/msg bob hello bob")
        m = bob.recv(timeout=10)
        assert m is not None and (m.kind, m.text) == ("direct", "hello bob")
        t.enter("hello everyone")
        m = bob.recv(timeout=10)
        assert m is not None and (m.kind, m.text) == ("broadcast", "hello everyone")
        # A message arriving while alice types does not eat her half-typed line.
        t.type("half typed")
        t.expect("half typed")
        bob.send("alice", "interrupting")
        t.expect_after("interrupting", "\n" + PROMPT + "half typed", timeout=5)
        t.enter(" and finished")
        m = bob.recv(timeout=10)
        assert m is not None and m.text == "half typed and finished"
        t.enter("/history bob")
        t.expect("[alice → bob] hello bob")
        # Ctrl-D means end of input only once the line editor is reading again,
        # which enter() waits for.
        t.enter("/msg nobody hi")
        t.expect("error: no such user")
        t.type("\x04")  # Ctrl-D
        assert t.proc.wait(timeout=10) == 0
    finally:
        t.close()
    assert server.online_users() == ["bob"]


def test_ctrl_c_leaves_cleanly(server: moechat.Server) -> None:
    t = Pty([sys.executable, "-m", "moechat.client", "--port", str(server.port), "--user", "carol"])
    try:
        t.expect("Password for carol: ")
        t.type("singer\n")
        t.expect("logged in as carol")
        t.type("\x03")  # Ctrl-C, at once: even before the prompt it is a clean exit
        assert t.proc.wait(timeout=10) == 0
        assert "Traceback" not in t.seen
    finally:
        t.close()


def test_wrong_password_is_one_line(server: moechat.Server) -> None:
    t = Pty([sys.executable, "-m", "moechat.client", "--port", str(server.port), "--user", "alice"])
    try:
        t.expect("Password for alice: ")
        t.type("nope\n")
        assert t.proc.wait(timeout=10) == 1
        t.expect("moechat-chat: wrong name or password (code 20)")
        assert "Traceback" not in t.seen
    finally:
        t.close()
