"""Child processes of the benchmarks (one role per process): ``_procs.py ROLE ARGS...``.

Line protocol with the driving script: the child prints ``READY [info]`` once it
is connected and registered, waits for ``GO`` on stdin where it has work to
start, prints ``RESULT {json}`` and exits; servers run until ``QUIT``.
Times are ``time.monotonic()``, one clock for every process on Linux.

Roles: sig-gateway, sig-listen, sig-send, sig-respond, sig-request (the
asyncio client), sig-sync-listen, sig-sync-send, sig-sync-request (the
synchronous ClientRouter), relay-gateway (bench/_relay.py), nats-listen,
nats-send, nats-respond, nats-request (nats-py), mqtt-listen, mqtt-send,
mqtt-respond, mqtt-request (paho), dev-sim, and the misbehaving peers of
bench/soak.py: soak-flood, soak-busy. ``SIG_UVLOOP`` (a comma list of roles,
or ``all``) runs those asyncio roles on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PAYLOAD = bytes(range(16))  #: the 16-byte payload of every event
EVENT = "#e"  #: sig: a channel, so one listener (None, "#e") hears every sender
TOPIC = "bench/{}/e"  #: MQTT: one topic per sender, listeners subscribe bench/+/e
SIG_PACE_BYTES = 0  #: a sig sender waits while more than this is unsent (as paho)
BATCH = 64  #: triggers between two turns of the sender's event loop / paho loop
IDLE = 1.0  #: a listener ends when its count has not grown for this long
DEADLINE = 120.0  #: hard bound of any run, seconds
LAST = b"last"  #: the data of each sender's final trigger (the many-latest check)


def say(tag: str, payload: Any = "") -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    print(f"{tag} {text}".rstrip(), flush=True)


def wait_line(word: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        line = sys.stdin.readline()
        if not line or line.strip() == word or line.strip() == "QUIT":
            return


async def await_line(word: str) -> None:
    await asyncio.get_running_loop().run_in_executor(None, wait_line, word)


class Counter:
    """Counts deliveries; remembers when the first and the last came."""

    def __init__(self) -> None:
        self.count = 0
        self.t_first = 0.0
        self.t_last = 0.0

    def hit(self, *_: Any) -> None:
        self.count += 1
        self.t_last = time.monotonic()
        if self.count == 1:
            self.t_first = self.t_last

    def done(self, expected: int, started: float) -> bool:
        now = time.monotonic()
        if self.count >= expected or now - started > DEADLINE:
            return True
        return self.count > 0 and now - self.t_last > IDLE

    def result(self) -> dict[str, Any]:
        return {"count": self.count, "t_first": self.t_first, "t_last": self.t_last}


class Latest(Counter):
    """Keeps the last data of each sender; done once ``expected`` senders sent LAST."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, Any] = {}

    def hit(self, *args: Any) -> None:
        super().hit()
        self.last[args[0]["sender"]] = args[-1]

    def done(self, expected: int, started: float) -> bool:
        now = time.monotonic()
        if sum(v == LAST for v in self.last.values()) >= expected or now - started > DEADLINE:
            return True
        return self.count > 0 and now - self.t_last > IDLE

    def result(self) -> dict[str, Any]:
        ended = sum(v == LAST for v in self.last.values())
        return {**super().result(), "senders_seen": len(self.last), "last_ok": ended}


