"""TLS from Python: a CA made at run time (trustme), a TLS server, both clients
verifying it, every way verification must fail, and a plain `ssl` socket speaking
the protocol to show the frames are unchanged."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import moechat
import pytest
import trustme
from conftest import USERS


class Pki:
    """A CA and the PEM files of the certificates it issued, under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.authority = trustme.CA()
        self.ca = root / "ca.pem"
        self.authority.cert_pem.write_to_path(str(self.ca))

    def leaf(self, name: str, *identities: str, expired: bool = False) -> tuple[Path, Path]:
        if expired:
            utc = datetime.timezone.utc
            cert = self.authority.issue_cert(
                *identities,
                not_before=datetime.datetime(2020, 1, 1, tzinfo=utc),
                not_after=datetime.datetime(2021, 1, 1, tzinfo=utc),
            )
        else:
            cert = self.authority.issue_cert(*identities)
        cert_path, key_path = self.root / f"{name}.pem", self.root / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def tls_server(cert: Path, key: Path) -> moechat.Server:
    srv = moechat.Server(port=0, db=":memory:", tls_cert=cert, tls_key=key)
    for name, password in USERS.items():
        srv.add_user(name, password)
    srv.start()
    return srv


@pytest.fixture
def server(pki: Pki) -> Iterator[moechat.Server]:
    srv = tls_server(*pki.leaf("server", "localhost", "127.0.0.1"))
    yield srv
    srv.stop()


def test_chat_over_tls(server: moechat.Server, pki: Pki) -> None:
    alice = moechat.Client("localhost", server.port, tls=True, ca=pki.ca)
    bob = moechat.Client("127.0.0.1", server.port, tls=True, ca=str(pki.ca))
    with alice, bob:
        alice.login("alice", USERS["alice"])
        bob.login("bob", USERS["bob"])
        receipt = alice.send("bob", "sealed")
        m = bob.recv(timeout=5)
        assert m is not None
        assert (m.msg_id, m.sender, m.text) == (receipt.msg_id, "alice", "sealed")


def test_async_client_over_tls(server: moechat.Server, pki: Pki) -> None:
    async def main() -> str:
        c = await moechat.AsyncClient.connect("localhost", server.port, tls=True, ca=pki.ca)
        async with c:
            await c.login("carol", USERS["carol"])
            await c.send("carol", "note to self")
            m = await c.recv(timeout=5)
            assert m is not None
            return m.text

    assert asyncio.run(main()) == "note to self"


def test_wrong_name_expired_and_unknown_ca_are_refused(tmp_path: Path, pki: Pki) -> None:
    for cert in [pki.leaf("other", "chat.example.org"), pki.leaf("old", "localhost", expired=True)]:
        srv = tls_server(*cert)
        try:
            with pytest.raises(moechat.TLSError) as refused:
                moechat.Client("localhost", srv.port, tls=True, ca=pki.ca, reconnect=False)
            assert "invalid peer certificate" in str(refused.value)
            # TLSError is a ConnectionError, so code catching connection failures catches it.
            assert isinstance(refused.value, ConnectionError)
        finally:
            srv.stop()
    (tmp_path / "stranger").mkdir()
    stranger = Pki(tmp_path / "stranger")
    srv = tls_server(*pki.leaf("server", "localhost"))
    try:
        with pytest.raises(moechat.TLSError, match="not from a trusted CA"):
            moechat.Client("localhost", srv.port, tls=True, ca=stranger.ca)
        # The system's roots do not know a CA made a moment ago either.
        with pytest.raises(moechat.TLSError):
            moechat.Client("localhost", srv.port, tls=True)
        # The name can be given when it is not the host dialled.
        with moechat.Client(
            "127.0.0.1", srv.port, tls=True, ca=pki.ca, server_name="localhost"
        ) as ok:
            assert ok.ping() >= 0
    finally:
        srv.stop()


def test_tls_arguments_are_checked(server: moechat.Server, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls=True"):
        moechat.Client("localhost", server.port, ca=pki.ca)
    with pytest.raises(moechat.TLSError, match="cannot read CA certificate"):
        moechat.Client("localhost", server.port, tls=True, ca=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="tls_key must be given with tls_cert"):
        moechat.Server(port=0, tls_cert=pki.ca)
    srv = moechat.Server(port=0, tls_cert=tmp_path / "nope.pem", tls_key=tmp_path / "nope.key")
    with pytest.raises(moechat.TLSError, match="cannot read certificate"):
        srv.start()


def test_plain_client_against_tls_server_and_back(server: moechat.Server, pki: Pki) -> None:
    with pytest.raises(moechat.ConnectionClosed):
        c = moechat.Client("127.0.0.1", server.port, reconnect=False)
        c.ping(timeout=5)
    with moechat.Server(port=0) as plain, pytest.raises(moechat.TLSError, match="speak TLS"):
        moechat.Client("127.0.0.1", plain.port, tls=True, ca=pki.ca)


def test_any_tls_socket_speaks_the_same_frames(server: moechat.Server, pki: Pki) -> None:
    """The standard library's ssl module, no moechat client: the protocol is unchanged."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    raw = socket.create_connection(("localhost", server.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        frame = {
            "status": "q",
            "status_code": 0,
            "info": {"req": "login", "user": "alice", "password": USERS["alice"]},
            "id": 1,
        }
        tls.sendall(json.dumps(frame).encode() + b"\n")
        reply = json.loads(tls.makefile("rb").readline())
        assert (reply["status"], reply["status_code"], reply["id"]) == ("r", 10, 1)
