"""Logins in the sans-I/O core: hashes, credentials, refusals, and the slowdown on a fake clock.

The gateway core is driven with in-memory links; password checks are handed
out as :class:`Verification` tickets and answered by the test (as the thread
pool does in the gateway process), so what is under test is the core's
decisions and timing, never the wall clock.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock, MemoryLink

from sig.core import auth
from sig.core.auth import (
    AuthSettings,
    Slowdown,
    Verification,
    decode_credentials,
    encode_credentials,
    format_users,
    hash_password,
    parse_hash,
    parse_users,
    verify_password,
)
from sig.core.client import ClientSession, HandshakeFailed
from sig.core.gateway import GatewayCore
from sig.core.principals import ANONYMOUS, Principal
from sig.core.session import Session, State
from sig.errors import DecodeError, ErrorCode, GatewayBusy, NotAuthorised, UsersFileError
from sig.protocol import messages as w
from sig.protocol.data import pack

PASSWORD = "correct horse"

#: The answer to a refused login: an ERROR about the HELLO.
HELLO = w.MessageType.HELLO
REFUSED = w.Error(ErrorCode.NOT_AUTHORISED, 0, "login refused", HELLO)



@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def core(clock: FakeClock, alice_hash: str) -> GatewayCore:
    core = GatewayCore("gw", clock=clock)
    core.auth.configure(AuthSettings(parse_users(f"alice:{alice_hash}\n")))
    return core


class Tickets:
    """The verifier of the gateway process, by hand: tickets wait until the test runs them."""

    def __init__(self, core: GatewayCore) -> None:
        self.core = core
        self.waiting: list[Verification] = []
        core.auth.verify = self.waiting.append

    def run_all(self) -> int:
        done = list(self.waiting)
        self.waiting.clear()
        for ticket in done:
            self.core.auth.verified(ticket, ticket.run())
        return len(done)


def hello(core: GatewayCore, link: MemoryLink, session: Session, creds: bytes) -> None:
    core.receive(session, w.encode(w.Hello("app", 1024, 0, credentials=creds)))


def attach(
    core: GatewayCore, address: str = "10.0.0.7", port: int = 40000
) -> tuple[MemoryLink, Session]:
    link = MemoryLink(f"tcp:{address}:{port}")
    return link, core.attach(link)


def answers(link: MemoryLink) -> list[w.Message]:
    return [m for m in link.take() if not isinstance(m, w.Invite)]


# --- hashes and the users file ------------------------------------------------------


def test_a_hash_is_scrypt_with_its_parameters_and_a_fresh_salt(alice_hash: str) -> None:
    parsed = parse_hash(alice_hash)
    assert alice_hash.startswith("$scrypt$n=16384,r=8,p=1$")
    assert (parsed.n, parsed.r, parsed.p, len(parsed.salt)) == (2**14, 8, 1, 16)
    assert PASSWORD not in alice_hash
    assert verify_password(alice_hash, PASSWORD)
    assert not verify_password(alice_hash, PASSWORD + "!")
    assert parse_hash(hash_password(PASSWORD)).salt != parsed.salt


@pytest.mark.parametrize(
    "line",
    [
        "bob:hunter2",  # plain text
        "bob:$scrypt$n=1024,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        # a short salt:
        "bob:$scrypt$n=16384,r=8,p=1$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "bob:$scrypt$n=16385,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "bob:$argon2$whatever",
        "bo\x01b:$scrypt$n=16384,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "no separator",
    ],
)
def test_a_bad_line_makes_the_whole_file_bad(line: str, alice_hash: str) -> None:
    with pytest.raises(UsersFileError, match="line 3"):
        parse_users(f"# users\nalice:{alice_hash}\n{line}\n")


def test_a_user_twice_is_refused(alice_hash: str) -> None:
    with pytest.raises(UsersFileError, match="twice"):
        parse_users(f"alice:{alice_hash}\nalice:{alice_hash}\n")


def test_format_and_parse_round_trip(alice_hash: str) -> None:
    text = format_users({"zed": alice_hash, "alice": alice_hash})
    assert text.splitlines()[0].startswith("alice:")
    assert set(parse_users(text)) == {"alice", "zed"}


# --- credentials --------------------------------------------------------------------


def test_credentials_are_a_cbor_map_and_other_keys_are_ignored() -> None:
    raw = encode_credentials("alice", "pw")
    assert raw == pack({"user": "alice", "password": "pw"})
    assert decode_credentials(raw) == auth.Credentials("alice", "pw")
    assert decode_credentials(pack({"key": 3})) == auth.Credentials()
    assert encode_credentials(None, "pw") == b""
    for bad in (b"s3cret", pack([1]), pack({"user": 5}), pack({"user": "a", "password": b"x"})):
        with pytest.raises(DecodeError):
            decode_credentials(bad)


# --- the gateway's decisions --------------------------------------------------------


def test_the_right_password_opens_the_session_as_the_user(core: GatewayCore) -> None:
    tickets = Tickets(core)
    link, session = attach(core)
    hello(core, link, session, encode_credentials("alice", PASSWORD))
    assert session.state is State.AWAIT_HELLO  # nothing until the check comes back
    assert answers(link) == []
    assert tickets.run_all() == 1
    assert isinstance(answers(link)[0], w.Welcome)
    assert session.state is State.OPEN
    assert session.principal == Principal("alice", "user")


def test_wrong_password_and_unknown_user_get_the_same_answer_and_delay(core: GatewayCore) -> None:
    tickets = Tickets(core)
    seen = []
    for i, creds in enumerate(
        (encode_credentials("alice", "wrong"), encode_credentials("mallory", PASSWORD))
    ):
        address = f"10.0.0.{i + 1}"
        link, session = attach(core, address)
        hello(core, link, session, creds)
        # both cost a scrypt check with the same parameters (a stand-in for mallory)
        ticket = tickets.waiting[0]
        cost = (ticket.entry.n, ticket.entry.r, ticket.entry.p, len(ticket.entry.digest))
        tickets.run_all()
        seen.append((answers(link), session.state, core.auth.slowdown.until(address), cost))
    (a_msgs, a_state, a_until, a_cost), (b_msgs, b_state, b_until, b_cost) = seen
    assert (
        a_msgs
        == b_msgs
        == [REFUSED]
    )
    assert a_state is b_state is State.AWAIT_HELLO
    assert a_until == b_until > core.clock()
    assert a_cost == b_cost
    assert core.stats()["auth_failures"] == 2


def test_no_credentials_with_users_is_refused_unless_anonymous_is_allowed(
    core: GatewayCore, alice_hash: str
) -> None:
    link, session = attach(core)
    hello(core, link, session, b"")
    assert answers(link) == [
        REFUSED
    ]
    core.auth.configure(AuthSettings(parse_users(f"alice:{alice_hash}"), allow_anonymous=True))
    link, session = attach(core, "10.9.9.9")
    hello(core, link, session, b"")
    assert isinstance(answers(link)[0], w.Welcome)
    assert session.principal is ANONYMOUS


def test_without_users_everyone_is_anonymous_and_credentials_are_not_read() -> None:
    core = GatewayCore("gw", clock=FakeClock())
    link, session = attach(core)
    hello(core, link, session, b"not even cbor")
    assert isinstance(answers(link)[0], w.Welcome)
    assert session.principal is ANONYMOUS


def test_a_certificate_subject_is_the_principal_when_asked(
    core: GatewayCore, alice_hash: str
) -> None:
    core.auth.configure(AuthSettings(parse_users(f"alice:{alice_hash}"), tls_principal="subject"))
    link, session = attach(core)
    link.peer_subject = "dashboard"  # what the TLS link sets (a MemoryLink takes any attribute)
    hello(core, link, session, b"")
    assert isinstance(answers(link)[0], w.Welcome)
    assert session.principal == Principal("dashboard", "certificate")


def test_malformed_credentials_are_a_refusal(core: GatewayCore) -> None:
    link, session = attach(core)
    hello(core, link, session, b"s3cret")
    assert answers(link) == [
        REFUSED
    ]
    assert core.stats()["auth_failures"] == 1


def test_a_serial_device_without_credentials_is_admitted(core: GatewayCore) -> None:
    link = MemoryLink("serial:/dev/ttyUSB0", persistent=True)
    session = core.attach(link)
    core.receive(session, w.encode(w.Hello("dev", 256, 0)))
    # a port without a configured principal: device:<port> (sig.core.acl, rule 2)
    assert session.state is State.OPEN
    assert session.principal == Principal("device:/dev/ttyUSB0", "device")


def test_a_link_principal_is_taken_at_every_hello_without_a_login(
    core: GatewayCore, alice_hash: str
) -> None:
    """A port configured with a device name gives it; a login before it does not stay."""
    device = Principal("pump", "device")
    core.auth.link_principal = lambda link: device if link.persistent else None
    link = MemoryLink("serial:/dev/ttyUSB1", persistent=True)
    session = core.attach(link)
    core.receive(
        session, w.encode(w.Hello("dev", 256, 0, credentials=encode_credentials("alice", PASSWORD)))
    )
    assert session.principal == Principal("alice", "user")
    core.receive(session, w.encode(w.Hello("dev", 256, 0)))  # the device reset, no login now
    assert session.state is State.OPEN and session.principal == device


def test_verifications_in_flight_are_bounded(core: GatewayCore) -> None:
    tickets = Tickets(core)
    links = []
    for i in range(auth.MAX_VERIFICATIONS + 3):
        link, session = attach(core, f"10.1.0.{i}")
        hello(core, link, session, encode_credentials("alice", PASSWORD))
        links.append(link)
    assert len(tickets.waiting) == auth.MAX_VERIFICATIONS
    busy = [m for link in links for m in answers(link)]
    assert (
        busy
        == [w.Error(ErrorCode.BUSY, 0, "too many logins being checked", HELLO)] * 3
    )
    assert core.stats()["auth_busy"] == 3


def test_a_closed_link_frees_its_check_only_when_the_thread_is_done(core: GatewayCore) -> None:
    tickets = Tickets(core)
    link, session = attach(core)
    hello(core, link, session, encode_credentials("alice", PASSWORD))
    core.detach(session)
    assert len(core.auth.in_flight) == 1  # the thread still runs: it still counts
    tickets.run_all()
    assert core.auth.in_flight == {} and answers(link) == []


def test_a_new_hello_replaces_the_one_being_checked(core: GatewayCore) -> None:
    tickets = Tickets(core)
    link, session = attach(core)
    hello(core, link, session, encode_credentials("alice", "wrong"))
    hello(core, link, session, encode_credentials("alice", PASSWORD))
    tickets.run_all()
    assert [type(m) for m in answers(link)] == [w.Welcome]
    assert core.stats()["auth_failures"] == 0


# --- brute force: the slowdown, counted on the fake clock --------------------------


def brute_force(
    core: GatewayCore, clock: FakeClock, seconds: float, address: str, conns: int = 1
) -> list[float]:
    """An attacker with ``conns`` connections that each send a wrong login every 0.1 s
    (a new HELLO replaces its last); the times the answers came."""
    tickets = Tickets(core)
    core.hello_timeout = 0  # here only the slowdown is under test (the deadline: below)
    peers = [attach(core, address, 40000 + i) for i in range(conns)]
    times: list[float] = []
    end = clock.now + seconds
    while clock.now < end:
        for link, session in peers:
            hello(core, link, session, encode_credentials("alice", "guess"))
        for _ in range(10):  # the core polls every 0.1 s
            clock.now += 0.01
            core.poll()
            tickets.run_all()
            for link, _ in peers:
                times += [clock.now] * len(answers(link))
    return times


def per_window(times: list[float], start: float, window: float, windows: int) -> list[int]:
    return [sum(start + i * window <= t < start + (i + 1) * window for t in times)
            for i in range(windows)]  # fmt: skip


def test_failures_from_one_address_slow_its_answers_exponentially(
    core: GatewayCore, clock: FakeClock
) -> None:
    start = clock.now
    times = brute_force(core, clock, 120.0, "10.6.6.6")
    # 0.5, 1, 2, 4, 8, 16, 30, 30, ... s between answers: 12 in the first 2 minutes
    assert 9 <= len(times) <= 12, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(later >= earlier - 0.11 for earlier, later in itertools.pairwise(gaps))
    assert max(gaps) <= auth.SLOWDOWN_CAP + 0.2
    counts = per_window(times, start, 30.0, 4)
    assert counts[0] >= 5 and counts[2] <= 2 and counts[3] <= 2, counts
    # without the slowdown the same loop gets an answer for each of its ~1200 guesses
    assert core.stats()["auth_failures"] == len(times)


def test_parallel_connections_do_not_get_around_the_slowdown(
    core: GatewayCore, clock: FakeClock
) -> None:
    start = clock.now
    times = brute_force(core, clock, 120.0, "10.6.6.7", conns=50)
    counts = per_window(times, start, 30.0, 4)
    # the first round of 50 is checked at once (nothing failed yet), then one at a time
    assert counts[0] <= 50 + 6 and counts[2] <= 2 and counts[3] <= 2, counts
    assert len(times) <= 50 + 10


def test_other_addresses_are_not_slowed_and_success_does_not_forgive(
    core: GatewayCore, clock: FakeClock
) -> None:
    brute_force(core, clock, 10.0, "10.6.6.6")
    for attacker in list(core.sessions):
        core.detach(attacker)  # it hangs up (its parked HELLO would go first)
    tickets = Tickets(core)
    link, session = attach(core, "10.0.0.8")
    hello(core, link, session, encode_credentials("alice", PASSWORD))
    tickets.run_all()
    assert isinstance(answers(link)[0], w.Welcome)  # at once
    # a slowed address that logs in right waits its turn, then is forgiven
    link, session = attach(core, "10.6.6.6", 5)
    hello(core, link, session, encode_credentials("alice", PASSWORD))
    assert tickets.run_all() == 0 and answers(link) == []
    clock.now = core.auth.slowdown.until("10.6.6.6")
    core.poll()
    tickets.run_all()
    assert isinstance(answers(link)[0], w.Welcome)
    # a valid account does not reset the count: the next failure waits longer still
    before = clock.now - core.auth.slowdown.until("10.6.6.6")
    assert before < 0.1
    assert core.auth.slowdown.failed("10.6.6.6", clock.now) >= 16


def test_an_address_is_forgiven_after_a_quiet_while() -> None:
    slow = Slowdown()
    for _ in range(6):
        until = slow.until("x")
        slow.failed("x", until)
    assert slow.failed("x", slow.until("x")) == 30
    quiet = slow.until("x") + auth.SLOWDOWN_FORGET + 1
    assert slow.slowed("x", quiet - 2) and not slow.slowed("x", quiet)
    assert slow.failed("x", quiet) == 0.5


def test_a_slowed_login_still_meets_the_hello_deadline(core: GatewayCore, clock: FakeClock) -> None:
    brute_force(core, clock, 40.0, "10.6.6.6")  # now at the 30 s cap
    core.hello_timeout = 10.0
    link, session = attach(core, "10.6.6.6", 7)
    hello(core, link, session, encode_credentials("alice", PASSWORD))
    clock.now += core.hello_timeout + 0.5
    core.poll()
    assert link.closed and session.close_reason == "hello_timeout"
    assert session not in core.auth.parked


def test_the_slowdown_table_is_bounded() -> None:
    slow = Slowdown(max_addresses=3)
    for i in range(10):
        slow.failed(f"a{i}", 0.0)
    assert len(slow) == 3 and slow.until("a0") == 0.0 and slow.until("a9") > 0


def test_delays_double_and_stop_at_the_cap() -> None:
    slow = Slowdown()
    assert [slow.failed("x", 0.0) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_flood_of_failures_logs_one_line_a_minute(
    core: GatewayCore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "sig.core.auth")
    core.auth.verify = lambda ticket: core.auth.verified(ticket, False)  # no scrypt x 200
    for i in range(200):
        link, session = attach(core, f"10.2.{i // 250}.{i % 250}")
        hello(core, link, session, encode_credentials("mallory", "x"))
    lines = [r for r in caplog.records if "login refused" in r.getMessage()]
    assert len(lines) == 1
    assert "10.2.0.0" in lines[0].getMessage() and "'mallory'" in lines[0].getMessage()
    clock.now += 61
    link, session = attach(core, "10.3.0.1")
    hello(core, link, session, encode_credentials("mallory", "x"))
    texts = [r.getMessage() for r in caplog.records if "login refused" in r.getMessage()]
    assert len(texts) == 2 and "199 more failures" in texts[1]
    assert core.stats()["auth_failures"] == 201


# --- the wire vectors (tests/vectors.json, "credentials") ------------------------------

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())["credentials"]


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: c["name"])
def test_credentials_vectors(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["cbor"])
    assert pack(case["map"]) == raw
    creds = decode_credentials(raw)
    assert (creds.user, creds.password) == (case["map"]["user"], case["map"]["password"])
    hello = w.decode(bytes.fromhex(case["hello_body"]))
    assert isinstance(hello, w.Hello) and hello.credentials == raw
    assert w.encode(hello).hex() == case["hello_body"]


def test_the_login_vector_opens_a_session(core: GatewayCore) -> None:
    case = next(c for c in VECTORS if c["name"] == "unknown_key_ignored")
    link, session = attach(core)
    core.receive(session, bytes.fromhex(case["hello_body"]))  # alice / wonderland
    assert [type(m) for m in answers(link)] == [w.Error]  # alice's password here is another
    core.auth.configure(
        AuthSettings(parse_users(f"alice:{hash_password(case['map']['password'])}"))
    )
    link, session = attach(core, "10.0.0.99")
    core.receive(session, bytes.fromhex(case["hello_body"]))
    assert [type(m) for m in answers(link)] == [w.Welcome]
    assert session.principal == Principal("alice", "user")


# --- the client core: credentials in HELLO, a refusal as a typed error -------------------


def client_session(clock: FakeClock) -> tuple[ClientSession, MemoryLink]:
    session = ClientSession("app", keepalive=10.0, handshake_timeout=5.0, clock=clock)
    session.credentials = encode_credentials("alice", PASSWORD)
    link = MemoryLink("tcp:gw")
    session.start(link)
    return session, link


def test_the_client_sends_its_login_in_hello(clock: FakeClock) -> None:
    _, link = client_session(clock)
    (sent,) = link.take()
    assert isinstance(sent, w.Hello)
    assert decode_credentials(sent.credentials) == auth.Credentials("alice", PASSWORD)


@pytest.mark.parametrize(
    ("code", "error"), [(ErrorCode.NOT_AUTHORISED, NotAuthorised), (ErrorCode.BUSY, GatewayBusy)]
)
def test_a_refused_hello_is_a_typed_handshake_failure(
    clock: FakeClock, code: ErrorCode, error: type[Exception]
) -> None:
    session, _ = client_session(clock)
    (event,) = session.receive(w.encode(w.Error(code, 0, "login refused")))
    assert isinstance(event, HandshakeFailed) and isinstance(event.error, error)
    assert "login refused" in str(event.error)


def test_an_error_after_the_handshake_is_no_refusal(clock: FakeClock) -> None:
    session, _ = client_session(clock)
    session.receive(w.encode(w.Welcome("gw", 1024, 10000)))
    assert session.is_open
    assert session.receive(w.encode(w.Error(ErrorCode.NOT_AUTHORISED, 0, "no"))) == []


def test_the_client_core_against_the_gateway_core(core: GatewayCore) -> None:
    """Both sans-I/O halves, bytes passed by hand: a wrong password ends the handshake."""
    tickets = Tickets(core)
    client = ClientSession("app", clock=core.clock)
    client.credentials = encode_credentials("alice", "nope")
    to_gw = MemoryLink("tcp:client")
    client.start(to_gw)
    gw_link, gw_session = attach(core)
    for msg in to_gw.take():
        core.receive(gw_session, w.encode(msg))
    tickets.run_all()
    (refusal,) = answers(gw_link)
    (event,) = client.receive(w.encode(refusal))
    assert isinstance(event, HandshakeFailed) and isinstance(event.error, NotAuthorised)