class Recorder(Counter):
    """Also keeps (data, arrival time) of every delivery (data is the sequence number)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[Any, float]] = []

    def hit(self, *args: Any) -> None:
        super().hit()
        self.arrivals.append((args[-1], self.t_last))

    def result(self) -> dict[str, Any]:
        return {**super().result(), "arrivals": self.arrivals}


# --- sig ----------------------------------------------------------------------


async def sig_gateway(high_water: str = "", serial_port: str = "", serial_lib: str = "") -> None:
    """A ServerRouter on a free port; ``serial_port`` attached through ``serial_lib``.

    ``serial_lib``: the asyncio serial module, ``serial_asyncio_fast``
    (pyserial-asyncio-fast, the carrier's, the default) or ``serial_asyncio``
    (pyserial-asyncio, the bench extra installs it for the comparison).
    """
    from sig.routers.gateway import ServerRouter

    options: dict[str, Any] = {}
    if high_water:
        options["high_water"] = int(high_water)
    async with ServerRouter("127.0.0.1", 0, **options) as gw:
        acl = os.environ.get("SIG_BENCH_ACL")  # router.py --acl: an [acl] table to enforce
        if acl:
            import tomllib

            from sig.core.acl import Policy

            gw.core.access.install(Policy.from_table(tomllib.loads(Path(acl).read_text())["acl"]))
        if serial_port:  # attach the port as the serial carrier does: a persistent StreamLink
            import importlib

            from carriers.stream import StreamLink

            serial_asyncio = importlib.import_module(serial_lib or "serial_asyncio_fast")
            await serial_asyncio.create_serial_connection(
                asyncio.get_running_loop(),
                lambda: StreamLink(gw, name=f"serial:{serial_port}", persistent=True),
                serial_port,
                baudrate=921600,
            )
        say("READY", str(gw.port))
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "STATS":
                say("RESULT", gw.core.counters)
            elif line in ("QUIT", ""):
                break


async def sig_listen(port: str, expected: str, record: str = "", policy: str = "") -> None:
    """An AsyncClientRouter listener on (any sender, EVENT); ``policy``: the LISTEN policy.

    With ``record`` = "latest" it keeps the last data of every sender instead
    of every arrival, and ends once ``expected`` senders sent their LAST value
    (or it went idle): the many-latest shape's check.
    """
    from sig.routers.client import AsyncClientRouter

    counter: Counter = Latest() if record == "latest" else Recorder() if record else Counter()
    kwargs = {"policy": policy} if policy else {}
    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        await client.add_listener(counter.hit, None, EVENT, **kwargs)
        say("READY")
        cpu0, started = time.process_time(), time.monotonic()
        while not counter.done(int(expected), started):
            await asyncio.sleep(0.02)
        cpu = time.process_time() - cpu0
        say("RESULT", {**counter.result(), "client": client.stats, "cpu": cpu})


def sig_sync_listen(port: str, expected: str) -> None:
    """The same listener through the synchronous ClientRouter (its dispatcher thread)."""
    from sig.routers.sync import ClientRouter

    counter = Counter()
    with ClientRouter(port=int(port), keepalive=0, max_queued_events=1 << 20) as client:
        client.add_listener(counter.hit, None, EVENT)
        say("READY")
        cpu0, started = time.process_time(), time.monotonic()
        while not counter.done(int(expected), started):
            time.sleep(0.02)
        cpu = time.process_time() - cpu0
        say("RESULT", {**counter.result(), "client": client.stats, "cpu": cpu})


async def sig_send(port: str, conns: str, count: str, last: str = "") -> None:
    """``conns`` AsyncClientRouter senders, ``count`` triggers each, paced by their sockets.

    With ``last``, each sender's final trigger carries :data:`LAST` instead of
    the payload (the many-latest shape checks the listener ends with it).
    """
    from sig.routers.client import AsyncClientRouter

    clients = [
        AsyncClientRouter("127.0.0.1", int(port), keepalive=0, name=f"s{i}")
        for i in range(int(conns))
    ]
    signals = []
    for i, client in enumerate(clients):
        await client.connect()
        sender = await client.add_sender(f"bench{port}-{i}-{id(client)}", [EVENT])
        signals.append(sender.get_signal(EVENT))
    say("READY")
    await await_line("GO")
    n = int(count) - (1 if last else 0)
    cpu0, t_start = time.process_time(), time.monotonic()
    sent = 0
    for _ in range(0, n, BATCH):
        for sig in signals:
            for _ in range(min(BATCH, n - sent)):
                sig.trigger(PAYLOAD)
        sent += min(BATCH, n - sent)
        await asyncio.sleep(0)  # the links flush: one write per loop turn
        for client in clients:  # pace: wait while the gateway has not taken the last batches
            link = client._link
            while link is not None and link.write_buffer_size() > SIG_PACE_BYTES:
                await asyncio.sleep(0.0005)
    if last:
        for sig in signals:
            sig.trigger(LAST)
        sent += 1
        await asyncio.sleep(0)
    t_end = time.monotonic()
    for client in clients:
        await client.close()
    cpu = time.process_time() - cpu0
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": sent * len(clients), "cpu": cpu})


async def _sent(client: Any, deadline: float) -> None:
    """On a client's loop: after the triggers queued before this, wait for the socket."""
    await asyncio.sleep(0)  # the link flushes at the end of the loop turn
    link = client._link
    while link is not None and link.write_buffer_size() > SIG_PACE_BYTES:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.0005)


