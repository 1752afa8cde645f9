"""Shared pytest fixtures: a running in-process server with three users."""

from __future__ import annotations

from collections.abc import Iterator

import moechat
import pytest

USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer"}


@pytest.fixture
def server() -> Iterator[moechat.Server]:
    srv = moechat.Server(port=0, db=":memory:")
    for name, password in USERS.items():
        srv.add_user(name, password)
    srv.start()
    yield srv
    srv.stop()


def logged_in(srv: moechat.Server, user: str, *, reconnect: bool = True) -> moechat.Client:
    c = moechat.Client("127.0.0.1", srv.port, timeout=10.0, reconnect=reconnect)
    c.login(user, USERS[user])
    return c
