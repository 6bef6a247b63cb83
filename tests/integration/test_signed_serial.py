"""Signed frames on the serial hop (PROTOCOL.md section 5), on socat ptys.

The gateway's port has a key file; devices are ``sig device-sim`` (in process
and as a process) or :class:`RawDevice`, a device written in the test with the
codec alone, so that it can replay and forge exactly the frames a test names.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import Gateway, Proc, until
from serial_rig import DEADLINE, SerialRig
from socat import NoisyRelay, SocatPairs

from sig.errors import SignatureError
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.protocol.frame import FrameDecoder, encode_frame
from sig.protocol.signing import Signer, is_signed
from sig.routers.client import AsyncClientRouter

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KEEPALIVE_MS = 1000


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "device.key"
    path.write_text(KEY.hex() + "\n")
    path.chmod(0o600)
    return path


def keyed(port: Path, key_file: Path) -> str:
    """The ``--serial`` spec of a port with a key file."""
    return f"{port},key_file={key_file}"


class RawDevice:
    """A signing device on one pty end whose every frame the test chooses."""

    def __init__(self, path: Path, key: bytes, nonce: bytes) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.signer = Signer(key, "device", lambda n: nonce)
        self.decoder = FrameDecoder(512)
        self.inbox: list[w.Message] = []
        self.refused: list[str] = []
        self.sent: list[bytes] = []  #: wire frames, in order
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        for body in self.decoder.feed(data):
            try:
                plain = self.signer.unseal(body) if is_signed(body) else body
            except SignatureError as exc:
                self.refused.append(exc.reason)
                continue
            self.inbox.append(w.decode(plain))

    def send(self, msg: w.Message) -> bytes:
        frame = encode_frame(self.signer.seal(w.encode(msg)))
        self.write(frame)
        self.sent.append(frame)
        return frame

    def write(self, frame: bytes) -> None:
        os.write(self.fd, frame)

    async def expect(self, kind: type[w.Message]) -> Any:
        found = await until(
            lambda: [m for m in self.inbox if isinstance(m, kind)], DEADLINE, kind.__name__
        )
        self.inbox.remove(found[0])
        return found[0]

    async def open(self, name: str = "sensor1") -> w.Welcome:
        self.send(w.Hello(name, 512, KEEPALIVE_MS, features=w.Feature.AUTH))
        welcome: w.Welcome = await self.expect(w.Welcome)
        return welcome

    async def register(self, sender: str = "sensor1") -> None:
        self.send(w.RegisterSender(1, sender, events=((1, "temperature"),)))
        await self.expect(w.SenderRegistered)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def listening_app(rig: SerialRig, got: list[Any]) -> AsyncClientRouter:
    app = await rig.client("app")
    await app.add_listener(lambda i, d: got.append(d), "sensor1", "temperature")
    return app


async def test_signed_device_sim_end_to_end(
    socat: SocatPairs, rig: SerialRig, key_file: Path
) -> None:
    pair = socat.pair("dev")
    await rig.gateway(keyed(pair.a, key_file))
    got: list[Any] = []
    app = await listening_app(rig, got)
    sim = await rig.device(pair.b, keepalive_ms=KEEPALIVE_MS, key=KEY)
    welcome = await sim.wait_for("WELCOME", DEADLINE)
    await sim.wait_for("REGISTERED", DEADLINE)
    assert sim.trigger("temperature", 23.5)
    await until(lambda: got == [23.5], what="the signed event")
    assert await app.request("sensor1", "get_temp", timeout=5) == 21.5
    row = rig.link(pair.a)
    assert row["signed"] is True and row["signed_session"] is True
    assert (row["auth_failed"], row["replayed"], row["unsigned"]) == (0, 0, 0)
    assert row["senders"] == ["sensor1"] and row["crc_errors"] == 0
    assert welcome["max_body"] == 65535
    assert sim.signing is not None
    counts = sim.signing.counts
    assert (counts["replayed"], counts["unsigned"]) == (0, 0)
    # The INVITE the port sent when it opened may reach the device after its first
    # HELLO: it sends another (a new nonce), and drops the WELCOME of the first.
    drops = sim.find("AUTH_DROP")
    assert counts["auth_failed"] == len(drops) <= 1
    assert all(d[1]["error"].startswith("WELCOME auth_failed") for d in drops)


async def test_wrong_key_refused_counted_gateway_unharmed(
    socat: SocatPairs, rig: SerialRig, key_file: Path
) -> None:
    bad, good = socat.pair("bad"), socat.pair("good")
    await rig.gateway(keyed(bad.a, key_file), keyed(good.a, key_file))
    got: list[Any] = []
    app = await listening_app(rig, got)
    intruder = await rig.device(bad.b, keepalive_ms=KEEPALIVE_MS, key=OTHER_KEY)
    refused = await intruder.wait_for("ERROR", DEADLINE, code="NOT_AUTHORISED")
    assert refused["message"] == "signature refused"
    await until(lambda: rig.link(bad.a)["auth_failed"] >= 2, what="two refused HELLOs")
    row = rig.link(bad.a)
    assert row["senders"] == [] and row["state"] == "await-hello"
    assert not intruder.find("WELCOME") and not intruder.find("REGISTERED")
    device = await rig.device(good.b, keepalive_ms=KEEPALIVE_MS, key=KEY)
    await device.wait_for("REGISTERED", DEADLINE)
    assert device.trigger("temperature", 1.5)
    await until(lambda: got == [1.5], what="the good device's event")
    assert "sensor1" in await app.list_senders()


async def test_unsigned_device_refused_on_a_keyed_port(
    socat: SocatPairs, rig: SerialRig, key_file: Path
) -> None:
    pair = socat.pair("dev")
    await rig.gateway(keyed(pair.a, key_file))
    plain = await rig.device(pair.b, keepalive_ms=KEEPALIVE_MS)
    refused = await plain.wait_for("ERROR", DEADLINE, code="NOT_AUTHORISED")
    assert "requires signed frames" in refused["message"]
    row = rig.link(pair.a)
    assert row["unsigned"] >= 1 and row["senders"] == [] and row["auth_failed"] == 0


async def test_replayed_frame_dropped_and_counted(
    socat: SocatPairs, rig: SerialRig, key_file: Path
) -> None:
    pair = socat.pair("dev")
    await rig.gateway(keyed(pair.a, key_file))
    got: list[Any] = []
    await listening_app(rig, got)
    dev = RawDevice(pair.b, KEY, b"\x11" * 8)
    try:
        await dev.open()
        await dev.register()
        first = dev.send(w.Trigger(1, pack(1)))
        await until(lambda: got == [1], what="the first event")
        dev.write(first)  # the same frame again: a replay
        await until(lambda: rig.link(pair.a)["replayed"] == 1, what="the replay to be counted")
        dev.send(w.Trigger(1, pack(2)))
        await until(lambda: got == [1, 2], what="the next event")
        row = rig.link(pair.a)
        assert got == [1, 2] and row["auth_failed"] == 0 and row["triggers"] == 2
    finally:
        dev.close()


async def test_tag_flipped_by_noisy_relay_dropped_good_frames_flow(
    socat: SocatPairs, rig: SerialRig, key_file: Path
) -> None:
    dev, gw = socat.pair("dev"), socat.pair("gw")
    await rig.gateway(keyed(gw.b, key_file))
    relay = NoisyRelay(dev.a, gw.a, fraction=0.01, seed=99, fix_crc=True)
    try:
        got: list[Any] = []
        await listening_app(rig, got)
        sim = await rig.device(dev.b, keepalive_ms=KEEPALIVE_MS, key=KEY)
        await sim.wait_for("REGISTERED", DEADLINE)
        relay.noisy = True
        n = 300
        for i in range(n):
            assert sim.trigger("temperature", i)
            if i % 50 == 49:
                await asyncio.sleep(0)
        await until(lambda: _triggers_seen(relay) == n, what="the relay to forward every trigger")
        await sim.stop()
        await until(
            lambda: rig.link(gw.b)["bytes_in"] == relay.bytes_to_right,
            what="the gateway to read every byte the relay wrote",
        )
        row = rig.link(gw.b)
        expected = [v for v in map(_trigger_value, relay.intact) if v is not None]
        await until(lambda: len(got) >= len(expected), what="the app to get every good event")
        print(
            f"signed noise: frames={relay.frames} corrupted={len(relay.corrupted)} "
            f"auth_failed={row['auth_failed']} unsigned={row['unsigned']} delivered={len(got)}"
        )
        assert len(relay.corrupted) > 20  # the noise did something
        assert row["crc_errors"] == 0  # every corrupted frame passed the CRC...
        assert row["auth_failed"] + row["unsigned"] == len(relay.corrupted)  # ...not the tag
        assert row["replayed"] == 0
        assert all(is_signed(_body(f)) for f in relay.intact)
        assert got == expected  # every good frame delivered, in order, nothing else
    finally:
        relay.close()


def _body(frame: bytes) -> bytes:
    from cobs import cobs

    return bytes(cobs.decode(frame)[:-2])


def _trigger_value(frame: bytes) -> Any:
    """The value of a signed TRIGGER of event_ref 1 (COBS bytes of a clean frame), or None."""
    body = _body(frame)
    if body[0] != w.MessageType.TRIGGER | 0x40 or body[5] != 1:
        return None
    return unpack(body[6:-8])


def _triggers_seen(relay: NoisyRelay) -> int:
    with relay.lock:
        frames = relay.intact + relay.corrupted
    return sum(_body(f)[0] == w.MessageType.TRIGGER | 0x40 for f in frames)


async def _replay_into_new_session(
    rig: SerialRig, port: Path, frames: list[bytes], dev: RawDevice
) -> dict[str, Any]:
    """Write old frames, then make sure the gateway read them all (a PING of the new device)."""
    for frame in frames:
        dev.write(frame)
    dev.send(w.Ping(77))
    pong: w.Pong = await dev.expect(w.Pong)
    assert pong.token == 77
    return rig.link(port)


async def test_device_reset_old_frames_never_accepted(
    socat: SocatPairs, rig: SerialRig, key_file: Path
) -> None:
    pair = socat.pair("dev")
    await rig.gateway(keyed(pair.a, key_file))
    got: list[Any] = []
    await listening_app(rig, got)
    old = RawDevice(pair.b, KEY, b"\x21" * 8)
    await old.open()
    await old.register()
    old.send(w.Trigger(1, pack("old")))
    await until(lambda: got == ["old"], what="the old session's event")
    recorded = list(old.sent)
    old.close()
    new = RawDevice(pair.b, KEY, b"\x22" * 8)  # the device reset: a new nonce
    try:
        await new.open()
        await new.register()
        row = await _replay_into_new_session(rig, pair.a, recorded[1:], new)
        assert row["auth_failed"] == len(recorded) - 1  # REGISTER and TRIGGER of the old session
        new.write(recorded[0])  # the old HELLO itself
        await until(lambda: rig.link(pair.a)["replayed"] == 1, what="the replayed HELLO")
        assert rig.link(pair.a)["senders"] == ["sensor1"]  # the new session is untouched
        new.send(w.Trigger(1, pack("new")))
        await until(lambda: got == ["old", "new"], what="the new session's event")
    finally:
        new.close()


async def test_gateway_restart_old_frames_never_accepted(socat: SocatPairs, key_file: Path) -> None:
    pair = socat.pair("dev")
    first = SerialRig()
    await first.gateway(keyed(pair.a, key_file))
    dev = RawDevice(pair.b, KEY, b"\x31" * 8)
    try:
        await dev.open()
        await dev.register()
        dev.send(w.Trigger(1, pack("before")))
        await until(lambda: first.link(pair.a)["triggers"] == 1, what="the first gateway's read")
        recorded = list(dev.sent)
        await first.close()
        second = SerialRig()  # a gateway restart: nothing of the first one is kept
        try:
            await second.gateway(keyed(pair.a, key_file))
            got: list[Any] = []
            await listening_app(second, got)
            await dev.expect(w.Invite)  # the new gateway invites the device
            for frame in recorded[1:]:
                dev.write(frame)
            await until(
                lambda: second.link(pair.a)["auth_failed"] == len(recorded) - 1,
                what="the old session's frames to be refused",
            )
            # A replayed HELLO opens a session (the new gateway never saw its nonce),
            # but nothing signed under the old session verifies in it.
            dev.write(recorded[0])
            await until(lambda: second.link(pair.a)["state"] == "open", what="the HELLO")
            dev.write(recorded[2])
            await until(lambda: second.link(pair.a)["auth_failed"] == len(recorded))
            assert got == [] and second.link(pair.a)["senders"] == []
            fresh = RawDevice(pair.b, KEY, b"\x32" * 8)
            dev.close()
            dev = fresh
            await dev.open()
            await dev.register()
            dev.send(w.Trigger(1, pack("after")))
            await until(lambda: got == ["after"], what="the event of a fresh session")
        finally:
            await second.close()
    finally:
        dev.close()


async def test_cli_gateway_and_device_sim_signed_across_restart(
    socat: SocatPairs, key_file: Path
) -> None:
    """`sig serve --serial PATH,key_file=F` and `sig device-sim --key-file F`, processes."""
    pair = socat.pair("dev")
    device = Proc(
        [sys.executable, "-m", "sig", "device-sim", "--port", str(pair.b), "--key-file",
         str(key_file), "--interval", "0.1", "--keepalive-ms", str(KEEPALIVE_MS)],
    )  # fmt: skip
    gateways: list[Gateway] = []

    async def start_gateway() -> Gateway:
        spec = keyed(pair.a, key_file)
        gw = await asyncio.to_thread(Gateway, 0, "--no-timer", "--serial", spec)
        gateways.append(gw)
        return gw

    async def one_event(gw: Gateway) -> tuple[Any, dict[str, Any]]:
        got: asyncio.Queue[Any] = asyncio.Queue()
        async with AsyncClientRouter("127.0.0.1", gw.port, name="app") as app:
            await app.add_listener(lambda i, d: got.put_nowait(d), "sensor1", "temperature")
            first = await asyncio.wait_for(got.get(), DEADLINE)
            links = await app.request("$gateway", "links", timeout=5)
        row = next(r for r in links if r["link"] == f"serial:{pair.a}")
        return first, row

    registered: Callable[[str], bool] = lambda s: s == 'sensor1 REGISTERED sender="sensor1"'  # noqa: E731
    try:
        gw1 = await start_gateway()
        await asyncio.to_thread(device.wait_line, registered)
        event, row = await one_event(gw1)
        assert event["value"] == 21.5 and row["signed"] is True and row["auth_failed"] == 0
        await asyncio.to_thread(gw1.stop)
        mark = len(device.lines)
        gw2 = await start_gateway()
        await asyncio.to_thread(device.wait_line, registered, start=mark)
        event, row = await one_event(gw2)
        assert event["value"] == 21.5 and row["signed_session"] is True
        assert row["senders"] == ["sensor1"] and row["replayed"] == 0
    finally:
        device.kill()
        for gw in gateways:
            gw.kill()


def test_key_file_spec_forms_and_errors(tmp_path: Path, key_file: Path) -> None:
    """`PATH[:BAUD],key_file=FILE`, the `[[serial]]` key, and each bad key file named."""
    from carriers.serial import SerialSettings
    from sig.routers.serial import SerialSpecError, parse_specs, read_key_file

    raw = tmp_path / "raw.key"
    raw.write_bytes(OTHER_KEY)
    raw.chmod(0o600)
    assert parse_specs(
        [f"/dev/ttyS0:9600,key_file={key_file}", {"port": "/dev/x", "key_file": str(raw)}]
    ) == [
        SerialSettings("/dev/ttyS0", 9600, key_file=str(key_file)),
        SerialSettings("/dev/x", key_file=str(raw)),
    ]
    assert (
        parse_specs([f"socket://127.0.0.1:7000,key_file={key_file}"])[0].port
        == "socket://127.0.0.1:7000"
    )
    assert read_key_file(SerialSettings("/dev/x", key_file=str(key_file))) == KEY
    assert read_key_file(SerialSettings("/dev/x", key_file=str(raw))) == OTHER_KEY
    short = tmp_path / "short.key"
    short.write_text("abcd")
    for spec, message in (
        ("/dev/x,key_file=", "names no file"),
        (f"/dev/x,key_file={tmp_path / 'missing.key'}", "missing.key: No such file"),
        (f"/dev/x,key_file={short}", "64 hex digits or 32 raw bytes"),
    ):
        with pytest.raises(SerialSpecError, match=message):
            parse_specs([spec])
    with pytest.raises(SerialSpecError, match="key_file must be a path string"):
        parse_specs([{"port": "/dev/x", "key_file": 7}])


def test_key_file_readable_by_others_is_used_with_a_warning(
    tmp_path: Path, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from carriers.serial import SerialSettings
    from sig.routers.serial import read_key_file

    key_file.chmod(0o644)
    assert read_key_file(SerialSettings("/dev/x", key_file=str(key_file))) == KEY
    assert "readable by others" in caplog.text