def sig_sync_send(port: str, conns: str, count: str) -> None:
    """The same senders through the synchronous ClientRouter (triggers from this thread)."""
    from sig.routers.sync import ClientRouter

    clients = [ClientRouter(port=int(port), keepalive=0, name=f"s{i}") for i in range(int(conns))]
    signals = []
    for i, client in enumerate(clients):
        client.connect()
        sender = client.add_sender(f"bench{port}-{i}-{id(client)}", [EVENT])
        signals.append(sender.get_signal(EVENT))
    say("READY")
    wait_line("GO")
    n = int(count)
    cpu0, t_start = time.process_time(), time.monotonic()
    deadline = t_start + DEADLINE
    sent = 0
    for _ in range(0, n, BATCH):
        for sig in signals:
            for _ in range(min(BATCH, n - sent)):
                sig.trigger(PAYLOAD)
        sent += min(BATCH, n - sent)
        for client in clients:  # pace: the I/O thread took the batch, the socket took it
            client._call(_sent(client._client, deadline))
    t_end = time.monotonic()
    for client in clients:
        client.close()
    cpu = time.process_time() - cpu0
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": sent * len(clients), "cpu": cpu})


async def sig_respond(port: str) -> None:
    from sig.routers.client import AsyncClientRouter

    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        await client.add_sender("svc", [], {"echo": lambda params: params})
        say("READY")
        await await_line("QUIT")


async def sig_request(port: str, count: str, target: str = "svc") -> None:
    """Sequential requests to ``target``'s ``echo`` through the asyncio client."""
    from sig.routers.client import AsyncClientRouter

    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        for _ in range(200):  # warm-up
            await client.request(target, "echo", PAYLOAD)
        say("READY")
        await await_line("GO")
        lat = []
        clock = time.perf_counter
        cpu0, t0 = time.process_time(), clock()
        for _ in range(int(count)):
            t = clock()
            await client.request(target, "echo", PAYLOAD)
            lat.append(clock() - t)
        total, cpu = clock() - t0, time.process_time() - cpu0
    say("RESULT", {"lat": _lat_summary(lat), "total": total, "n": len(lat), "cpu": cpu})


def sig_sync_request(port: str, count: str) -> None:
    """Sequential requests through the synchronous ClientRouter (the seed's API)."""
    from sig.routers.sync import ClientRouter

    with ClientRouter(port=int(port), keepalive=0) as client:
        for _ in range(200):  # warm-up
            client.request("svc", "echo", PAYLOAD)
        say("READY")
        wait_line("GO")
        lat = []
        clock = time.perf_counter
        cpu0, t0 = time.process_time(), clock()
        for _ in range(int(count)):
            t = clock()
            client.request("svc", "echo", PAYLOAD)
            lat.append(clock() - t)
        total, cpu = clock() - t0, time.process_time() - cpu0
    say("RESULT", {"lat": _lat_summary(lat), "total": total, "n": len(lat), "cpu": cpu})


def _lat_summary(lat: list[float]) -> dict[str, float]:
    lat.sort()
    return {
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }


# --- the bare asyncio relay (bench/_relay.py) ---------------------------------


async def relay_gateway() -> None:
    """The relay on a free port until QUIT; sig's clients (the sig-* roles) use it."""
    from _relay import serve

    server = await serve()
    say("READY", str(server.sockets[0].getsockname()[1]))
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "STATS":
            say("RESULT", {})
        elif line in ("QUIT", ""):
            break
    server.close()


