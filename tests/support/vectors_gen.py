"""Write tests/vectors.json, the wire test vectors shared by Python and C.

Run ``python tests/support/vectors_gen.py`` after a deliberate change of the wire
format, check the diff byte by byte against PROTOCOL.md, and commit both. The
tests never regenerate the file: they check both codecs against it.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

from cobs import cobs

from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.protocol.frame import crc16, encode_frame
from sig.protocol.reliable import add_seq
from sig.protocol.signing import TO_DEVICE, TO_GATEWAY, sign, tag

OUT = Path(__file__).parents[1] / "vectors.json"


def f32(x: float) -> float:
    """The nearest float32, as a device would measure it."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


MESSAGES: list[tuple[str, w.Message, Any]] = [
    ("hello", w.Hello(name="sensor1", max_body=256, keepalive_ms=2000), None),
    (
        "hello_credentials",
        w.Hello(
            name="pi",
            max_body=65535,
            keepalive_ms=0,
            credentials=pack({"user": "pi", "password": "s3cret"}),
        ),
        None,
    ),
    ("welcome", w.Welcome(name="gateway", max_body=65535, keepalive_ms=2000), None),
    ("ping", w.Ping(token=7), None),
    ("pong", w.Pong(token=7), None),
    ("ping_large_token", w.Ping(token=300), None),
    ("invite", w.Invite(), None),
    ("error", w.Error(code=5, ref=1, message="sender 'sensor1' exists", about=0x10), None),
    ("error_no_ref", w.Error(code=1, message="varint runs past the end of the body"), None),
    ("ack", w.Ack(seq=1), None),
    (
        "register_sender",
        w.RegisterSender(
            sender_ref=1,
            name="sensor1",
            events=((1, "temperature"), (2, "#alarm")),
            methods=("get_temp",),
            default_handler=True,
        ),
        None,
    ),
    (
        "register_sender_meta",
        w.RegisterSender(
            sender_ref=4,
            name="meter",
            events=((5, "power"),),
            meta=pack({"retained": ["power"]}),
        ),
        None,
    ),
    ("register_sender_minimal", w.RegisterSender(sender_ref=3, name="t", events=()), None),
    ("sender_registered", w.SenderRegistered(sender_ref=1), None),
    ("unregister_sender", w.UnregisterSender(sender_ref=1), None),
    ("listen_targeted", w.Listen(listener_id=1, sender="timer", event="tick"), None),
    ("listen_channel", w.Listen(listener_id=2, sender=None, event="#alarm"), None),
    ("listen_router_broadcast", w.Listen(listener_id=3, sender=None, event=None), None),
    ("listen_options_latest", w.Listen(listener_id=4, sender="meter", event=None, options=1), None),
    (
        "listen_options_block_no_local",
        w.Listen(listener_id=5, sender=None, event="#cmd", options=0x06),
        None,
    ),
    ("listening", w.Listening(listener_id=1), None),
    ("unlisten", w.Unlisten(listener_id=1), None),
    ("trigger_float32", w.Trigger(event_ref=1, data=pack(f32(23.1))), f32(23.1)),
    ("trigger_no_data", w.Trigger(event_ref=2), None),
    ("trigger_int", w.Trigger(event_ref=200, data=pack(1000)), 1000),
    (
        "trigger_map",
        w.Trigger(event_ref=1, data=pack({"t": 21.5, "ok": True})),
        {"t": 21.5, "ok": True},
    ),
    ("event", w.Event(sender="timer", event="tick", data=pack(42)), 42),
    (
        "event_connect",
        w.Event(sender="s", event="#connect", data=pack({"events": ["e"], "requests": []})),
        {"events": ["e"], "requests": []},
    ),
    ("retained", w.Retained(sender="meter", event="power", data=pack(230)), 230),
    ("retained_stale", w.Retained(sender="meter", event="power", data=pack(230), stale=True), 230),
    ("request", w.Request(request_id=9, sender="sensor1", method="get_temp"), None),
    (
        "request_params",
        w.Request(request_id=10, sender="sensor1", method="set", data=pack([1, "a"])),
        [1, "a"],
    ),
    ("response_ok", w.Response(request_id=9, data=pack(f32(23.1))), f32(23.1)),
    ("response_none", w.Response(request_id=9), None),
    ("response_error", w.Response(request_id=9, status=10, message="no method 'x'"), None),
]

