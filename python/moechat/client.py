"""``python -m moechat.client``: an interactive terminal chat (console script ``moechat-chat``).

Type a line to broadcast it; ``/msg NAME text`` sends a direct message, ``/users``
lists who is online, ``/history NAME`` (or ``/history *``) shows stored messages, and
``/quit``, Ctrl-D or Ctrl-C leave. Incoming messages are printed above the line being
typed, which is then shown again as it was.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import threading

from ._client import Client
from ._errors import ConnectionClosed, MoeChatError
from ._types import Message

PROMPT = "> "
HELP = "commands: /msg NAME text, /users, /history NAME, /quit; other lines are broadcast"

try:  # readline gives line editing, and lets a message be printed without eating the input.
    import readline
except ImportError:  # pragma: no cover - platforms without GNU readline
    readline = None  # type: ignore[assignment]


class _Terminal:
    """Prints above the input line, under one lock so output is never interleaved."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        with self._lock:
            typed = readline.get_line_buffer() if readline is not None else ""
            # Clear the line, print the text, then redraw the prompt and what was typed.
            sys.stdout.write(f"\r\x1b[2K{text}\n{PROMPT}{typed}")
            sys.stdout.flush()

    def say(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(f"{text}\n")
            sys.stdout.flush()


def _format(m: Message) -> str:
    when = m.time.astimezone().strftime("%H:%M")
    if m.kind == "direct":
        return f"{when} [{m.sender} → {m.recipient}] {m.text}"
    return f"{when} <{m.sender}> {m.text}"


def _listen(client: Client, term: _Terminal, done: threading.Event) -> None:
    try:
        for m in client:
            term.show(_format(m))
    except MoeChatError as e:
        term.show(f"* {e.reason}")
    if not done.is_set():
        term.show("* connection closed; press Enter to leave")
    done.set()


def _command(client: Client, term: _Terminal, line: str) -> bool:
    """Runs one typed line; returns False when the user wants to leave."""
    if not line.strip():
        return True
    if not line.startswith("/"):
        client.broadcast(line)
        return True
    name, _, rest = line[1:].partition(" ")
    if name == "quit":
        return False
    if name == "users":
        term.say("online: " + ", ".join(client.users()))
    elif name == "msg":
        to, _, text = rest.strip().partition(" ")
        if not to or not text:
            term.say("usage: /msg NAME text")
        else:
            r = client.send(to, text)
            if r.stored:
                term.say(f"* {to} is offline; the message will be delivered at their next login")
    elif name == "history":
        peer = rest.strip()
        if not peer:
            term.say("usage: /history NAME  (or /history * for broadcasts)")
        else:
            for m in client.history(peer):
                term.say(_format(m))
    else:
        term.say(HELP)
    return True


def _repl(client: Client, term: _Terminal, done: threading.Event) -> None:
    """Reads and runs lines until the user leaves or the connection ends."""
    while not done.is_set():
        try:
            line = input(PROMPT)
        except EOFError:
            return
        if done.is_set():
            return
        try:
            if not _command(client, term, line):
                return
        except ConnectionClosed:
            return
        except MoeChatError as e:
            term.say(f"error: {e.reason}")
        except TimeoutError:
            term.say("error: the server did not answer in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moechat-chat", description="Chat on a MoeChat server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3541)
    parser.add_argument("--user", required=True, help="your login name")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument(
        "--ca", metavar="PEM", help="trust this CA file instead of the system's (implies --tls)"
    )
    args = parser.parse_args(argv)
    try:
        password = getpass.getpass(f"Password for {args.user}: ")
        tls = args.tls or args.ca is not None
        client = Client(args.host, args.port, tls=tls, ca=args.ca)
        client.login(args.user, password)
    except (KeyboardInterrupt, EOFError):
        return 130
    except (MoeChatError, OSError) as e:
        print(f"moechat-chat: {e}", file=sys.stderr)
        return 1
    term = _Terminal()
    done = threading.Event()
    try:
        term.say(f"logged in as {args.user}. {HELP}")
        threading.Thread(target=_listen, args=(client, term, done), daemon=True).start()
        _repl(client, term, done)
    except KeyboardInterrupt:
        pass
    done.set()
    try:
        client.logout(timeout=2.0)
    except (MoeChatError, TimeoutError):
        pass
    client.close()
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