# --- NATS (nats-py against nats-server) ----------------------------------------

NATS_SUBJECT = "bench.{}.e"  #: one subject per sender; listeners subscribe bench.*.e


async def _nats(port: str) -> Any:
    import nats

    async def quiet(exc: Exception) -> None:  # counted by the caller where it matters
        errors.append(type(exc).__name__)

    errors: list[str] = []
    nc = await nats.connect(
        f"nats://127.0.0.1:{port}",
        error_cb=quiet,
        allow_reconnect=False,
        ping_interval=3600,
        pending_size=1 << 26,
    )
    nc.bench_errors = errors
    return nc


def _nats_unsent(nc: Any) -> int:
    """Bytes a nats-py client has not handed to the kernel yet (its buffer + the transport's)."""
    unsent: int = nc.pending_data_size
    writer = getattr(nc._transport, "_io_writer", None)
    if writer is not None:
        unsent += writer.transport.get_write_buffer_size()
    return unsent


async def nats_listen(port: str, expected: str) -> None:
    counter = Counter()
    nc = await _nats(port)

    async def hit(msg: Any) -> None:
        counter.hit()

    # no client-side pending limits (0 = none), as Mosquitto is run without queue limits
    await nc.subscribe(
        NATS_SUBJECT.format("*"), cb=hit, pending_msgs_limit=0, pending_bytes_limit=0
    )
    await nc.flush()
    say("READY")
    cpu0, started = time.process_time(), time.monotonic()
    while not counter.done(int(expected), started):
        await asyncio.sleep(0.02)
    cpu = time.process_time() - cpu0
    errors = list(nc.bench_errors)
    await nc.close()
    say("RESULT", {**counter.result(), "errors": errors, "cpu": cpu})


async def nats_send(port: str, conns: str, count: str) -> None:
    clients = [await _nats(port) for _ in range(int(conns))]
    subjects = [NATS_SUBJECT.format(f"s{i}") for i in range(len(clients))]
    say("READY")
    await await_line("GO")
    n = int(count)
    cpu0, t_start = time.process_time(), time.monotonic()
    deadline = t_start + DEADLINE
    sent = 0
    for _ in range(0, n, BATCH):
        k = min(BATCH, n - sent)
        for nc, subject in zip(clients, subjects, strict=True):
            publish = nc.publish
            for _ in range(k):
                await publish(subject, PAYLOAD)
        sent += k
        await asyncio.sleep(0)  # the flusher task writes
        for nc in clients:  # pace: wait while this client has unsent bytes (as sig and paho)
            while _nats_unsent(nc) > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.0005)
    for nc in clients:
        await nc.flush()
    t_end = time.monotonic()
    for nc in clients:
        await nc.close()
    cpu = time.process_time() - cpu0
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": sent * len(clients), "cpu": cpu})


async def nats_respond(port: str) -> None:
    nc = await _nats(port)

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("bench.req", cb=echo)
    await nc.flush()
    say("READY")
    await await_line("QUIT")
    await nc.close()


async def nats_request(port: str, count: str) -> None:
    nc = await _nats(port)
    for _ in range(200):  # warm-up
        await nc.request("bench.req", PAYLOAD, timeout=10)
    say("READY")
    await await_line("GO")
    lat = []
    clock = time.perf_counter
    cpu0, t0 = time.process_time(), clock()
    for _ in range(int(count)):
        t = clock()
        await nc.request("bench.req", PAYLOAD, timeout=10)
        lat.append(clock() - t)
    total, cpu = clock() - t0, time.process_time() - cpu0
    await nc.close()
    say("RESULT", {"lat": _lat_summary(lat), "total": total, "n": len(lat), "cpu": cpu})


# --- MQTT (paho) --------------------------------------------------------------


def _paho(client_id: str, port: int) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
    )
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port, keepalive=60)
    deadline = time.monotonic() + 10
    while not connected.is_set():
        client.loop(0.05)
        if time.monotonic() > deadline:
            raise RuntimeError("no CONNACK from mosquitto")
    return client