#: Bodies a receiver must refuse: name, body, the error code, and the ``ref`` of
#: the answer (PROTOCOL.md section 2, "Errors"): an ERROR about the body's type,
#: a RESPONSE for a REQUEST whose request_id parses, nothing for an ERROR.
BAD_BODIES: list[tuple[str, bytes, str, int]] = [
    ("unknown_type", bytes([0x3F]), "UNKNOWN_TYPE", 0x3F),
    ("flag_seq_not_negotiated", bytes([0xA0, 0x01]), "UNSUPPORTED_FEATURE", 0),
    ("flag_auth_not_negotiated", bytes([0x60, 0x01]), "UNSUPPORTED_FEATURE", 0),
    (
        "hello_version_2",
        bytes([0x01, 0x02, 0x01, 0x61, 0x00, 0x00, 0x00, 0x00]),
        "UNSUPPORTED_VERSION",
        1,
    ),
    ("trigger_truncated_varint", bytes([0x20, 0x81]), "MALFORMED", 0),
    ("varint_too_long", bytes([0x03, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), "MALFORMED", 0),
    ("varint_above_u32", bytes([0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F]), "MALFORMED", 0),
    ("varint_padded", bytes([0x03, 0x80, 0x00]), "MALFORMED", 0),
    ("varint_padded_long", bytes([0x03, 0x81, 0x80, 0x00]), "MALFORMED", 0),
    ("trigger_padded_ref", bytes([0x20, 0x81, 0x00]), "MALFORMED", 0),
    ("event_empty_sender", bytes([0x21, 0x00, 0x01, 0x65]), "INVALID_NAME", 0),
    ("name_past_end", bytes([0x21, 0x05, 0x61]), "MALFORMED", 0),
    ("bad_utf8_name", bytes([0x21, 0x01, 0xFF, 0x01, 0x65]), "INVALID_NAME", 0),
    ("name_256_bytes", bytes([0x21, 0x80, 0x02]) + b"a" * 256 + b"\x01e", "INVALID_NAME", 0),
    ("bad_utf8_text", bytes([0x23, 0x07, 0x01, 0x01, 0xFF]), "MALFORMED", 7),
    ("bad_utf8_text_overlong", bytes([0x23, 0x07, 0x01, 0x02, 0xC0, 0xAF]), "MALFORMED", 7),
    ("trailing_bytes", bytes([0x03, 0x01, 0x00]), "MALFORMED", 0),
    ("listen_options_policy_3", bytes([0x13, 0x01, 0x00, 0x00, 0x03]), "MALFORMED", 1),
    ("listen_options_unknown_bit", bytes([0x13, 0x01, 0x00, 0x00, 0x08]), "MALFORMED", 1),
    ("retained_bad_flags", bytes([0x24, 0x01, 0x61, 0x01, 0x62, 0x02]), "MALFORMED", 0),
    ("register_bad_flags", bytes([0x10, 0x01, 0x01, 0x61, 0x02, 0x00, 0x00]), "MALFORMED", 1),
    ("register_bad_event_name", bytes([0x10, 0x03, 0x01, 0x61, 0x00, 0x01, 0x01, 0x00, 0x00]),
     "INVALID_NAME", 3),
    ("register_sender_ref_0", bytes([0x10, 0x00, 0x01, 0x61, 0x00, 0x00, 0x00]), "MALFORMED", 0),
    ("register_event_ref_0", bytes([0x10, 0x02, 0x01, 0x61, 0x00, 0x01, 0x00, 0x01, 0x65, 0x00]),
     "MALFORMED", 2),
    ("unregister_sender_ref_0", bytes([0x12, 0x00]), "MALFORMED", 0),
    ("listen_id_0", bytes([0x13, 0x00, 0x00, 0x00]), "MALFORMED", 0),
    ("unlisten_id_0", bytes([0x15, 0x00]), "MALFORMED", 0),
    ("trigger_event_ref_0", bytes([0x20, 0x00, 0xF5]), "MALFORMED", 0),
    ("sender_registered_0", bytes([0x11, 0x00]), "MALFORMED", 0),
    ("listening_0", bytes([0x14, 0x00]), "MALFORMED", 0),
    ("hello_max_body_0", bytes([0x01, 0x01, 0x01, 0x61, 0x00, 0x00, 0x00, 0x00]), "MALFORMED", 0),
    ("hello_max_body_7", bytes([0x01, 0x01, 0x01, 0x61, 0x07, 0x00, 0x00, 0x00]), "MALFORMED", 0),
    ("request_bad_method_name", bytes([0x22, 0x07, 0x01, 0x73, 0x00]), "INVALID_NAME", 7),
    ("request_truncated", bytes([0x22, 0x07, 0x01]), "MALFORMED", 7),
    ("request_id_truncated", bytes([0x22, 0x87]), "MALFORMED", 0),
    ("error_about_not_a_type", bytes([0x06, 0x01, 0x40, 0x00, 0x00]), "MALFORMED", 0),
    ("empty_body", b"", "MALFORMED", 0),
]  # fmt: skip


def bad_body_cases() -> list[dict[str, Any]]:
    """The bad_bodies vectors: with the answer (PROTOCOL.md section 2) and its ``about``."""
    out = []
    for name, body, error, ref in BAD_BODIES:
        kind = body[0] & w.TYPE_MASK if body else 0
        answer = "none" if kind == w.MessageType.ERROR else "ERROR"
        if kind == w.MessageType.REQUEST and name != "request_id_truncated":
            answer = "RESPONSE"  # its request_id parses: the requester can match the answer
        out.append(
            {"name": name, "body": body.hex(), "error": error, "answer": answer, "about": kind,
             "ref": ref}
        )  # fmt: skip
    return out


#: HELLO credentials maps (PROTOCOL.md section 3, "Open"): name, map, HELLO peer name.
CREDENTIALS: list[tuple[str, dict[str, Any]]] = [
    ("user_password", {"user": "alice", "password": "wonderland"}),
    ("unicode_password", {"user": "bob", "password": "pässwörd ✓"}),
    ("empty_password", {"user": "guest", "password": ""}),
    ("unknown_key_ignored", {"user": "alice", "password": "wonderland", "x-future": 1}),
]


def credential_cases() -> list[dict[str, Any]]:
    """The credentials vectors: the CBOR map, and a whole HELLO carrying it."""
    out = []
    for name, doc in CREDENTIALS:
        raw = pack(doc)
        body = w.encode(w.Hello(name="app", max_body=65535, keepalive_ms=10000, credentials=raw))
        out.append({"name": name, "map": doc, "cbor": raw.hex(), "hello_body": body.hex()})
    return out


def frame_cases() -> list[dict[str, Any]]:
    good = encode_frame(w.encode(w.Ping(token=1)))
    good_body = w.encode(w.Ping(token=1)).hex()
    bad_crc = bytearray(good)
    bad_crc[2] ^= 0x02  # flip one bit of a data byte (01 -> 03): still no zero byte
    return [
        {
            "name": "two_frames",
            "stream": (good + good).hex(),
            "bodies": [good_body] * 2,
            "stats": {"frames": 2},
        },
        {
            "name": "leading_and_double_delimiters",
            "stream": ("00" + good.hex() + "00"),
            "bodies": [good_body],
            "stats": {"frames": 1, "empty": 2},
        },
        {
            "name": "bad_crc_then_good",
            "stream": (bytes(bad_crc) + good).hex(),
            "bodies": [good_body],
            "stats": {"frames": 1, "crc_errors": 1},
        },
        {
            "name": "garbage_then_good",
            "stream": "ffffff00" + good.hex(),
            "bodies": [good_body],
            "stats": {"frames": 1, "framing_errors": 1},
        },
        {
            "name": "too_short",
            "stream": "020100" + good.hex(),
            "bodies": [good_body],
            "stats": {"frames": 1, "framing_errors": 1},
        },
        {
            "name": "oversize_then_good",
            "max_body": 8,
            "stream": encode_frame(bytes([0x21]) + b"\x01" * 20).hex() + good.hex(),
            "bodies": [good_body],
            "stats": {"frames": 1, "oversize": 1},
        },
    ]


#: The key, session nonces and plain bodies of the signing vectors (PROTOCOL.md section 5).
SIGN_KEY = bytes(range(32))
DEVICE_NONCE = bytes.fromhex("a0a1a2a3a4a5a6a7")
GATEWAY_NONCE = bytes.fromhex("b0b1b2b3b4b5b6b7")
SIGNED: list[tuple[str, int, int, w.Message]] = [
    ("hello", TO_GATEWAY, 0, w.Hello("sensor1", 128, 2000, features=w.Feature.AUTH)),
    ("welcome", TO_DEVICE, 1, w.Welcome("sig-gateway", 65535, 2000, features=w.Feature.AUTH)),
    ("register_sender", TO_GATEWAY, 1, w.RegisterSender(1, "sensor1", events=((1, "temp"),))),
    ("trigger_float32", TO_GATEWAY, 2, w.Trigger(1, pack(f32(23.1)))),
    ("event", TO_DEVICE, 2, w.Event("timer", "tick", pack(5))),
    ("ping_big_counter", TO_GATEWAY, 0x01020304, w.Ping(0)),
]


def signing_cases() -> dict[str, Any]:
    """Keyed BLAKE2s, then whole signed bodies and frames of one session, then bad ones."""
    import hashlib

    def signed(direction: int, counter: int, msg: w.Message, key: bytes = SIGN_KEY) -> bytes:
        ng = bytes(8) if isinstance(msg, w.Hello) else GATEWAY_NONCE
        return sign(key, direction, DEVICE_NONCE, ng, counter, w.encode(msg))

    frames = []
    for name, direction, counter, msg in SIGNED:
        body = signed(direction, counter, msg)
        frames.append(
            {
                "name": name,
                "direction": direction,
                "counter": counter,
                "plain": w.encode(msg).hex(),
                "body": body.hex(),
                "tag": body[-8:].hex(),
                "frame": encode_frame(body).hex(),
            }
        )
    trigger = signed(TO_GATEWAY, 2, SIGNED[3][3])
    event = signed(TO_DEVICE, 2, SIGNED[4][3])
    flipped = bytearray(trigger)
    flipped[-1] ^= 0x01
    blake = [
        (b"abc", b"", 32),  # RFC 7693 appendix B
        (b"", SIGN_KEY, 8),
        (bytes(range(64)), SIGN_KEY, 8),  # exactly one block
        (bytes(range(65)), SIGN_KEY, 8),  # one byte into the second block
        (bytes(range(200)), SIGN_KEY, 32),
    ]
    return {
        "about": "BLAKE2s-64 tags over direction || device_nonce || gateway_nonce || body",
        "key": SIGN_KEY.hex(),
        "device_nonce": DEVICE_NONCE.hex(),
        "gateway_nonce": GATEWAY_NONCE.hex(),
        "blake2s": [
            {
                "input": m.hex(),
                "key": k.hex(),
                "outlen": n,
                "digest": hashlib.blake2s(m, key=k, digest_size=n).hexdigest(),
            }
            for m, k, n in blake
        ],
        "tag_input_example": {
            "name": "trigger_float32",
            "mac_input": (bytes((TO_GATEWAY,)) + DEVICE_NONCE + GATEWAY_NONCE + trigger[:-8]).hex(),
            "tag": tag(SIGN_KEY, TO_GATEWAY, DEVICE_NONCE, GATEWAY_NONCE, trigger[:-8]).hex(),
        },
        "frames": frames,
        # Received after the frames above (the receiver's counter is at 2 each way).
        "bad": [
            {"name": "flipped_tag", "direction": TO_GATEWAY, "body": bytes(flipped).hex(),
             "reason": "auth_failed"},
            {"name": "wrong_key", "direction": TO_GATEWAY,
             "body": signed(TO_GATEWAY, 3, SIGNED[3][3], key=bytes(32)).hex(),
             "reason": "auth_failed"},
            {"name": "replayed_trigger", "direction": TO_GATEWAY, "body": trigger.hex(),
             "reason": "replayed"},
            {"name": "reflected_event", "direction": TO_GATEWAY,
             "body": event.hex(), "reason": "auth_failed"},
            {"name": "unsigned_trigger", "direction": TO_GATEWAY,
             "body": w.encode(SIGNED[3][3]).hex(), "reason": "unsigned"},
            {"name": "too_short", "direction": TO_DEVICE, "body": "61000000030102",
             "reason": "auth_failed"},
        ],
    }  # fmt: skip


# --- reliable UART mode (PROTOCOL.md section 5, "Reliable UART mode") -------------

#: Sequenced bodies: name, seq, plain message.
SEQUENCED: list[tuple[str, int, w.Message]] = [
    ("register_sender", 1, w.RegisterSender(1, "sensor1", events=((1, "temp"),))),
    ("sender_registered", 1, w.SenderRegistered(1)),
    ("trigger_float32", 2, w.Trigger(1, pack(f32(23.1)))),
    ("request", 3, w.Request(9, "sensor1", "get_temp")),
    ("response_ok", 4, w.Response(9, data=pack(f32(23.1)))),
    ("error", 5, w.Error(8, 7, "")),
    ("listen_seq_300", 300, w.Listen(1, "timer", "tick")),
]

#: Bodies a receiver refuses: name, hex, reliable session?, error code name (ref is 0).
RELIABLE_BAD: list[tuple[str, str, bool, str]] = [
    ("seq_zero", "a00001", True, "MALFORMED"),
    ("seq_truncated", "a081", True, "MALFORMED"),
    ("seq_padded", "a0810001", True, "MALFORMED"),
    ("seq_above_u32", "a0ffffffff1f01", True, "MALFORMED"),
    ("seq_on_ack", "870101", True, "MALFORMED"),
    ("seq_on_ping", "830107", True, "MALFORMED"),
    ("seq_on_event", "a101010161016201", True, "MALFORMED"),
    ("seq_without_feature", "a00101", False, "UNSUPPORTED_FEATURE"),
    ("seq_request_without_feature", "a2010901610162", False, "UNSUPPORTED_FEATURE"),
    ("ack_empty", "07", True, "MALFORMED"),
]


def _frames(bodies: list[bytes]) -> dict[str, list[str]]:
    return {"out": [b.hex() for b in bodies], "out_frames": [encode_frame(b).hex() for b in bodies]}


def _ack(n: int) -> bytes:
    return w.encode(w.Ack(n))


class _Script:
    """Builds one scripted exchange step by step, tracking the state the spec implies."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.counters = dict.fromkeys(
            ("retransmits", "duplicates", "out_of_order", "bad_acks", "reliable_failures"), 0
        )
        self.state: dict[str, Any] = {
            "expected": 1, "next_seq": 1, "kept": [], "rto_ms": 200, "retries": 0,
            "deadline_ms": None,
        }  # fmt: skip

    def step(self, t: int, what: dict[str, Any], out: list[bytes], **changes: Any) -> None:
        for key, value in changes.items():
            if key in self.counters:
                self.counters[key] += value
            else:
                self.state[key] = value
        entry = {"t_ms": t, **what, **_frames(out)}
        entry["counters"] = dict(self.counters)
        entry["state"] = {**self.state, "kept": list(self.state["kept"])}
        self.steps.append(entry)


def _send(msg: w.Message, seq: int | None) -> dict[str, Any]:
    plain = w.encode(msg)
    return {"do": "send", "sequenced": seq is not None, "body": plain.hex()}


def _receive(body: bytes, accepted: bytes | None) -> dict[str, Any]:
    return {
        "do": "receive",
        "body": body.hex(),
        "frame": encode_frame(body).hex(),
        "accepted": accepted.hex() if accepted is not None else None,
    }


def reliable_exchange() -> list[dict[str, Any]]:
    """One device's session (window 2, RTO 200 ms): accept, duplicate, gap, retransmission."""
    sc = _Script()
    reg = w.RegisterSender(1, "sensor1", events=((1, "temp"), (2, "count")))
    reg1 = add_seq(w.encode(reg), 1)
    sc.step(0, _send(reg, 1), [reg1], next_seq=2, kept=[1], deadline_ms=200)
    sc.step(10, _receive(_ack(1), None), [], kept=[], deadline_ms=None)
    sr = w.encode(w.SenderRegistered(1))
    sc.step(20, _receive(add_seq(sr, 1), sr), [_ack(1)], expected=2)
    # The gateway lost our ACK(1) and sent it again: a duplicate.
    sc.step(30, _receive(add_seq(sr, 1), None), [_ack(1)], duplicates=1)
    req4 = w.encode(w.Request(4, "sensor1", "get_temp"))
    req5 = w.encode(w.Request(5, "sensor1", "get_temp"))
    # seq 2 (request 4) was lost on the line: seq 3 is a gap, dropped (go-back-N).
    sc.step(40, _receive(add_seq(req5, 3), None), [_ack(1)], out_of_order=1)
    ev = w.encode(w.Event("timer", "tick", pack(5)))
    sc.step(50, _receive(ev, ev), [])  # unsequenced: best effort, accepted, no ACK
    sc.step(60, _receive(add_seq(req4, 2), req4), [_ack(2)], expected=3)
    sc.step(70, _receive(add_seq(req5, 3), req5), [_ack(3)], expected=4)
    resp = w.Response(4, data=pack(f32(23.1)))
    resp2 = add_seq(w.encode(resp), 2)
    sc.step(80, _send(resp, 2), [resp2], next_seq=3, kept=[2], deadline_ms=280)
    trig = w.Trigger(1, pack(f32(23.1)))
    trig3 = add_seq(w.encode(trig), 3)
    sc.step(90, _send(trig, 3), [trig3], next_seq=4, kept=[2, 3])
    best = w.Trigger(2, pack(7))  # an event the device did not mark reliable
    sc.step(100, _send(best, None), [w.encode(best)])
    # No ACK came (lost): at the deadline both kept frames go again, the RTO doubles.
    sc.step(
        280, {"do": "poll"}, [resp2, trig3], retransmits=2, rto_ms=400, retries=1, deadline_ms=680
    )
    sc.step(300, _receive(_ack(2), None), [], kept=[3], rto_ms=200, retries=0, deadline_ms=500)
    sc.step(310, _receive(_ack(9), None), [], bad_acks=1)  # never sent: ignored, counted
    sc.step(320, _receive(_ack(3), None), [], kept=[], deadline_ms=None)
    return sc.steps


def reliable_give_up() -> list[dict[str, Any]]:
    """A frame never acknowledged: 16 retransmissions with backoff, then the session ends."""
    sc = _Script()
    msg = w.Listen(1, "timer", "tick")
    body = add_seq(w.encode(msg), 1)
    sc.step(0, _send(msg, 1), [body], next_seq=2, kept=[1], deadline_ms=200)
    t, rto = 200, 200
    for retry in range(1, 17):
        rto = min(2 * rto, 1600)
        sc.step(
            t, {"do": "poll"}, [body], retransmits=1, rto_ms=rto, retries=retry,
            deadline_ms=t + rto,
        )  # fmt: skip
        t += rto
    sc.step(t, {"do": "poll", "ends_session": True}, [], reliable_failures=1, deadline_ms=None)
    return sc.steps


def reliable_fast_retransmit() -> list[dict[str, Any]]:
    """An ACK that acknowledges nothing new resends the kept frames at once, once per
    oldest kept seq (the gateway must; the C library may)."""
    sc = _Script()
    a, b = w.Request(1, "sensor1", "a"), w.Request(2, "sensor1", "b")
    a1, b2 = add_seq(w.encode(a), 1), add_seq(w.encode(b), 2)
    sc.step(0, _send(a, 1), [a1], next_seq=2, kept=[1], deadline_ms=200)
    sc.step(1, _send(b, 2), [b2], next_seq=3, kept=[1, 2])
    sc.step(10, _receive(_ack(0), None), [a1, b2], retransmits=2)  # seq 1 lost, 2 came
    sc.step(11, _receive(_ack(0), None), [])  # seq 1 was fast-resent already: the timer's
    sc.step(20, _receive(_ack(1), None), [], kept=[2], deadline_ms=220)
    sc.step(30, _receive(_ack(1), None), [b2], retransmits=1)  # a new oldest: at once
    sc.step(40, _receive(_ack(2), None), [], kept=[], deadline_ms=None)
    return sc.steps


def reliable_cases() -> dict[str, Any]:
    """Sequenced bodies, ACKs, a signed sequenced body, bad bodies, scripted exchanges."""
    sequenced = []
    for name, seq, msg in SEQUENCED:
        plain = w.encode(msg)
        body = add_seq(plain, seq)
        sequenced.append(
            {"name": name, "type": w.MessageType(plain[0]).name, "seq": seq,
             "plain": plain.hex(), "body": body.hex(), "frame": encode_frame(body).hex()}
        )  # fmt: skip
    acks = [
        {"name": f"ack_{n}", "seq": n, "body": _ack(n).hex(), "frame": encode_frame(_ack(n)).hex()}
        for n in (0, 1, 300)
    ]
    hello = w.encode(w.Hello("sensor1", 128, 2000, features=w.Feature.RELIABLE))
    welcome = w.encode(w.Welcome("sig-gateway", 65535, 2000, features=w.Feature.RELIABLE))
    both = w.Feature.RELIABLE | w.Feature.AUTH
    signed = []
    for name, direction, counter, seq, msg in (
        ("trigger_float32", TO_GATEWAY, 2, 1, w.Trigger(1, pack(f32(23.1)))),
        ("request", TO_DEVICE, 3, 2, w.Request(9, "sensor1", "get_temp")),
    ):
        plain = w.encode(msg)
        seqd = add_seq(plain, seq)
        body = sign(SIGN_KEY, direction, DEVICE_NONCE, GATEWAY_NONCE, counter, seqd)
        signed.append(
            {"name": name, "direction": direction, "counter": counter, "seq": seq,
             "plain": plain.hex(), "sequenced": seqd.hex(), "body": body.hex(),
             "tag": body[-8:].hex(), "frame": encode_frame(body).hex()}
        )  # fmt: skip
    return {
        "about": (
            "Reliable UART mode: header|0x80, seq varint, fields; ACK 07 seq; signed: "
            "header|0xC0, counter, seq, fields, tag. Exchanges: one side's view, window 2, "
            "initial RTO 200 ms, RTO doubles up to 1600 ms, 16 retransmissions then the end"
        ),
        "window": 2,
        "rto_ms": 200,
        "max_rto_ms": 1600,
        "max_retries": 16,
        "handshake": {
            "hello_body": hello.hex(),
            "hello_frame": encode_frame(hello).hex(),
            "welcome_body": welcome.hex(),
            "welcome_frame": encode_frame(welcome).hex(),
        },
        "sequenced": sequenced,
        "acks": acks,
        "ack_without_feature": {"body": _ack(1).hex(), "action": "ignored, counted bad_acks"},
        "signed": {
            "features": int(both),
            "key": SIGN_KEY.hex(),
            "device_nonce": DEVICE_NONCE.hex(),
            "gateway_nonce": GATEWAY_NONCE.hex(),
            "frames": signed,
        },
        "bad": [
            {"name": n, "body": b, "reliable": r, "error": e, "ref": 0}
            for n, b, r, e in RELIABLE_BAD
        ],
        "exchanges": [
            {"name": "accept_duplicate_gap_retransmit", "steps": reliable_exchange()},
            {"name": "max_retries", "steps": reliable_give_up()},
            {
                "name": "fast_retransmit",
                "optional_for_device": True,
                "steps": reliable_fast_retransmit(),
            },
        ],
    }


def main() -> None:
    messages = []
    for name, msg, value in MESSAGES:
        body = w.encode(msg)
        fields: dict[str, Any] = {}
        for key in (f.name for f in dataclasses.fields(msg)):
            v = getattr(msg, key)
            if isinstance(v, bytes):
                v = v.hex()
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            fields[key] = v
        entry: dict[str, Any] = {
            "name": name,
            "type": w.MessageType(body[0]).name,
            "fields": fields,
            "body": body.hex(),
            "frame": encode_frame(body).hex(),
        }
        if value is not None:
            entry["data_value"] = value
        messages.append(entry)
    doc = {
        "about": "sig wire test vectors; see PROTOCOL.md. Hex strings; 'data' fields are raw CBOR.",
        "crc16_ccitt_false": [
            {"input": b"123456789".hex(), "crc": f"{crc16(b'123456789'):04x}"},
            {"input": "", "crc": f"{crc16(b''):04x}"},
            {"input": "0300", "crc": f"{crc16(bytes([3, 0])):04x}"},
        ],
        "cobs": [
            {"decoded": d.hex(), "encoded": cobs.encode(d).hex()}
            for d in (
                b"\x00",
                b"\x00\x00",
                b"\x11\x22\x00\x33",
                b"\x11\x22\x33\x44",
                b"\x11\x00\x00\x00",
                bytes(range(1, 255)),
                bytes(range(0, 256)),
            )
        ],
        "varint": [
            {"value": v, "hex": _varint(v).hex()} for v in (0, 1, 127, 128, 300, 16384, 0xFFFFFFFF)
        ],
        "messages": messages,
        "bad_bodies": bad_body_cases(),
        "streams": frame_cases(),
        "credentials": credential_cases(),
        "signing": signing_cases(),
        "reliable": reliable_cases(),
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({len(messages)} messages)")


def _varint(v: int) -> bytes:
    out = bytearray()
    w.write_varint(out, v)
    return bytes(out)


if __name__ == "__main__":
    main()
