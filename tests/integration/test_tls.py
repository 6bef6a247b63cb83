"""TLS on the gateway's TCP port (issue 11, item 2): real sockets on 127.0.0.1, real certificates.

The test CA and every certificate are made here, in the test
(tests/support/pki.py, with the ``cryptography`` package): a CA, a server certificate for
``localhost`` / 127.0.0.1, a second CA nobody trusts, an expired server
certificate, and a client certificate for mutual TLS.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pki import Issued, Pki
from procs import Gateway, child_env, run_sig, until
from rawpeer import Raw

import sig
from carriers.tcp import server_context
from sig.carrier.tcpclient import CarrierTCPClient
from sig.protocol import messages as w

T = 10.0  #: bound for any one wait


@dataclass
class Certs:
    ca: Issued  #: the CA that signed the server's and the client's certificates
    server: Issued
    other_ca: Issued  #: a CA that signed nothing the gateway shows
    expired: Issued  #: a server certificate (signed by ``ca``) that expired yesterday
    client: Issued  #: a client certificate, CN "dashboard", signed by ``ca``
    stranger: Issued  #: a client certificate signed by ``other_ca``
    elsewhere: Issued  #: a server certificate (signed by ``ca``) for another name only


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    ca, other = pki.ca("ca"), pki.ca("other")
    return Certs(
        ca=ca[0],
        server=pki.issue("server", "localhost", ca),
        other_ca=other[0],
        expired=pki.issue("expired", "localhost", ca, expired=True),
        client=pki.issue("client", "dashboard", ca, server=False),
        stranger=pki.issue("stranger", "mallory", other, server=False),
        elsewhere=pki.issue("elsewhere", "other.example", ca, names=("other.example",)),
    )


def trusting(ca: Issued, client: Issued | None = None) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and shows ``client``'s certificate)."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@pytest.fixture
async def gateway(certs: Certs) -> AsyncIterator[sig.ServerRouter]:
    """A TLS gateway (no client certificates asked) on 127.0.0.1, port chosen by the kernel."""
    gw = sig.ServerRouter(port=0, tls=server_context(str(certs.server.cert), str(certs.server.key)))
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
async def mutual(certs: Certs) -> AsyncIterator[sig.ServerRouter]:
    """A gateway that takes only clients with a certificate ``certs.ca`` signed."""
    context = server_context(str(certs.server.cert), str(certs.server.key), str(certs.ca.cert))
    gw = sig.ServerRouter(port=0, tls=context)
    await gw.start()
    yield gw
    await gw.stop()


async def raw_tls(port: int, context: ssl.SSLContext) -> Raw:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    return Raw(reader, writer)


# --- the gateway side ----------------------------------------------------------------


async def test_a_tls_peer_opens_a_session_and_its_link_says_tls(
    gateway: sig.ServerRouter, certs: Certs
) -> None:
    raw = await raw_tls(gateway.port, trusting(certs.ca))
    try:
        await raw.hello("tls-raw")
        rows = [r for r in gateway.links() if r["peer"] == "tls-raw"]
        assert len(rows) == 1 and rows[0]["tls"] in ("TLSv1.2", "TLSv1.3"), rows
        assert rows[0]["peer_subject"] is None  # no client certificate asked for
    finally:
        raw.close()


async def test_plain_tcp_on_a_tls_port_gets_nothing_and_the_gateway_serves_on(
    gateway: sig.ServerRouter, certs: Certs
) -> None:
    good = await raw_tls(gateway.port, trusting(certs.ca))
    await good.hello("good")
    plain = await Raw.open(gateway.port)
    await plain.msg(w.Hello("plain", 65535, 0))  # sig bytes where a ClientHello must come
    assert await asyncio.wait_for(plain.reader.read(), T) == b""  # closed, not one byte back
    plain.close()
    await until(lambda: gateway.core.counters["closed_tls"] == 1, T, "closed_tls")
    await good.alive(7)  # the good TLS client is served all along
    good.close()


async def test_a_silent_peer_on_a_tls_port_is_held_to_the_hello_deadline(
    certs: Certs,
) -> None:
    context = server_context(str(certs.server.cert), str(certs.server.key))
    gw = sig.ServerRouter(port=0, tls=context, hello_timeout=0.3)
    async with gw:
        silent = await Raw.open(gw.port)  # connects, never starts the handshake
        (row,) = await until(gw.links, T, "the link up")
        assert row["tls"] == "handshake" and row["state"] == "await-hello"
        assert gw.core.gauges["connections"] == 1  # the handshake holds a connection slot
        assert await asyncio.wait_for(silent.reader.read(), T) == b""
        await until(lambda: gw.core.counters["closed_hello_timeout"] == 1, T, "hello timeout")
        assert gw.core.gauges["connections"] == 0
        silent.close()


async def test_handshakes_in_progress_are_evicted_at_the_connection_limit(
    certs: Certs,
) -> None:
    context = server_context(str(certs.server.cert), str(certs.server.key))
    gw = sig.ServerRouter(port=0, tls=context, max_connections=2)
    async with gw:
        stalled = [await Raw.open(gw.port) for _ in range(2)]  # hold both slots, no ClientHello
        await until(lambda: gw.core.gauges["connections"] == 2, T, "two handshakes")
        good = await raw_tls(gw.port, trusting(certs.ca))  # evicts the oldest stalled one
        await good.hello("good")
        assert await asyncio.wait_for(stalled[0].reader.read(), T) == b""
        await until(lambda: gw.core.counters["closed_evicted"] == 1, T, "one eviction")
        assert gw.core.gauges["connections"] == 2  # the good one and the younger stalled one
        await good.alive(3)
        for peer in (*stalled, good):
            peer.close()


async def test_a_failed_handshake_is_counted_and_logged_once_a_minute_never_a_traceback(
    gateway: sig.ServerRouter, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        plain = await Raw.open(gateway.port)
        await plain.send(b"GET / HTTP/1.0\r\n\r\n")
        assert await asyncio.wait_for(plain.reader.read(), T) == b""
        plain.close()
    await until(lambda: gateway.core.counters["closed_tls"] == 3, T, "three failures")
    stats = await gateway.request("$gateway", "stats")
    assert stats["closed_tls"] == 3
    lines = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # the throttle: one a minute
    assert all(r.exc_info is None for r in caplog.records)  # no traceback anywhere


async def test_mutual_tls_puts_the_client_certificate_cn_on_the_link(
    mutual: sig.ServerRouter, certs: Certs
) -> None:
    raw = await raw_tls(mutual.port, trusting(certs.ca, certs.client))
    try:
        await raw.hello("dash")
        (session,) = [s for s in mutual.core.sessions if s.peer == "dash"]
        assert session.link.peer_subject == "dashboard"
        (row,) = [r for r in mutual.links() if r["peer"] == "dash"]
        assert row["peer_subject"] == "dashboard"
    finally:
        raw.close()


@pytest.mark.parametrize("who", ["no certificate", "a certificate of another CA"])
async def test_mutual_tls_refuses_a_client_without_a_good_certificate(
    mutual: sig.ServerRouter, certs: Certs, who: str
) -> None:
    context = trusting(certs.ca, certs.stranger if who != "no certificate" else None)
    try:
        raw = await raw_tls(mutual.port, context)
    except (ssl.SSLError, ConnectionError):
        pass  # TLS 1.2: refused in the handshake
    else:  # TLS 1.3: the client's handshake ends first; the gateway refuses right after
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            await raw.hello("intruder")
        raw.close()
    await until(lambda: mutual.core.counters["closed_tls"] == 1, T, "closed_tls")
    assert not [s for s in mutual.core.sessions if s.peer == "intruder"]


# --- the clients ----------------------------------------------------------------------


async def test_a_tls_client_round_trip_events_and_a_request(
    gateway: sig.ServerRouter, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    got: asyncio.Queue[object] = asyncio.Queue()
    sender_side = sig.AsyncClientRouter(port=gateway.port, name="tls-s", cafile=str(certs.ca.cert))
    listener_side = sig.AsyncClientRouter(port=gateway.port, name="tls-l", tls=trusting(certs.ca))
    await sender_side.connect()
    await listener_side.connect()
    try:
        sensor = await sender_side.add_sender(
            "sensor", ["temperature"], requests={"get": lambda params: ["ok", params]}
        )
        await listener_side.add_listener(lambda info, data: got.put_nowait(data), "sensor", None)
        sensor.trigger("temperature", 21.5)
        assert await asyncio.wait_for(got.get(), T) == 21.5
        assert await listener_side.request("sensor", "get", 7) == ["ok", 7]
        links = await listener_side.list_links()
        assert {r["peer"]: r["tls"] for r in links if r["peer"].startswith("tls-")} == {
            "tls-s": "TLSv1.3",
            "tls-l": "TLSv1.3",
        }
    finally:
        await sender_side.close()
        await listener_side.close()
    await until(lambda: not gateway.core.sessions, T, "sessions gone")
    assert not [r for r in caplog.records if r.levelno >= 30], caplog.records  # quiet closes


async def connect_error(**kw: object) -> str:
    client = sig.AsyncClientRouter(auto_reconnect=False, connect_timeout=T, **kw)  # type: ignore[arg-type]
    with pytest.raises(sig.ConnectError) as caught:
        await client.connect()
    await client.close()
    return str(caught.value)


async def test_a_client_that_does_not_trust_the_gateways_ca_is_refused_clearly(
    gateway: sig.ServerRouter, certs: Certs
) -> None:
    message = await connect_error(port=gateway.port, cafile=str(certs.other_ca.cert))
    assert "not trusted" in message and "unable to get local issuer" in message, message
    message = await connect_error(port=gateway.port, tls=True)  # the system CAs: not ours either
    assert "not trusted" in message, message
    assert gateway.core.counters["closed_tls"] == 2  # the gateway counted both


async def test_an_expired_gateway_certificate_is_refused(certs: Certs) -> None:
    context = server_context(str(certs.expired.cert), str(certs.expired.key))
    async with sig.ServerRouter(port=0, tls=context) as gw:
        message = await connect_error(port=gw.port, cafile=str(certs.ca.cert))
        assert "not trusted" in message and "expired" in message, message


async def test_a_certificate_for_another_name_is_refused(certs: Certs) -> None:
    context = server_context(str(certs.elsewhere.cert), str(certs.elsewhere.key))
    async with sig.ServerRouter(port=0, tls=context) as gw:  # names other.example only
        message = await connect_error(port=gw.port, cafile=str(certs.ca.cert))
        assert "not trusted" in message and "mismatch" in message, message


async def test_plain_and_tls_clients_on_the_wrong_kind_of_port_get_a_connect_error(
    gateway: sig.ServerRouter, certs: Certs
) -> None:
    await connect_error(port=gateway.port)  # plain TCP on the TLS port: closed, no WELCOME
    async with sig.ServerRouter(port=0) as plain_gw:
        message = await connect_error(port=plain_gw.port, cafile=str(certs.ca.cert))
        assert "TLS" in message, message


def test_the_sync_client_with_mutual_tls_shows_its_subject_in_sig_links(
    certs: Certs, tmp_path: Path
) -> None:
    gw = Gateway(0, "--no-timer", "--tls-cert", str(certs.server.cert), "--tls-key",
                 str(certs.server.key), "--tls-client-ca", str(certs.ca.cert))  # fmt: skip
    try:
        assert "tls        on, mutual" in "\n".join(gw.lines[:3]), gw.lines
        client = sig.ClientRouter(
            host="127.0.0.1", port=gw.port, name="dash", tls=trusting(certs.ca, certs.client)
        )
        client.connect()
        try:
            links = client.list_links()
            (row,) = [r for r in links if r["peer"] == "dash"]
            assert row["peer_subject"] == "dashboard" and row["tls"] == "TLSv1.3"
        finally:
            client.close()
        # without a client certificate: refused
        lonely = sig.ClientRouter(
            host="127.0.0.1", port=gw.port, auto_reconnect=False, tls=trusting(certs.ca)
        )
        with pytest.raises(sig.ConnectError, match="want a client certificate"):
            lonely.connect()
        lonely.close()
    finally:
        assert gw.stop() == 0


def test_the_seed_carrier_connects_over_tls(gateway_proc: Gateway, certs: Certs) -> None:
    carrier = CarrierTCPClient(tls=trusting(certs.ca))
    client = sig.ClientRouter(carrier)
    try:
        assert carrier.connect("127.0.0.1", gateway_proc.port, auto_reconnect=False)
        assert carrier.is_connected
        assert client.request("timer", "get_ticks") >= 0
    finally:
        carrier.disconnect()


@pytest.fixture(scope="module")
def gateway_proc(certs: Certs) -> Iterator[Gateway]:
    """``sig serve`` with TLS (certificate and key from a [tls] table), the demo timer on."""
    config = certs.ca.cert.parent / "tls.toml"
    config.write_text(f'[tls]\ncert = "{certs.server.cert}"\nkey = "{certs.server.key}"\n')
    gw = Gateway(0, "--config", str(config), "--timer-interval", "0.2", "--no-discovery")
    yield gw
    gw.stop()



def test_the_cli_talks_to_a_tls_gateway_with_tls_and_cafile(
    gateway_proc: Gateway, certs: Certs
) -> None:
    port = str(gateway_proc.port)
    assert "tls        on, certificate" in "\n".join(gateway_proc.lines[:3]), gateway_proc.lines
    r = run_sig("senders", "--port", port, "--tls", "--cafile", str(certs.ca.cert), "--json")
    assert r.returncode == 0, r.stderr
    assert "timer" in json.loads(r.stdout)
    r = run_sig("links", "--port", port, "--cafile", str(certs.ca.cert))  # --cafile alone: TLS
    assert r.returncode == 0 and "tls=TLSv1.3" in r.stdout, r.stdout + r.stderr
    r = run_sig("senders", "--port", port, "--tls", "--timeout", "3")  # system CAs: refused
    assert r.returncode == 1 and "cannot reach the gateway" in r.stderr, r.stderr
    assert "not trusted" in r.stderr, r.stderr
    r = run_sig("senders", "--port", port, "--timeout", "3")  # plain TCP: refused
    assert r.returncode == 1 and "cannot reach the gateway" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tls-cert", "{cert}"], "needs both a certificate and its key"),
        (["--tls-client-ca", "{ca}"], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", "{missing}", "--tls-key", "{key}"], "cannot load TLS certificate"),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-client-ca", "{missing}"],
         "cannot load TLS client CA"),
        (["--config", "{bad_table}"], "[tls] takes only cert, key, client_ca"),
    ],
)  # fmt: skip
def test_bad_tls_settings_exit_2_with_one_clear_line(
    certs: Certs, tmp_path: Path, args: list[str], says: str
) -> None:
    bad_table = tmp_path / "bad.toml"
    bad_table.write_text('[tls]\ncertificate = "gw.pem"\n')
    names = {"cert": certs.server.cert, "key": certs.server.key, "ca": certs.ca.cert,
             "missing": tmp_path / "nope.pem", "bad_table": bad_table}  # fmt: skip
    r = run_sig("serve", "--port", "0", *(a.format(**names) for a in args))
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr


async def test_tls_1_2_is_the_least_the_gateway_takes(
    gateway: sig.ServerRouter, certs: Certs
) -> None:
    assert gateway.tls is not None
    assert gateway.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert gateway.tls.options & ssl.OP_NO_RENEGOTIATION
    context = trusting(certs.ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # an older client still gets in
    raw = await raw_tls(gateway.port, context)
    try:
        await raw.hello("tls12")
        (row,) = [r for r in gateway.links() if r["peer"] == "tls12"]
        assert row["tls"] == "TLSv1.2"
    finally:
        raw.close()


async def test_a_client_certificate_is_the_principal_with_tls_principal_subject(
    certs: Certs, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    r = subprocess.run([sys.executable, "-m", "sig", "passwd", str(users), "alice",
                        "--password-stdin"], input="wonderland\n", capture_output=True,
                       text=True, timeout=T, env=child_env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    context = server_context(str(certs.server.cert), str(certs.server.key), str(certs.ca.cert))
    gw = sig.ServerRouter(port=0, tls=context, users=str(users), tls_principal="subject")
    async with gw:
        client = sig.AsyncClientRouter(  # no user, no password: the certificate says who
            port=gw.port, name="dash", auto_reconnect=False, tls=trusting(certs.ca, certs.client)
        )
        await client.connect()
        try:
            (session,) = [s for s in gw.core.sessions if s.peer == "dash"]
            assert session.principal.name == "dashboard"
            assert session.principal.kind == "certificate"
        finally:
            await client.close()