def _subscribe(client: Any, topic: str) -> None:
    acked = threading.Event()
    client.on_subscribe = lambda *a: acked.set()
    client.subscribe(topic, qos=0)
    deadline = time.monotonic() + 10
    while not acked.is_set():
        client.loop(0.05)
        if time.monotonic() > deadline:
            raise RuntimeError("no SUBACK from mosquitto")


def mqtt_listen(port: str, expected: str) -> None:
    counter = Counter()
    client = _paho(f"listen-{id(counter)}", int(port))
    _subscribe(client, TOPIC.format("+"))
    client.on_message = counter.hit
    client.loop_start()  # paho's network thread: reads, parses, calls on_message
    say("READY")
    cpu0, started = time.process_time(), time.monotonic()
    while not counter.done(int(expected), started):
        time.sleep(0.02)
    cpu = time.process_time() - cpu0
    client.disconnect()
    client.loop_stop()
    say("RESULT", {**counter.result(), "cpu": cpu})


def mqtt_send(port: str, conns: str, count: str) -> None:
    clients = [
        _paho(f"send-{port}-{i}-{time.monotonic_ns()}", int(port)) for i in range(int(conns))
    ]
    topics = [TOPIC.format(f"s{i}") for i in range(len(clients))]
    say("READY")
    wait_line("GO")
    n = int(count)
    cpu0, t_start = time.process_time(), time.monotonic()
    deadline = t_start + DEADLINE
    sent = 0
    for _ in range(0, n, BATCH):
        k = min(BATCH, n - sent)
        for client, topic in zip(clients, topics, strict=True):
            publish = client.publish
            for _ in range(k):
                publish(topic, PAYLOAD, qos=0)  # no loop thread: paho writes at once
        sent += k
        for client in clients:  # pace: let what paho could not write go out first
            client.loop(0)
            while client.want_write() and time.monotonic() < deadline:
                client.loop(0.001)
    t_end = time.monotonic()
    cpu = time.process_time() - cpu0
    for client in clients:
        client.disconnect()
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": sent * len(clients), "cpu": cpu})


def mqtt_respond(port: str) -> None:
    client = _paho("respond", int(port))
    _subscribe(client, "bench/req")
    client.on_message = lambda c, u, msg: c.publish("bench/resp", msg.payload, qos=0)
    client.loop_start()
    say("READY")
    wait_line("QUIT")
    client.disconnect()
    client.loop_stop()


def mqtt_request(port: str, count: str) -> None:
    client = _paho("request", int(port))
    _subscribe(client, "bench/resp")
    got: list[int] = [0]
    client.on_message = lambda *a: got.__setitem__(0, got[0] + 1)

    def one() -> None:
        want = got[0] + 1
        client.publish("bench/req", PAYLOAD, qos=0)
        deadline = time.monotonic() + 10
        while got[0] < want:
            client.loop(1.0)
            if time.monotonic() > deadline:
                raise RuntimeError("no response within 10 s")

    for _ in range(200):
        one()
    say("READY")
    wait_line("GO")
    lat = []
    clock = time.perf_counter
    cpu0, t0 = time.process_time(), clock()
    for _ in range(int(count)):
        t = clock()
        one()
        lat.append(clock() - t)
    total, cpu = clock() - t0, time.process_time() - cpu0
    client.disconnect()
    say("RESULT", {"lat": _lat_summary(lat), "total": total, "n": len(lat), "cpu": cpu})


# --- a minimal UART device (the codec, sig.protocol, only) ---------------------


