"""Child processes of the benchmarks (one role per process): ``_procs.py ROLE ARGS...``.

Line protocol with the driving script: the child prints ``READY [info]`` once it
is connected and registered, waits for ``GO`` on stdin where it has work to
start, prints ``RESULT {json}`` and exits; servers run until ``QUIT``.
Times are ``time.monotonic()``, one clock for every process on Linux.

Roles: sig-gateway, sig-listen, sig-send, sig-respond, sig-request,
mqtt-listen, mqtt-send, mqtt-respond, mqtt-request.
"""

from __future__ import annotations

import asyncio
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
    from sig.server import ServerRouter

    options: dict[str, Any] = {}
    if high_water:
        options["high_water"] = int(high_water)
    async with ServerRouter("127.0.0.1", 0, **options) as gw:
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
    from sig.client import AsyncClientRouter

    counter = Recorder() if record else Counter()
    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        await client.add_listener(counter.hit, None, EVENT)
        say("READY")
        started = time.monotonic()
        while not counter.done(int(expected), started):
            await asyncio.sleep(0.02)
        say("RESULT", {**counter.result(), "client": client.stats})


async def sig_send(port: str, conns: str, count: str) -> None:
    from sig.client import AsyncClientRouter

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
    from sig.client import AsyncClientRouter

    async with AsyncClientRouter("127.0.0.1", int(port), keepalive=0) as client:
        await client.add_sender("svc", [], {"echo": lambda params: params})
        say("READY")
        await await_line("QUIT")


async def sig_request(port: str, count: str) -> None:
    from sig.client import AsyncClientRouter

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


# --- a minimal UART device (sig._frame + sig._wire only) -------------------------


def dev_sim(path: str, mode: str, count: str, interval_us: str = "0") -> None:
    """A device on a pty: HELLO, REGISTER_SENDER "dev" with "#e", then TRIGGERs.

    mode "rate": the triggers (data = sequence number) as fast as the pty takes
    them, 64 frames per write; mode "lat": one frame per write, ``interval_us``
    apart, with the time each write returned.
    """
    import os
    import select

    from sig import _wire as w
    from sig._data import pack
    from sig._frame import FrameDecoder, encode_frame

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
