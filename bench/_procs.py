"""Child processes of the benchmarks (one role per process): ``_procs.py ROLE ARGS...``.

Line protocol with the driving script: the child prints ``READY [info]`` once it
is connected and registered, waits for ``GO`` on stdin where it has work to
start, prints ``RESULT {json}`` and exits; servers run until ``QUIT``.
Times are ``time.monotonic()``, one clock for every process on Linux.

Roles: sig-gateway, sig-listen, sig-send, sig-respond, sig-request,
mqtt-listen, mqtt-send, mqtt-respond, mqtt-request, dev-sim, and the
misbehaving peers of bench/soak.py: soak-flood, soak-busy.
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


async def sig_gateway(high_water: str = "", serial_port: str = "") -> None:
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
            import serial_asyncio

            from carriers.stream import StreamLink

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


async def sig_listen(port: str, expected: str, record: str = "") -> None:
    from sig.routers.client import AsyncClientRouter

    counter = Recorder() if record else Counter()
    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        await client.add_listener(counter.hit, None, EVENT)
        say("READY")
        started = time.monotonic()
        while not counter.done(int(expected), started):
            await asyncio.sleep(0.02)
        say("RESULT", {**counter.result(), "client": client.stats})


async def sig_send(port: str, conns: str, count: str) -> None:
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
    n = int(count)
    t_start = time.monotonic()
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
    t_end = time.monotonic()
    for client in clients:
        await client.close()
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": sent * len(clients)})


async def sig_respond(port: str) -> None:
    from sig.routers.client import AsyncClientRouter

    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        await client.add_sender("svc", [], {"echo": lambda params: params})
        say("READY")
        await await_line("QUIT")


async def sig_request(port: str, count: str) -> None:
    from sig.routers.client import AsyncClientRouter

    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        for _ in range(200):  # warm-up
            await client.request("svc", "echo", PAYLOAD)
        say("READY")
        await await_line("GO")
        lat = []
        clock = time.perf_counter
        t0 = clock()
        for _ in range(int(count)):
            t = clock()
            await client.request("svc", "echo", PAYLOAD)
            lat.append(clock() - t)
        total = clock() - t0
    say("RESULT", {"lat": _lat_summary(lat), "total": total, "n": len(lat)})


def _lat_summary(lat: list[float]) -> dict[str, float]:
    lat.sort()
    return {
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }


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
    started = time.monotonic()
    while not counter.done(int(expected), started):
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    say("RESULT", counter.result())


def mqtt_send(port: str, conns: str, count: str) -> None:
    clients = [
        _paho(f"send-{port}-{i}-{time.monotonic_ns()}", int(port)) for i in range(int(conns))
    ]
    topics = [TOPIC.format(f"s{i}") for i in range(len(clients))]
    say("READY")
    wait_line("GO")
    n = int(count)
    t_start = time.monotonic()
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
    for client in clients:
        client.disconnect()
    say("RESULT", {"t_start": t_start, "t_end": t_end, "sent": sent * len(clients)})


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
    t0 = clock()
    for _ in range(int(count)):
        t = clock()
        one()
        lat.append(clock() - t)
    total = clock() - t0
    client.disconnect()
    say("RESULT", {"lat": _lat_summary(lat), "total": total, "n": len(lat)})


# --- a minimal UART device (the codec, sig.protocol, only) ---------------------


def dev_sim(path: str, mode: str, count: str, interval_us: str = "0") -> None:
    """A device on a pty: HELLO, REGISTER_SENDER "dev" with "#e", then TRIGGERs.

    mode "rate": the triggers (data = sequence number) as fast as the pty takes
    them, 64 frames per write; mode "lat": one frame per write, ``interval_us``
    apart, with the time each write returned.
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
    write_all(frame(w.RegisterSender(1, "dev", ((1, EVENT),))))
    expect(w.SenderRegistered)
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
    if profile and role.startswith("sig-"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        if asyncio.iscoroutinefunction(func):
            if os.environ.get("SIG_UVLOOP") and role in os.environ["SIG_UVLOOP"].split(","):
                import uvloop

                uvloop.install()
            asyncio.run(func(*args))
        else:
            func(*args)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}.{role}.{os.getpid()}")


if __name__ == "__main__":
    main()