def dev_sim(path: str, mode: str, count: str, interval_us: str = "0") -> None:
    """A device on a pty: HELLO, REGISTER_SENDER "dev" with "#e", then TRIGGERs.

    mode "rate": the triggers (data = sequence number) as fast as the pty takes
    them, 64 frames per write; mode "lat": one frame per write, ``interval_us``
    apart, with the time each write returned; mode "echo": no triggers, it
    answers each REQUEST to ``dev.echo`` with its data (the gateway's writes to
    the device, the path where the serial libraries differ).
    """
    import os
    import select

    from sig.protocol import messages as w
    from sig.protocol.data import pack
    from sig.protocol.frame import FrameDecoder, encode_frame

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    decoder = FrameDecoder(512)

    def expect(kind: type) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                for body in decoder.feed(os.read(fd, 4096)):
                    if isinstance(w.decode(body), kind):
                        return
        raise RuntimeError(f"no {kind.__name__} from the gateway")

    def frame(msg: w.Message) -> bytes:
        return encode_frame(w.encode(msg))

    def write_all(data: bytes) -> None:
        while data:  # a pty may take part of a write
            data = data[os.write(fd, data) :]

    write_all(b"\x00" + frame(w.Hello("dev", 512, 60000)))
    expect(w.Welcome)
    write_all(frame(w.RegisterSender(1, "dev", ((1, EVENT),), ("echo",))))
    expect(w.SenderRegistered)
    if mode == "echo":  # answer every REQUEST with its data until QUIT
        say("READY", "0")
        while True:
            ready, _, _ = select.select([fd, sys.stdin], [], [], 1.0)
            if sys.stdin in ready and _stdin_says_stop():
                break
            if fd in ready:
                out = b""
                for body in decoder.feed(os.read(fd, 4096)):
                    msg = w.decode(body)
                    if isinstance(msg, w.Request):
                        out += frame(w.Response(msg.request_id, 0, "", msg.data))
                write_all(out)
        os.close(fd)
        return
    frames = [frame(w.Trigger(1, pack(i))) for i in range(int(count))]
    say("READY", str(sum(map(len, frames)) / len(frames)))
    wait_line("GO")
    sent_at: list[float] = []
    t_start = time.monotonic()
    if mode == "rate":
        for i in range(0, len(frames), 64):
            write_all(b"".join(frames[i : i + 64]))
    else:
        pause = int(interval_us) / 1e6
        for f in frames:
            write_all(f)
            sent_at.append(time.monotonic())
            time.sleep(pause)
    t_end = time.monotonic()
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": len(frames), "sent_at": sent_at})
    wait_line("QUIT")
    os.close(fd)


# --- misbehaving peers of bench/soak.py (raw sockets, sig.protocol) -------------


def _stdin_says_stop() -> bool:
    """True when the driving script wrote STOP or QUIT (or went away); call when readable."""
    line = sys.stdin.readline()
    return not line or line.strip() in ("STOP", "QUIT")


def soak_flood(port: str, clients: str, seconds: str) -> None:
    """``clients`` connections that write and never read, for ``seconds`` (or until STOP).

    Each sends HELLO, then loops over requests to ``$gateway links``, requests to
    ``svc.echo`` and PINGs, as fast as its socket takes them, and never calls
    recv. A connection the gateway closes is opened again (and counted), so the
    pressure lasts the whole run.
    """
    import selectors
    import socket

    from _common import frames

    from sig.protocol import messages as w
    from sig.protocol.data import pack

    data = pack(PAYLOAD)
    block = frames(
        *(
            m
            for i in range(1, 1024, 3)
            for m in (
                w.Request(i, "$gateway", "links"),
                w.Request(i + 1, "svc", "echo", data),
                w.Ping(i + 2),
            )
        )
    )
    per_frame = len(block) / 1023
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    counts = {"bytes": 0, "opened": 0, "closed_by_gateway": 0, "connect_failures": 0}

    def open_one(i: int) -> bool:
        try:
            sock = socket.create_connection(("127.0.0.1", int(port)), 2.0)
            sock.sendall(frames(w.Hello(f"flood{i}", 65535, 0)))
        except OSError:
            counts["connect_failures"] += 1
            return False
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_WRITE, [i, 0])
        counts["opened"] += 1
        return True

    down = [i for i in range(int(clients)) if not open_one(i)]
    say("READY", str(int(clients) - len(down)))
    wait_line("GO")
    deadline = time.monotonic() + float(seconds)
    view = memoryview(block * 4)  # one send may take several blocks
    stop = False
    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            if key.data is None:
                stop = _stdin_says_stop()
                continue
            sock, state = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            try:
                n = sock.send(view[state[1] : state[1] + len(block)])
            except BlockingIOError:
                continue
            except OSError:
                counts["closed_by_gateway"] += 1
                sel.unregister(sock)
                sock.close()
                down.append(state[0])
                continue
            counts["bytes"] += n
            state[1] = (state[1] + n) % len(block)
        if down and time.monotonic() < deadline:
            down = [i for i in down if not open_one(i)]
    say("RESULT", {**counts, "frames": round(counts["bytes"] / per_frame)})
    wait_line("QUIT")  # the sockets stay open (and unread) until the script has measured
    for key in list(sel.get_map().values()):
        if key.data is not None:
            key.fileobj.close()  # type: ignore[union-attr]


