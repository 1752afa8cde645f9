"""Values returned by the clients: received messages and send receipts."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Message:
    """A chat message as pushed by the server or returned by ``history``."""

    # The extension builds these itself, filling the instance dict field by field
    # (PyMessage in src/python/client.rs): a field added here is added there too.
    msg_id: int
    kind: Literal["direct", "broadcast"]
    sender: str
    recipient: str | None
    text: str
    ts: int
    """When the server accepted it, Unix epoch milliseconds."""

    @property
    def time(self) -> datetime.datetime:
        """``ts`` as an aware UTC datetime."""
        return datetime.datetime.fromtimestamp(self.ts / 1000, tz=datetime.timezone.utc)


@dataclass(frozen=True)
class Receipt:
    """The server's acknowledgement of a sent message, written to its store first.

    The same fields as the Rust client's ``Sent``, by the same names.
    """

    msg_id: int
    stored: bool
    """``True`` for ``r``/51: the recipient was offline and the message is stored for
    its next login."""
    recipients: int | None = None
    """For a broadcast: how many online users it was queued to."""
    duplicate: bool = False
    """``True`` when the server recognised the send's nonce (a send repeated after a
    reconnect) and stored nothing new: this is the first send's receipt."""

    @classmethod
    def _from_core(cls, raw: tuple[int, bool, int | None, bool]) -> Receipt:
        msg_id, stored, recipients, duplicate = raw
        return cls(msg_id, stored, recipients, duplicate)
