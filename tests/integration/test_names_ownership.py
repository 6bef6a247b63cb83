"""Name ownership without authentication (issue 9, item 5; names of item 8).

* A serial device's sender names stay reserved for its port for a grace period
  after it goes quiet; the same port gets them back at once, nobody else can
  take them (sans-I/O core with a fake clock, then real socat ptys).
* A client refused at a reconnect replay tells the application and wins its
  name back with backoff (real gateway processes, restarted).
* ``#connect`` / ``#disconnect`` cannot be declared, so never forged.
* Names with control characters are refused everywhere with INVALID_NAME.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from fakes import FakeClock, MemoryLink
from presence import plain
from procs import Gateway, Peer, until, wait_until
from rawpeer import Raw
from serial_rig import SerialRig
from socat import SocatPairs

import sig
import sig.protocol.data
from sig.core.gateway import GatewayCore
from sig.core.session import Session, State
from sig.errors import DuplicateSenderError, ErrorCode, InvalidNameError, NoSuchSender
from sig.protocol import messages as w
from sig.routers.client import AsyncClientRouter, Backoff
from sig.routers.gateway import ServerRouter

T = 10.0
FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.1)
R = TypeVar("R")


class Logs(logging.Handler):
    """Records of the sig loggers (they may not propagate to the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.records.append(record)

    def lines(self, text: str, level: int = logging.INFO) -> list[str]:
        with self.guard:
            found = [r.getMessage() for r in self.records if r.levelno >= level]
        return [m for m in found if text in m]


@pytest.fixture
def logs() -> Iterator[Logs]:
    handler = Logs()
    log = logging.getLogger("sig")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


# --- the core: reservations with a fake clock ---------------------------------


def open_link(
    core: GatewayCore, link: str, peer: str, persistent: bool, keepalive_ms: int = 1000
) -> tuple[MemoryLink, Session]:
    mem = MemoryLink(link, persistent)
    session = core.attach(mem)
    core.receive(session, w.encode(w.Hello(peer, 1024, keepalive_ms)))
    return mem, session


def register(core: GatewayCore, session: Session, name: str, ref: int = 1) -> w.Message:
    """REGISTER_SENDER ``name``; the gateway's answer (SENDER_REGISTERED or ERROR)."""
    link = session.link
    assert isinstance(link, MemoryLink)
    link.take()
    core.receive(session, w.encode(w.RegisterSender(ref, name, ((ref, "temperature"),))))
    answers = [m for m in link.take() if isinstance(m, (w.SenderRegistered, w.Error))]
    assert len(answers) == 1, answers
    return answers[0]


def refused(answer: w.Message) -> str:
    assert isinstance(answer, w.Error) and answer.code == ErrorCode.DUPLICATE_SENDER, answer
    return answer.message


def test_quiet_device_name_is_reserved_twice_its_link_timeout() -> None:
    clock = FakeClock()
    core = GatewayCore("gw", clock=clock)
    _, device = open_link(core, "serial:/dev/ttyUSB0", "sensor", True, keepalive_ms=1000)
    assert isinstance(register(core, device, "sensor1"), w.SenderRegistered)
    clock.now += 3.05  # 3 x keepalive of silence: the link timeout
    core.poll()
    assert device.state is State.AWAIT_HELLO and "sensor1" not in core.table.senders
    # twice the link timeout of 3 s
    assert core.reservations("serial:/dev/ttyUSB0") == {"sensor1": 6.0}
    _, tcp = open_link(core, "tcp:127.0.0.1:5000", "intruder", False, keepalive_ms=0)
    message = refused(register(core, tcp, "sensor1"))
    assert "reserved for serial:/dev/ttyUSB0 for 6.0 s more" in message
    with pytest.raises(DuplicateSenderError, match="reserved for serial:/dev/ttyUSB0"):
        core.endpoints.add_sender("sensor1", ("temperature",), {})
    clock.now += 5.9
    assert "for 0.1 s more" in refused(register(core, tcp, "sensor1", ref=2))
    row = next(r for r in core.links() if r["link"] == "serial:/dev/ttyUSB0")
    assert row["reserved"] == {"sensor1": 0.1}
    clock.now += 0.2
    core.poll()  # expired reservations are cleaned here, without anyone asking
    assert core.reserved == {}
    assert "reserved" not in next(r for r in core.links() if r["link"] == "serial:/dev/ttyUSB0")
    assert isinstance(register(core, tcp, "sensor1", ref=3), w.SenderRegistered)


def test_same_port_gets_its_names_back_at_once_after_a_reset_or_a_reopen() -> None:
    clock = FakeClock()
    core = GatewayCore("gw", clock=clock)
    _, tcp = open_link(core, "tcp:127.0.0.1:5000", "intruder", False, keepalive_ms=0)
    mem, device = open_link(core, "serial:/dev/ttyACM0", "sensor", True)
    assert isinstance(register(core, device, "sensor1"), w.SenderRegistered)
    # Device reset: a new HELLO on the same port. Between its HELLO and its
    # REGISTER_SENDER nobody else may take the name; the device gets it at once.
    core.receive(device, w.encode(w.Hello("sensor", 1024, 1000)))
    assert "serial:/dev/ttyACM0" in refused(register(core, tcp, "sensor1"))
    assert isinstance(register(core, device, "sensor1"), w.SenderRegistered)
    assert core.reserved == {}
    # Port lost and reopened: a new link object with the same link name.
    core.detach(device)
    assert list(core.reserved) == ["sensor1"]
    refused(register(core, tcp, "sensor1", ref=2))
    _, reopened = open_link(core, "serial:/dev/ttyACM0", "sensor", True)
    assert isinstance(register(core, reopened, "sensor1"), w.SenderRegistered)
    assert core.reserved == {} and core.table.senders["sensor1"].owner is reopened
    # A device on another port is anyone else.
    core.detach(reopened)
    _, other_port = open_link(core, "serial:/dev/ttyACM1", "sensor", True)
    assert "serial:/dev/ttyACM0" in refused(register(core, other_port, "sensor1"))


def test_what_is_not_reserved() -> None:
    clock = FakeClock()
    core = GatewayCore("gw", clock=clock)
    _, device = open_link(core, "serial:/dev/ttyUSB0", "sensor", True)
    _, tcp = open_link(core, "tcp:127.0.0.1:5000", "client", False, keepalive_ms=0)
    # a sender the device unregisters itself is given up at once
    assert isinstance(register(core, device, "given-up"), w.SenderRegistered)
    core.receive(device, w.encode(w.UnregisterSender(1)))
    assert core.reserved == {}
    # a TCP client's names are free as soon as it is gone
    assert isinstance(register(core, tcp, "tcp-name"), w.SenderRegistered)
    core.detach(tcp)
    assert core.reserved == {}
    _, tcp2 = open_link(core, "tcp:127.0.0.1:5001", "client2", False, keepalive_ms=0)
    assert isinstance(register(core, tcp2, "tcp-name"), w.SenderRegistered)
    # serial_name_grace=0 turns reservations off; a value sets the grace
    for grace, expected in ((0.0, {}), (30.0, {"s": 30.0})):
        core = GatewayCore("gw", clock=clock, serial_name_grace=grace)
        _, dev = open_link(core, "serial:/dev/x", "sensor", True)
        assert isinstance(register(core, dev, "s"), w.SenderRegistered)
        core.detach(dev)
        assert core.reservations("serial:/dev/x") == expected


# --- real serial links: socat ptys and sig device-sim ---------------------------


async def sig_links(port: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sig", "links", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    return out.decode()


async def test_unplugged_device_keeps_its_name_and_gets_it_back(
    socat: SocatPairs, rig: SerialRig
) -> None:
    pair = socat.pair("dev")
    router = await rig.gateway(pair.a, serial_name_grace=60.0)
    sim = await rig.device(pair.b, keepalive_ms=1000)
    await sim.wait_for("REGISTERED", T)
    intruder = await rig.client("intruder", backoff=FAST)
    app = await rig.client("app", backoff=FAST)
    pair.unplug()
    await until(lambda: "reserved" in rig.link(pair.a), what="the reservation of the lost port")
    assert "sensor1" not in router.core.table.senders
    with pytest.raises(DuplicateSenderError) as refused_exc:
        await intruder.add_sender("sensor1", ["temperature"], {"get_temp": lambda p: 99.0})
    assert f"reserved for serial:{pair.a} for " in str(refused_exc.value)
    with pytest.raises(NoSuchSender):  # nobody answers for the device meanwhile
        await app.request("sensor1", "get_temp", timeout=5)
    rows = await app.request("$gateway", "links")
    row = next(r for r in rows if r["link"] == f"serial:{pair.a}")
    assert set(row["reserved"]) == {"sensor1"} and 0 < row["reserved"]["sensor1"] <= 60
    shown = [x for x in (await sig_links(router.port)).splitlines() if f"serial:{pair.a}" in x]
    assert len(shown) == 1 and "reserved=sensor1(" in shown[0], shown
    mark = len(sim.records)
    pair.replug()  # the device comes back on the same port: its name at once
    await sim.wait_for("REGISTERED", 2 * T, since=mark)  # the port reopens with backoff
    assert not sim.find("ERROR", since=mark)
    assert await app.request("sensor1", "get_temp", timeout=5) == 21.5
    assert "reserved" not in rig.link(pair.a) and router.core.reserved == {}


async def test_device_that_went_quiet_gets_its_name_back_and_the_grace_expires(
    socat: SocatPairs, rig: SerialRig, logs: Logs
) -> None:
    pair = socat.pair("dev")
    router = await rig.gateway(pair.a, serial_name_grace=None)  # default: twice the link timeout
    sim = await rig.device(pair.b, keepalive_ms=1000)
    await sim.wait_for("REGISTERED", T)
    intruder = await rig.client("intruder", backoff=FAST)
    await sim.stop()  # the device goes quiet; the port stays open
    await until(lambda: "reserved" in rig.link(pair.a), T, "the link timeout's reservation")
    assert rig.link(pair.a)["state"] == "await-hello"
    # 1 s keepalive -> 3 s link timeout -> 6 s grace; under 6 s are left now
    assert 0 < rig.link(pair.a)["reserved"]["sensor1"] <= 6.0
    with pytest.raises(DuplicateSenderError, match="reserved for serial:"):
        await intruder.add_sender("sensor1", ["temperature"])
    back = await rig.device(pair.b, keepalive_ms=1000)  # the same device, powered up again
    await back.wait_for("REGISTERED", T)
    assert not back.find("ERROR") and router.core.reserved == {}
    # quiet again; this time it stays away and the reservation expires in poll()
    await back.stop()
    await until(lambda: logs.lines("reservation of sender name 'sensor1' expired"), 20)
    assert logs.lines("'sensor1' reserved for this link for 6.0 s")
    assert "reserved" not in rig.link(pair.a) and router.core.reserved == {}
    await intruder.add_sender("sensor1", ["temperature"])  # free for anyone now
    assert router.core.table.senders["sensor1"].owner.peer == "intruder"


# --- clients refused at a reconnect replay ----------------------------------------


class LoopThread:
    """An event loop on its own thread, which the test can freeze and release."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(T)

    def freeze(self) -> threading.Event:
        """Block the loop until the returned event is set (bounded)."""
        gate, frozen = threading.Event(), threading.Event()

        def hold() -> None:
            frozen.set()
            gate.wait(3 * T)

        self.loop.call_soon_threadsafe(hold)
        assert frozen.wait(T)
        return gate

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(T)
        self.loop.close()


def owner_of(client: sig.ClientRouter, name: str) -> str | None:
    """The peer name of the link that holds sender ``name`` on the gateway."""
    for row in client.request("$gateway", "links"):
        if name in row["senders"]:
            return str(row["peer"])
    return None


def test_async_client_refused_at_replay_is_told_and_wins_its_name_back(logs: Logs) -> None:
    gw = Gateway()
    port = gw.port
    lt = LoopThread()
    a = AsyncClientRouter("127.0.0.1", port, name="a", backoff=FAST)
    told: list[tuple[str, str, str]] = []
    a.on_sender_refused = lambda name, exc: told.append((name, type(exc).__name__, str(exc)))
    watcher = sig.ClientRouter(port=port, name="watcher", backoff=FAST)
    b: sig.ClientRouter | None = None
    got: list[Any] = []
    try:
        lt.run(a.connect())
        pump = lt.run(a.add_sender("pump", ["on"]))
        gate = lt.freeze()  # A cannot reconnect before B has taken the name
        try:
            assert gw.stop() == 0
            gw = Gateway(port)
            b = sig.ClientRouter(port=port, name="b")
            b.connect()
            b.add_sender("pump", ["on"])
        finally:
            gate.set()
        wait_until(lambda: told, T, "on_sender_refused")
        assert told[0][:2] == ("pump", "DuplicateSenderError") and "pump" in told[0][2]
        watcher.connect()
        watcher.add_listener(lambda info, data: got.append(data), "pump", "on")
        for i in range(5):
            pump.trigger("on", i)
        wait_until(lambda: a.stats["dropped_unregistered"] == 5, T, "5 counted drops")
        b.get_sender("pump").trigger("on", "from b")  # type: ignore[union-attr]
        wait_until(lambda: got == ["from b"], T, "B's event")
        assert owner_of(watcher, "pump") == "b"
        b.close()  # the other client goes away: A's retries win the name back
        wait_until(lambda: owner_of(watcher, "pump") == "a", T, "A holds pump again")
        pump.trigger("on", "from a")
        wait_until(lambda: got == ["from b", "from a"], T, "A's event")
        assert len(told) == 1 and a.stats["senders_refused"] == 1
        assert len(logs.lines("gateway refused sender 'pump' at reconnect")) == 1
        assert logs.lines("sender 'pump' registered again after")
    finally:
        if b is not None:
            b.close()
        watcher.close()
        lt.run(a.close())
        lt.close()
        gw.stop()


def test_sync_client_refused_at_replay_retries_until_the_name_is_free() -> None:
    gw = Gateway()
    port = gw.port
    a = Peer(port, "a")
    watcher = sig.ClientRouter(port=port, name="watcher", backoff=FAST)
    b: sig.ClientRouter | None = None
    got: list[Any] = []
    try:
        a.call("sender", name="pump", events=["on"], methods={"who": {"return": "a"}})
        mark = a.mark()
        os.kill(a.popen.pid, signal.SIGSTOP)  # A sleeps through the restart
        try:
            assert gw.stop() == 0
            gw = Gateway(port)
            b = sig.ClientRouter(port=port, name="b")
            b.connect()
            b.add_sender("pump", ["on"], {"who": lambda p: "b"})
        finally:
            os.kill(a.popen.pid, signal.SIGCONT)
        told = a.wait_msg(lambda m: m.get("ev") == "refused", start=mark)
        assert told["sender"] == "pump" and told["error"] == "DuplicateSenderError"
        a.wait_msg(lambda m: m.get("ev") == "connected", start=mark)
        a.call("trigger", sender="pump", event="on", data="lost", times=3)
        wait_until(lambda: a.call("stats")["dropped_unregistered"] == 3, T, "counted drops")
        watcher.connect()
        watcher.add_listener(lambda info, data: got.append(data), "pump", "on")
        assert watcher.request("pump", "who") == "b"  # B answers: A never pretends
        b.close()
        wait_until(lambda: owner_of(watcher, "pump") == "a", T, "A holds pump again")
        assert watcher.request("pump", "who") == "a"
        a.call("trigger", sender="pump", event="on", data="back")
        wait_until(lambda: got == ["back"], T, "A's event after it won the name back")
        stats = a.call("stats")
        assert stats["senders_refused"] == 1 and stats["dropped_unregistered"] == 3
        assert len([m for m in a.messages() if m.get("ev") == "refused"]) == 1
        assert "gateway refused sender 'pump' at reconnect" in a.stderr_text()
    finally:
        if b is not None:
            b.close()
        watcher.close()
        a.close()
        gw.stop()


# --- reserved events ----------------------------------------------------------------


async def test_a_listener_of_connect_never_receives_a_forgery(gateway: ServerRouter) -> None:
    port = gateway.port
    seen: list[tuple[str, str, Any]] = []
    listener = AsyncClientRouter("127.0.0.1", port, name="listener")
    async with listener:

        def record(info: dict[str, Any], data: Any) -> None:
            seen.append((info["sender"], info["event"], data))

        await listener.add_listener(record, None, "#connect")
        await listener.add_listener(record, None, "#disconnect")
        raw = await Raw.open(port)
        await raw.hello("forger")
        for ref, event in ((1, "#connect"), (2, "#disconnect")):
            await raw.msg(w.RegisterSender(ref, f"forger{ref}", ((ref, event), (9 + ref, "x"))))
            error = await raw.error(ErrorCode.INVALID_NAME)
            assert error.ref == ref and "reserved" in error.message
            forged = {"events": ["valve"], "requests": ["open"]}
            await raw.msg(w.Trigger(ref, sig.protocol.data.pack(forged)))
            assert (await raw.error(ErrorCode.UNKNOWN_REF)).ref == ref
        # a genuine registration on the same link: the barrier for what came before
        await raw.msg(w.RegisterSender(5, "honest", ((5, "x"),)))
        await raw.expect(lambda m: isinstance(m, w.SenderRegistered) and m.sender_ref == 5)
        await until(lambda: seen, what="the genuine #connect")
        assert plain(seen) == [("honest", "#connect", {"events": ["x"], "requests": []})]
        forger = next(r for r in gateway.links() if r["peer"] == "forger")
        # the refusals are no breach; the two triggers of unknown refs are counted
        assert forger["protocol_errors"] == 2 and forger["senders"] == ["honest"]
        raw.close()
        await until(lambda: len(seen) == 2, what="the genuine #disconnect")
        assert plain(seen[1]) == ("honest", "#disconnect", {"events": ["x"], "requests": []})


async def test_reserved_events_are_refused_by_every_api(gateway: ServerRouter) -> None:
    for event in ("#connect", "#disconnect"):
        with pytest.raises(InvalidNameError, match="reserved"):
            sig.LocalRouter().add_sender("s", ["ok", event])
        with pytest.raises(InvalidNameError, match="reserved"):
            gateway.add_sender("s", [event])
        with pytest.raises(InvalidNameError, match="reserved"):
            gateway.core.endpoints.add_sender("s", (event,), {})
    assert "s" not in gateway.core.table.senders
    client = AsyncClientRouter("127.0.0.1", gateway.port, name="c")
    async with client:
        with pytest.raises(InvalidNameError, match="reserved"):
            await client.add_sender("s", ["#connect"])
        assert client.get_sender("s") is None
        await client.add_listener(lambda i, d: None, "s", "#connect")  # listening is fine
    sync = sig.ClientRouter(port=gateway.port, name="sync")
    try:
        await asyncio.to_thread(sync.connect)
        with pytest.raises(InvalidNameError, match="reserved"):
            await asyncio.to_thread(sync.add_sender, "s", ["#disconnect"])
    finally:
        await asyncio.to_thread(sync.close)
    # the clients refused it locally: the gateway never saw a registration
    assert "s" not in gateway.core.table.senders


# --- control characters in names ---------------------------------------------------

CONTROLS = ["\x00", "\x07", "\x1b[2J", "line\nevents: unlock", "\r", "\x7f", "\x85", "\x9b31m"]


async def test_control_characters_in_names_are_refused_on_the_wire(
    gateway: ServerRouter,
) -> None:
    raw = await Raw.open(gateway.port)
    for bad in CONTROLS:  # a HELLO with one opens no session
        await raw.msg(w.Hello(f"dev{bad}", 65535, 0))
        error = await raw.error(ErrorCode.INVALID_NAME)
        assert "control characters" in error.message
    assert gateway.links()[0]["state"] == "await-hello"
    await raw.hello("ok")
    ref = 0
    for bad in CONTROLS:
        for name, events, methods in (
            (f"s{bad}", ((100, "e"),), ()),
            ("s", ((100, f"e{bad}"),), ()),
            ("s", ((100, "e"),), (f"m{bad}",)),
        ):
            ref += 1
            await raw.msg(w.RegisterSender(ref, name, events, methods))
            error = await raw.error(ErrorCode.INVALID_NAME)
            assert error.ref == ref and "control characters" in error.message
        ref += 1
        await raw.msg(w.Listen(ref, f"s{bad}", None))
        assert (await raw.error(ErrorCode.INVALID_NAME)).ref == ref
        ref += 1
        await raw.msg(w.Listen(ref, None, f"#c{bad}"))
        assert (await raw.error(ErrorCode.INVALID_NAME)).ref == ref
    assert gateway.core.table.senders.keys() == set()
    assert gateway.core.table.subscription_count() == 0
    # printable non-ASCII names stay valid, and the link is still fine
    await raw.msg(w.RegisterSender(ref + 1, "Küche\u00a0Sensor", ((500, "Temperatur °C"),)))
    await raw.expect(lambda m: isinstance(m, w.SenderRegistered))
    row = gateway.links()[0]
    assert row["peer"] == "ok" and row["protocol_errors"] == 0
    raw.close()


def test_control_characters_are_refused_by_the_apis() -> None:
    router = sig.LocalRouter()
    client = AsyncClientRouter("127.0.0.1", 1, name="never-connected")
    for bad in CONTROLS:
        with pytest.raises(InvalidNameError, match="control characters"):
            router.add_sender(f"s{bad}", ["e"])
        with pytest.raises(InvalidNameError, match="control characters"):
            router.add_sender("s", [f"e{bad}"])
        with pytest.raises(InvalidNameError, match="control characters"):
            router.add_sender("s", ["e"], {f"m{bad}": lambda p: p})
        with pytest.raises(InvalidNameError, match="control characters"):
            router.add_listener(lambda i, d: None, f"s{bad}")
        with pytest.raises(InvalidNameError, match="control characters"):
            asyncio.run(client.add_listener(lambda i, d: None, None, f"#e{bad}"))
    with pytest.raises(InvalidNameError, match="surrogate"):
        router.add_sender("s\ud800", ["e"])
    assert router.list_senders() == {}
