"""The C device library (firmware_bridge/) against the same vectors as the Python codec.

(a) ``make -C firmware_bridge test`` runs the C tests (ASan + UBSan) inside this
suite; (b) the codec built as a shared library is driven through ctypes and
checked against every entry of tests/vectors.json.
"""

from __future__ import annotations

import ctypes
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from socat import SocatPairs

from sig.errors import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware_bridge"
VECTORS = json.loads((ROOT / "tests" / "vectors.json").read_text(encoding="utf-8"))


def _make(*targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(FW), *targets],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_make_test_runs_the_c_tests() -> None:
    """``make test``: gcc and clang, every configuration profile, the fuzzers'
    seed corpus, the AVR build and the AVR smoke test in simavr."""
    for tool in ("make", "cc", "clang", "avr-gcc", "simavr"):
        assert shutil.which(tool), f"the C tests need {tool}"
    proc = _make("test")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    runs = re.findall(r"^== test_sig: (\S+), profile (\S+) ==$", proc.stdout, re.M)
    summaries = re.findall(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    profiles = {"default", "host", "lean", "tight", "auth", "reliable", "reliable_auth"}
    assert {cc for cc, _ in runs} == {"cc", "clang"}, runs
    assert {p for _, p in runs} == profiles, runs
    assert len(summaries) == len(runs) == 2 * len(profiles), output[-4000:]
    assert all(int(ok) >= 30 and int(bad) == 0 for ok, bad in summaries), summaries
    smoke = re.findall(r"^== fuzz smoke: profile (\S+) ==$", proc.stdout, re.M)
    done = re.findall(r"^#\d+\s+DONE", proc.stdout, re.M)
    assert set(smoke) == profiles and len(done) == 2 * len(profiles)
    assert "ok   avr-smoke: all ok" in proc.stdout and "FAIL" not in proc.stdout


# --- ctypes mirror of sig_device.h -----------------------------------------

u8, u16, u32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32
P8 = ctypes.POINTER(ctypes.c_uint8)


class Bytes(ctypes.Structure):
    _fields_ = [("ptr", P8), ("len", ctypes.c_size_t)]

    def get(self) -> bytes:
        return ctypes.string_at(self.ptr, self.len) if self.len else b""


class EventDecl(ctypes.Structure):
    _fields_ = [("ref", u32), ("name", Bytes)]


class Hello(ctypes.Structure):
    _fields_ = [
        ("version", u32),
        ("name", Bytes),
        ("max_body", u32),
        ("keepalive_ms", u32),
        ("features", u32),
        ("credentials", Bytes),
    ]


class Welcome(ctypes.Structure):
    _fields_ = [
        ("version", u32),
        ("name", Bytes),
        ("max_body", u32),
        ("keepalive_ms", u32),
        ("features", u32),
    ]


class Token(ctypes.Structure):
    _fields_ = [("token", u32)]


class Error(ctypes.Structure):
    _fields_ = [("code", u32), ("ref", u32), ("message", Bytes), ("about", u32)]


class Ack(ctypes.Structure):
    _fields_ = [("seq", u32)]


class Register(ctypes.Structure):
    _fields_ = [
        ("sender_ref", u32),
        ("name", Bytes),
        ("flags", u8),
        ("n_events", u32),
        ("n_methods", u32),
        ("events", ctypes.POINTER(EventDecl)),
        ("methods", ctypes.POINTER(Bytes)),
        ("lists", Bytes),
        ("meta", Bytes),
    ]


class Ref(ctypes.Structure):
    _fields_ = [("ref", u32)]


class Listen(ctypes.Structure):
    _fields_ = [("listener_id", u32), ("sender", Bytes), ("event", Bytes), ("options", u32)]


class Trigger(ctypes.Structure):
    _fields_ = [("event_ref", u32), ("data", Bytes)]


class Event(ctypes.Structure):
    _fields_ = [("sender", Bytes), ("event", Bytes), ("data", Bytes)]


class Request(ctypes.Structure):
    _fields_ = [("request_id", u32), ("sender", Bytes), ("method", Bytes), ("data", Bytes)]


class Response(ctypes.Structure):
    _fields_ = [("request_id", u32), ("status", u32), ("message", Bytes), ("data", Bytes)]


class Retained(ctypes.Structure):
    _fields_ = [("sender", Bytes), ("event", Bytes), ("data", Bytes), ("flags", u8)]


class MsgUnion(ctypes.Union):
    _fields_ = [
        ("hello", Hello),
        ("welcome", Welcome),
        ("ping", Token),
        ("error", Error),
        ("ack", Ack),
        ("register_sender", Register),
        ("ref", Ref),
        ("listen", Listen),
        ("trigger", Trigger),
        ("event", Event),
        ("request", Request),
        ("response", Response),
        ("retained", Retained),
    ]


class Msg(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("u", MsgUnion)]


class RegIter(ctypes.Structure):
    _fields_ = [
        ("p", P8),
        ("end", P8),
        ("events_left", u32),
        ("methods_left", u32),
        ("in_methods", ctypes.c_bool),
    ]


class RxStats(ctypes.Structure):
    _fields_ = [(n, u32) for n in ("frames", "empty", "crc_errors", "framing_errors", "oversize")]


class Rx(ctypes.Structure):
    _fields_ = [
        ("buf", P8),
        ("limit", u32),
        ("enc", u32),
        ("cap", u16),
        ("len", u16),
        ("remaining", u8),
        ("flags", u8),
        ("stats", RxStats),
    ]


TYPES = {
    "HELLO": 0x01,
    "WELCOME": 0x02,
    "PING": 0x03,
    "PONG": 0x04,
    "INVITE": 0x05,
    "ERROR": 0x06,
    "ACK": 0x07,
    "REGISTER_SENDER": 0x10,
    "SENDER_REGISTERED": 0x11,
    "UNREGISTER_SENDER": 0x12,
    "LISTEN": 0x13,
    "LISTENING": 0x14,
    "UNLISTEN": 0x15,
    "TRIGGER": 0x20,
    "EVENT": 0x21,
    "REQUEST": 0x22,
    "RESPONSE": 0x23,
    "RETAINED": 0x24,
}  # PROTOCOL.md "Message types"


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    proc = _make("lib")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    so = ctypes.CDLL(str(FW / "build" / "libsig.so"))
    for name in ("sigt_sizeof_msg", "sigt_sizeof_rx", "sigt_sizeof_reg_iter"):
        getattr(so, name).restype = ctypes.c_size_t
    assert so.sigt_sizeof_msg() == ctypes.sizeof(Msg)
    assert so.sigt_sizeof_rx() == ctypes.sizeof(Rx)
    assert so.sigt_sizeof_reg_iter() == ctypes.sizeof(RegIter)
    so.sig_crc16.restype = u16
    so.sig_crc16.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    so.sig_err_wire_code.restype = u32
    so.sig_rx_feed.restype = ctypes.c_bool
    so.sig_rx_feed.argtypes = [ctypes.POINTER(Rx), u8]
    so.sig_rx_body.restype = Bytes
    so.sig_reg_next_event.restype = ctypes.c_bool
    so.sig_reg_next_method.restype = ctypes.c_bool
    return so


class Keep:
    """Holds the buffers a Msg points into."""

    def __init__(self) -> None:
        self.refs: list[Any] = []

    def b(self, raw: bytes | str | None) -> Bytes:
        if raw is None:
            return Bytes(None, 0)
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        buf = (ctypes.c_uint8 * max(len(raw), 1)).from_buffer_copy(raw or b"\0")
        self.refs.append(buf)
        return Bytes(ctypes.cast(buf, P8), len(raw))


def msg_from_fields(kind: str, f: dict[str, Any], keep: Keep) -> Msg:
    m = Msg()
    m.type = TYPES[kind]
    u = m.u
    if kind == "HELLO":
        u.hello = Hello(
            f["version"],
            keep.b(f["name"]),
            f["max_body"],
            f["keepalive_ms"],
            f["features"],
            keep.b(bytes.fromhex(f["credentials"])),
        )
    elif kind == "WELCOME":
        u.welcome = Welcome(
            f["version"], keep.b(f["name"]), f["max_body"], f["keepalive_ms"], f["features"]
        )
    elif kind in ("PING", "PONG"):
        u.ping = Token(f["token"])
    elif kind == "ERROR":
        u.error = Error(f["code"], f["ref"], keep.b(f["message"]), f["about"])
    elif kind == "ACK":
        u.ack = Ack(f["seq"])
    elif kind == "REGISTER_SENDER":
        events = (EventDecl * max(len(f["events"]), 1))(
            *[EventDecl(r, keep.b(n)) for r, n in f["events"]]
        )
        methods = (Bytes * max(len(f["methods"]), 1))(*[keep.b(n) for n in f["methods"]])
        keep.refs += [events, methods]
        u.register_sender = Register(
            f["sender_ref"],
            keep.b(f["name"]),
            1 if f["default_handler"] else 0,
            len(f["events"]),
            len(f["methods"]),
            ctypes.cast(events, ctypes.POINTER(EventDecl)),
            ctypes.cast(methods, ctypes.POINTER(Bytes)),
            Bytes(None, 0),
            keep.b(bytes.fromhex(f["meta"])),
        )
    elif kind in ("SENDER_REGISTERED", "UNREGISTER_SENDER"):
        u.ref = Ref(f["sender_ref"])
    elif kind in ("LISTENING", "UNLISTEN"):
        u.ref = Ref(f["listener_id"])
    elif kind == "LISTEN":
        u.listen = Listen(f["listener_id"], keep.b(f["sender"]), keep.b(f["event"]), f["options"])
    elif kind == "TRIGGER":
        u.trigger = Trigger(f["event_ref"], keep.b(bytes.fromhex(f["data"])))
    elif kind == "EVENT":
        u.event = Event(keep.b(f["sender"]), keep.b(f["event"]), keep.b(bytes.fromhex(f["data"])))
    elif kind == "REQUEST":
        u.request = Request(
            f["request_id"],
            keep.b(f["sender"]),
            keep.b(f["method"]),
            keep.b(bytes.fromhex(f["data"])),
        )
    elif kind == "RESPONSE":
        u.response = Response(
            f["request_id"], f["status"], keep.b(f["message"]), keep.b(bytes.fromhex(f["data"]))
        )
    elif kind == "RETAINED":
        u.retained = Retained(
            keep.b(f["sender"]),
            keep.b(f["event"]),
            keep.b(bytes.fromhex(f["data"])),
            1 if f["stale"] else 0,
        )
    return m


def fields_of(lib: ctypes.CDLL, kind: str, m: Msg) -> dict[str, Any]:
    """The decoded message as the vectors' ``fields`` dict."""
    u = m.u

    def s(b: Bytes) -> str:
        return b.get().decode("utf-8")

    def opt(b: Bytes) -> str | None:
        return s(b) if b.len else None

    if kind == "HELLO":
        h = u.hello
        return {
            "name": s(h.name),
            "max_body": h.max_body,
            "keepalive_ms": h.keepalive_ms,
            "version": h.version,
            "features": h.features,
            "credentials": h.credentials.get().hex(),
        }
    if kind == "WELCOME":
        w = u.welcome
        return {
            "name": s(w.name),
            "max_body": w.max_body,
            "keepalive_ms": w.keepalive_ms,
            "version": w.version,
            "features": w.features,
        }
    if kind in ("PING", "PONG"):
        return {"token": u.ping.token}
    if kind == "INVITE":
        return {}
    if kind == "ERROR":
        return {
            "code": u.error.code,
            "ref": u.error.ref,
            "message": s(u.error.message),
            "about": u.error.about,
        }
    if kind == "ACK":
        return {"seq": u.ack.seq}
    if kind == "REGISTER_SENDER":
        r = u.register_sender
        it = RegIter()
        lib.sig_reg_iter_init(ctypes.byref(it), ctypes.byref(m))
        events, methods = [], []
        ev, me = EventDecl(), Bytes()
        while lib.sig_reg_next_event(ctypes.byref(it), ctypes.byref(ev)):
            events.append([ev.ref, s(ev.name)])
        while lib.sig_reg_next_method(ctypes.byref(it), ctypes.byref(me)):
            methods.append(s(me))
        assert len(events) == r.n_events and len(methods) == r.n_methods
        return {
            "sender_ref": r.sender_ref,
            "name": s(r.name),
            "events": events,
            "methods": methods,
            "default_handler": bool(r.flags & 1),
            "meta": r.meta.get().hex(),
        }
    if kind in ("SENDER_REGISTERED", "UNREGISTER_SENDER"):
        return {"sender_ref": u.ref.ref}
    if kind in ("LISTENING", "UNLISTEN"):
        return {"listener_id": u.ref.ref}
    if kind == "LISTEN":
        return {
            "listener_id": u.listen.listener_id,
            "sender": opt(u.listen.sender),
            "event": opt(u.listen.event),
            "options": u.listen.options,
        }
    if kind == "TRIGGER":
        return {"event_ref": u.trigger.event_ref, "data": u.trigger.data.get().hex()}
    if kind == "EVENT":
        e = u.event
        return {"sender": s(e.sender), "event": s(e.event), "data": e.data.get().hex()}
    if kind == "REQUEST":
        q = u.request
        return {
            "request_id": q.request_id,
            "sender": s(q.sender),
            "method": s(q.method),
            "data": q.data.get().hex(),
        }
    if kind == "RETAINED":
        t = u.retained
        return {
            "sender": s(t.sender),
            "event": s(t.event),
            "data": t.data.get().hex(),
            "stale": bool(t.flags & 1),
        }
    assert kind == "RESPONSE"
    p = u.response
    return {
        "request_id": p.request_id,
        "status": p.status,
        "message": s(p.message),
        "data": p.data.get().hex(),
    }


def _buf(n: int) -> Any:
    return (ctypes.c_uint8 * n)()


def test_crc16(lib: ctypes.CDLL) -> None:
    for e in VECTORS["crc16_genibus"]:
        raw = bytes.fromhex(e["input"])
        assert lib.sig_crc16(raw, len(raw)) == int(e["crc"], 16)


def test_cobs(lib: ctypes.CDLL) -> None:
    for e in VECTORS["cobs"]:
        dec, enc = bytes.fromhex(e["decoded"]), bytes.fromhex(e["encoded"])
        out, n = _buf(len(enc) + 8), ctypes.c_size_t()
        assert lib.sig_cobs_encode(out, len(out), dec, len(dec), ctypes.byref(n)) == 0
        assert bytes(out[: n.value]) == enc
        assert lib.sig_cobs_decode(out, len(out), enc, len(enc), ctypes.byref(n)) == 0
        assert bytes(out[: n.value]) == dec


def test_varint(lib: ctypes.CDLL) -> None:
    for e in VECTORS["varint"]:
        out, n = _buf(8), ctypes.c_size_t()
        assert lib.sig_varint_encode(u32(e["value"]), out, 8, ctypes.byref(n)) == 0
        assert bytes(out[: n.value]).hex() == e["hex"]
        raw = bytes.fromhex(e["hex"])
        v = u32()
        assert lib.sig_varint_decode(raw, len(raw), ctypes.byref(v), ctypes.byref(n)) == 0
        assert (v.value, n.value) == (e["value"], len(raw))


@pytest.mark.parametrize("vec", VECTORS["messages"], ids=[v["name"] for v in VECTORS["messages"]])
def test_message_vector(lib: ctypes.CDLL, vec: dict[str, Any]) -> None:
    body, frame = bytes.fromhex(vec["body"]), bytes.fromhex(vec["frame"])
    # decode: fields as in the vectors
    m = Msg()
    body_buf = ctypes.create_string_buffer(body, len(body))
    assert lib.sig_msg_decode(body_buf, len(body), ctypes.byref(m)) == 0
    assert m.type == TYPES[vec["type"]]
    assert fields_of(lib, vec["type"], m) == vec["fields"]
    # encode: the fields give the body byte for byte
    keep = Keep()
    m2 = msg_from_fields(vec["type"], vec["fields"], keep)
    out, n = _buf(512), ctypes.c_size_t()
    assert lib.sig_msg_encode(ctypes.byref(m2), out, len(out), ctypes.byref(n)) == 0
    assert bytes(out[: n.value]) == body
    # frame
    assert lib.sig_frame_encode(out, len(out), body, len(body), ctypes.byref(n)) == 0
    assert bytes(out[: n.value]) == frame


@pytest.mark.parametrize(
    "vec", VECTORS["bad_bodies"], ids=[v["name"] for v in VECTORS["bad_bodies"]]
)
def test_bad_body(lib: ctypes.CDLL, vec: dict[str, Any]) -> None:
    body = bytes.fromhex(vec["body"])
    m = Msg()
    err = lib.sig_msg_decode(body or None, len(body), ctypes.byref(m))
    assert err < 0
    assert lib.sig_err_wire_code(err) == ErrorCode[vec["error"]]


@pytest.mark.parametrize("vec", VECTORS["streams"], ids=[v["name"] for v in VECTORS["streams"]])
def test_stream(lib: ctypes.CDLL, vec: dict[str, Any]) -> None:
    max_body = vec.get("max_body", 256)
    rx, buf = Rx(), _buf(max_body + 2)
    assert lib.sig_rx_init(ctypes.byref(rx), buf, len(buf), u16(max_body)) == 0
    bodies = []
    for byte in bytes.fromhex(vec["stream"]):
        if lib.sig_rx_feed(ctypes.byref(rx), byte):
            bodies.append(lib.sig_rx_body(ctypes.byref(rx)).get().hex())
    assert bodies == vec["bodies"]
    want = {k: 0 for k in ("frames", "empty", "crc_errors", "framing_errors", "oversize")}
    want.update(vec["stats"])
    assert {k: getattr(rx.stats, k) for k in want} == want


def test_device_init_refuses_another_configuration(lib: ctypes.CDLL) -> None:
    """An application built with other sig_config.h settings passes another
    fingerprint: SIG_ERR_CONFIG (-8), and its (smaller) object is not touched."""
    lib.sigt_fingerprint.restype = u32
    lib.sig_device_init_checked.argtypes = [ctypes.c_void_p, ctypes.c_void_p, u32]
    own = lib.sigt_fingerprint()
    small = (ctypes.c_uint8 * 16)(*([0xA5] * 16))
    for other in (own ^ 1, own + 4, 0):
        assert lib.sig_device_init_checked(ctypes.addressof(small), None, other) == -8
    assert bytes(small) == b"\xa5" * 16
    # same settings: on to the argument checks
    assert lib.sig_device_init_checked(None, None, own) == -1


# --- the example device against the Python codec, over a socat pty pair -----


def _raw_pty(path: str) -> int:
    import os
    import termios
    import tty

    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def test_posix_device_example_against_python_codec(tmp_path: Path) -> None:
    import os
    import select
    import time

    from sig.protocol import messages as w
    from sig.protocol.frame import FrameDecoder, encode_frame

    assert shutil.which("socat"), "the example test needs socat (installed by CI)"
    proc = _make("examples")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pairs = SocatPairs(tmp_path)
    pair = pairs.pair("uart")  # waits until socat has made both links
    gw_path, dev_path = pair.a, pair.b
    device = None
    try:
        gw = _raw_pty(str(gw_path))
        device = subprocess.Popen(
            [
                str(FW / "build" / "posix_device"),
                "--port",
                str(dev_path),
                "--interval-ms",
                "100",
                "--keepalive-ms",
                "1000",
            ],
            stdout=subprocess.PIPE,
        )
        assert device.stdout is not None
        out_fd = device.stdout.fileno()
        partial = [b""]
        out_eof = [False]
        gw_closed = False
        decoder = FrameDecoder(max_body=65535)
        inbox: list[w.Message] = []
        lines: list[str] = []

        def pump(deadline: float) -> None:
            fds = ([] if gw_closed else [gw]) + ([] if out_eof[0] else [out_fd])
            r, _, _ = select.select(fds, [], [], max(0.0, deadline - time.monotonic()))
            if gw in r and not gw_closed:
                inbox.extend(w.decode(b) for b in decoder.feed(os.read(gw, 4096)))
            if out_fd in r:
                chunk = os.read(out_fd, 4096)
                out_eof[0] = not chunk  # the device exited: stop selecting on its stdout
                *done, partial[0] = (partial[0] + chunk).split(b"\n")
                lines.extend(d.decode().strip() for d in done)

        def expect_msg(kind: type, timeout: float = 5.0) -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for i, m in enumerate(inbox):
                    if isinstance(m, kind):
                        del inbox[: i + 1]
                        return m
                pump(deadline)
            raise AssertionError(f"no {kind.__name__}; got {inbox} {lines}")

        def expect_line(prefix: str, timeout: float = 5.0) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for i, ln in enumerate(lines):
                    if ln.startswith(prefix):
                        del lines[: i + 1]
                        return ln
                pump(deadline)
            raise AssertionError(f"no line {prefix!r}; got {lines}")

        def send(m: w.Message) -> None:
            os.write(gw, encode_frame(w.encode(m)))

        for round_ in range(2):  # the second round starts with an INVITE
            hello = expect_msg(w.Hello)
            assert hello.name == "sensor1" and hello.version == 1 and hello.keepalive_ms == 1000
            send(w.Welcome(name="gateway", max_body=65535, keepalive_ms=1000))
            expect_line("welcome")
            reg = expect_msg(w.RegisterSender)
            assert reg.name == "sensor1" and reg.default_handler
            assert [e for _, e in reg.events] == ["temperature", "#alarm", "echo"]
            assert reg.methods == ("get_temp",)
            listen = expect_msg(w.Listen)
            assert (listen.sender, listen.event) == ("timer", "tick")
            send(w.SenderRegistered(reg.sender_ref))
            expect_line("registered sensor1")
            trig = expect_msg(w.Trigger)
            assert trig.event_ref == dict((n, r) for r, n in reg.events)["temperature"]
            assert trig.data[:1] in (b"\xf9", b"\xfa")
            send(w.Event("timer", "tick", bytes.fromhex("182a")))  # 42, as in the vectors
            assert expect_line("event timer tick") == "event timer tick 42"
            echo = expect_msg(w.Trigger)
            while echo.event_ref != dict((n, r) for r, n in reg.events)["echo"]:
                echo = expect_msg(w.Trigger)
            assert echo.data == bytes.fromhex("182a")
            send(w.Request(9, "sensor1", "get_temp", b""))
            expect_line("request get_temp")
            resp = expect_msg(w.Response)
            assert resp.request_id == 9 and resp.status == 0 and resp.data[:1] in (b"\xf9", b"\xfa")
            send(w.Request(10, "sensor1", "whatever", b""))
            resp = expect_msg(w.Response)
            assert (resp.request_id, resp.status, resp.data) == (10, 0, b"\x68whatever")
            send(w.Error(5, reg.sender_ref, "sender 'sensor1' exists"))
            assert expect_line("error 5") == "error 5 sender 'sensor1' exists"
            send(w.Ping(7))
            assert expect_msg(w.Pong).token == 7
            if round_ == 0:
                send(w.Invite())
                expect_line("invite")
        # the tty goes away: the device says so and exits with status 2
        pair.unplug()
        os.close(gw)
        gw_closed = True
        expect_line("tty_error", timeout=10)
        assert device.wait(timeout=10) == 2
    finally:
        if device is not None:
            if device.poll() is None:
                device.kill()
                device.wait()
            if device.stdout is not None:
                device.stdout.close()
        pairs.close()