def soak_busy(port: str, inflight: str, seconds: str) -> None:
    """One requester that keeps ``inflight`` requests to ``svc.echo`` pending, for ``seconds``.

    It reads every answer (it is greedy, not broken): each RESPONSE, OK or BUSY,
    is replaced by a new REQUEST at once. Counts answers by status.
    """
    import selectors

    from _common import RawPeer, frames

    from sig.errors import ErrorCode
    from sig.protocol import messages as w
    from sig.protocol.data import pack

    peer = RawPeer(int(port), "busy-flooder")
    if not peer.hello():
        raise RuntimeError("no WELCOME")
    data = pack(PAYLOAD)
    ids = iter(range(1, 1 << 32))
    say("READY")
    wait_line("GO")
    sock = peer.sock
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)

    def requests(n: int) -> bytes:
        return frames(*(w.Request(next(ids), "svc", "echo", data) for _ in range(n)))

    out = bytearray(requests(int(inflight)))
    counts = {"sent": int(inflight), "ok": 0, "busy": 0, "other": 0}
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if out:
            with contextlib.suppress(BlockingIOError):
                del out[: sock.send(out)]
        sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
        if not sel.select(0.05):
            continue
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            counts["closed_by_gateway"] = 1
            break
        again = 0
        for body in peer.decoder.feed(chunk):
            if body[0] != w.MessageType.RESPONSE:
                continue
            status = w.decode(body).status  # type: ignore[union-attr]
            key = "ok" if status == 0 else "busy" if status == ErrorCode.BUSY else "other"
            counts[key] += 1
            again += 1
        out += requests(again)
        counts["sent"] += again
    say("RESULT", counts)
    wait_line("QUIT")
    peer.close()


ROLES: dict[str, Any] = {
    "dev-sim": dev_sim,
    "sig-gateway": sig_gateway,
    "sig-listen": sig_listen,
    "sig-send": sig_send,
    "sig-respond": sig_respond,
    "sig-request": sig_request,
    "sig-sync-listen": sig_sync_listen,
    "sig-sync-send": sig_sync_send,
    "sig-sync-request": sig_sync_request,
    "relay-gateway": relay_gateway,
    "nats-listen": nats_listen,
    "nats-send": nats_send,
    "nats-respond": nats_respond,
    "nats-request": nats_request,
    "mqtt-listen": mqtt_listen,
    "mqtt-send": mqtt_send,
    "mqtt-respond": mqtt_respond,
    "mqtt-request": mqtt_request,
    "soak-flood": soak_flood,
    "soak-busy": soak_busy,
}


def main() -> None:
    role, *args = sys.argv[1:]
    func = ROLES[role]
    profile = os.environ.get("BENCH_PROFILE")  # a path prefix: cProfile this process
    profiler = None
    if profile and role.startswith(("sig-", "relay-")):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        chosen = os.environ.get("SIG_UVLOOP", "").split(",")
        if role in chosen or ("all" in chosen and role.startswith(("sig-", "relay-"))):
            import uvloop  # the sync ClientRouter's new_event_loop() follows the policy too

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        if asyncio.iscoroutinefunction(func):
            asyncio.run(func(*args))
        else:
            func(*args)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{role}.{os.getpid()}")


if __name__ == "__main__":
    main()
