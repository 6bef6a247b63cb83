"""Message layer: every vector, every rejection, and round trips of any message."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sig.errors import EncodeError, ErrorCode, LocalProtocolError, RemoteProtocolError
from sig.protocol import messages as w
from sig.protocol.data import pack, unpack
from sig.protocol.frame import encode_frame

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())
CLASSES = {
    "HELLO": w.Hello,
    "WELCOME": w.Welcome,
    "PING": w.Ping,
    "PONG": w.Pong,
    "INVITE": w.Invite,
    "ERROR": w.Error,
    "ACK": w.Ack,
    "REGISTER_SENDER": w.RegisterSender,
    "SENDER_REGISTERED": w.SenderRegistered,
    "UNREGISTER_SENDER": w.UnregisterSender,
    "LISTEN": w.Listen,
    "LISTENING": w.Listening,
    "UNLISTEN": w.Unlisten,
    "TRIGGER": w.Trigger,
    "EVENT": w.Event,
    "REQUEST": w.Request,
    "RESPONSE": w.Response,
    "RETAINED": w.Retained,
}


def from_fields(kind: str, fields: dict[str, Any]) -> w.Message:
    cls = CLASSES[kind]
    args: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ("data", "credentials", "meta"):
            value = bytes.fromhex(value)
        elif key == "events":
            value = tuple((ref, name) for ref, name in value)
        elif key == "methods":
            value = tuple(value)
        args[key] = value
    return cls(**args)  # type: ignore[no-any-return]


def test_every_message_type_has_a_vector() -> None:
    assert {m["type"] for m in VECTORS["messages"]} == {t.name for t in w.MessageType}


@pytest.mark.parametrize("case", VECTORS["messages"], ids=lambda m: m["name"])
def test_message_vectors(case: dict[str, Any]) -> None:
    msg = from_fields(case["type"], case["fields"])
    body = bytes.fromhex(case["body"])
    assert w.encode(msg) == body
    assert w.decode(body) == msg
    if "data_value" in case:
        assert unpack(msg.data) == case["data_value"]  # type: ignore[union-attr]


@pytest.mark.parametrize("case", VECTORS["bad_bodies"], ids=lambda m: m["name"])
def test_bad_bodies_are_rejected_with_their_code(case: dict[str, str]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        w.decode(bytes.fromhex(case["body"]))
    assert info.value.code == ErrorCode[case["error"]]


@pytest.mark.parametrize("case", VECTORS["bad_bodies"], ids=lambda m: m["name"])
def test_bad_bodies_are_answered_with_their_ref(case: dict[str, Any]) -> None:
    """The answer a receiver sends: ERROR(code, about, ref), or RESPONSE for a REQUEST."""
    body = bytes.fromhex(case["body"])
    with pytest.raises(RemoteProtocolError) as info:
        w.decode(body)
    answer = w.error_answer(body, info.value)
    code = ErrorCode[case["error"]]
    if case["answer"] == "none":
        assert answer is None
    elif case["answer"] == "RESPONSE":
        assert answer == w.Response(case["ref"], code, str(info.value))
    else:
        assert answer == w.Error(code, case["ref"], str(info.value), case["about"])


@pytest.mark.parametrize("case", VECTORS["varint"], ids=lambda c: str(c["value"]))
def test_varint_vectors(case: dict[str, Any]) -> None:
    out = bytearray()
    w.write_varint(out, case["value"])
    assert out.hex() == case["hex"]
    assert w.decode(bytes([w.MessageType.PING]) + bytes(out)) == w.Ping(case["value"])


def test_float32_trigger_is_at_most_11_bytes_on_the_wire() -> None:
    value = struct.unpack("<f", struct.pack("<f", 23.1))[0]
    data = pack(value)
    assert data[0] == 0xFA and len(data) == 5  # CBOR float32, not float64
    frame = encode_frame(w.encode(w.Trigger(event_ref=1, data=data)))
    assert len(frame) == 11
    # Even the worst case of a one-byte ref holds: zero bytes in the data cost nothing extra.
    assert len(encode_frame(w.encode(w.Trigger(127, b"\xfa\x00\x00\x00\x00")))) == 11


def test_encoder_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        w.encode(w.Event(sender="", event="e"))
    with pytest.raises(LocalProtocolError):
        w.encode(w.Event(sender="x" * 256, event="e"))
    with pytest.raises(LocalProtocolError):
        w.encode(w.Trigger(event_ref=-1))
    with pytest.raises(LocalProtocolError):
        w.encode(w.Trigger(event_ref=2**32))


def test_data_pack_rejects_unencodable_values_clearly() -> None:
    with pytest.raises(EncodeError, match="object"):
        pack(object())
    assert pack(None) == b"" and unpack(b"") is None
    assert pack(21.5) == bytes.fromhex("f94d60")  # shortest float that keeps the value


def test_protocol_and_core_import_no_io() -> None:
    """Every module of sig.protocol and sig.core (and the local router) imports no I/O."""
    code = (
        "import importlib, pkgutil, sys, sig.protocol, sig.core;"
        "mods = [m.name for p in (sig.protocol, sig.core)"
        " for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')];"
        "[importlib.import_module(m) for m in mods + ['sig.routers.local']];"
        "assert len(mods) >= 7, mods;"
        "bad = [m for m in ('asyncio', 'serial', 'socket', 'selectors') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- round trips of arbitrary messages -------------------------------------

names = st.text(min_size=1, max_size=40).filter(lambda s: 0 < len(s.encode()) <= 255)
opt_names = st.none() | names
ids = st.integers(0, 2**32 - 1)
refs = st.integers(1, 2**32 - 1)  # sender_ref, event_ref, listener_id: at least 1
bodies = st.integers(w.MIN_MAX_BODY, 2**32 - 1)
types = st.integers(0, w.TYPE_MASK)
data = st.binary(max_size=64)

messages = st.one_of(
    st.builds(w.Hello, names, bodies, ids, st.just(1), ids, st.binary(max_size=20)),
    st.builds(w.Welcome, names, bodies, ids, st.just(1), ids),
    st.builds(w.Ping, ids),
    st.builds(w.Pong, ids),
    st.just(w.Invite()),
    st.builds(w.Error, ids, ids, st.text(max_size=30), types),
    st.builds(w.Ack, ids),
    st.builds(
        w.RegisterSender,
        refs,
        names,
        st.lists(st.tuples(refs, names), max_size=5).map(tuple),
        st.lists(names, max_size=5).map(tuple),
        st.booleans(),
    ),
    st.builds(w.SenderRegistered, refs),
    st.builds(w.UnregisterSender, refs),
    st.builds(w.Listen, refs, opt_names, opt_names),
    st.builds(w.Listening, refs),
    st.builds(w.Unlisten, refs),
    st.builds(w.Trigger, refs, data),
    st.builds(w.Event, names, names, data),
    st.builds(w.Request, ids, names, names, data),
    st.builds(w.Response, ids, ids, st.text(max_size=30), data),
)


@settings(max_examples=500, deadline=None)
@given(messages)
def test_every_message_round_trips(msg: w.Message) -> None:
    assert w.decode(w.encode(msg)) == msg


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_random_bodies_decode_or_raise_remote_protocol_error(body: bytes) -> None:
    try:
        msg = w.decode(body)
    except RemoteProtocolError as exc:
        assert isinstance(exc.code, int)
    else:
        assert w.decode(w.encode(msg)) == msg


@settings(max_examples=2000, deadline=None)
@given(
    st.binary(max_size=12)
    | st.builds(
        lambda v: pack(v),
        st.none()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8)
        | st.binary(max_size=8)
        | st.booleans(),
    )
)
def test_unpack_fast_path_agrees_with_the_checked_decoder(raw: bytes) -> None:
    from sig.errors import DecodeError
    from sig.protocol.data import _unpack_checked

    try:
        expected = _unpack_checked(raw)
    except DecodeError:
        with pytest.raises(DecodeError):
            unpack(raw)
    else:
        assert repr(unpack(raw)) == repr(expected)  # repr: NaN equals itself


# --- the fast paths agree with the full codec -------------------------------

EVENT, TRIGGER = bytes([w.MessageType.EVENT]), bytes([w.MessageType.TRIGGER])


def test_split_event_returns_the_fields_of_a_common_event() -> None:
    body = w.encode(w.Event("sensor1", "temperature", pack(21.5)))
    assert w.split_event(body) == ("sensor1", "temperature", pack(21.5))
    assert w.split_event(w.encode(w.Event("s", "e"))) == ("s", "e", b"")
    longest = w.encode(w.Event("s" * 127, "é" * 63, b"\x01"))  # 127 and 126 bytes: one-byte lengths
    assert w.split_event(longest) == ("s" * 127, "é" * 63, b"\x01")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        EVENT,  # type byte only
        EVENT + b"\x01",  # sender length, no sender
        EVENT + b"\x01s",  # no event length
        EVENT + b"\x01s\x02e",  # event shorter than its length
        EVENT + b"\x00\x01e",  # empty sender
        EVENT + b"\x01s\x00",  # empty event
        w.encode(w.Event("s" * 128, "e")),  # a two-byte length: the full decoder's job
        w.encode(w.Event("s", "e" * 200)),
        EVENT + b"\x01\xff\x01e",  # sender is not UTF-8
        EVENT + b"\x01s\x02\xc3(",  # event is not UTF-8
        w.encode(w.Trigger(1, b"\x01s\x01e")),  # another type with the same layout after it
        bytes([w.MessageType.EVENT | w.FLAG_SEQ]) + b"\x01s\x01e",  # header flags
    ],
    ids=repr,
)
def test_split_event_leaves_everything_unusual_to_decode(body: bytes) -> None:
    assert w.split_event(body) is None


def test_split_event_none_cases_are_decoded_or_reported_by_decode() -> None:
    long_name = w.encode(w.Event("s" * 255, "e", b"\x01"))
    assert w.split_event(long_name) is None
    assert w.decode(long_name) == w.Event("s" * 255, "e", b"\x01")
    with pytest.raises(RemoteProtocolError) as info:
        w.decode(EVENT + b"\x01\xff\x01e")
    assert info.value.code == ErrorCode.INVALID_NAME


def test_split_trigger_returns_ref_and_data_of_a_common_trigger() -> None:
    assert w.split_trigger(w.encode(w.Trigger(1, pack(21.5)))) == (1, pack(21.5))
    assert w.split_trigger(w.encode(w.Trigger(1))) == (1, b"")
    assert w.split_trigger(w.encode(w.Trigger(0))) is None  # id 0: decode() says MALFORMED
    assert w.split_trigger(w.encode(w.Trigger(127, b"\x00"))) == (127, b"\x00")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        TRIGGER,  # no event_ref
        w.encode(w.Trigger(128)),  # two-byte varint: the full decoder's job
        w.encode(w.Trigger(2**32 - 1, b"\x01")),
        TRIGGER + b"\x80",  # varint cut short
        w.encode(w.Event("s", "e")),
        bytes([w.MessageType.TRIGGER | w.FLAG_AUTH]) + b"\x01",
    ],
    ids=repr,
)
def test_split_trigger_leaves_everything_unusual_to_decode(body: bytes) -> None:
    assert w.split_trigger(body) is None


@pytest.mark.parametrize("ref", [0, 1, 127, 128, 16383, 16384, 2**32 - 1])
def test_trigger_prefix_is_the_encoded_trigger_without_data(ref: int) -> None:
    assert w.trigger_prefix(ref) == w.encode(w.Trigger(ref))
    assert w.trigger_prefix(ref) + pack(21.5) == w.encode(w.Trigger(ref, pack(21.5)))


def test_trigger_prefix_and_event_head_refuse_what_encode_refuses() -> None:
    for ref in (-1, 2**32):
        with pytest.raises(LocalProtocolError, match="varint out of range"):
            w.trigger_prefix(ref)
    for sender, event in (("", "e"), ("s", ""), ("x" * 256, "e"), ("s", "é" * 128)):
        with pytest.raises(LocalProtocolError, match=r"name must be 1\.\.255 UTF-8 bytes"):
            w.event_head(sender, event)


def test_event_head_is_the_encoded_event_without_data() -> None:
    head = w.event_head("sensor1", "temperature")
    assert head == w.encode(w.Event("sensor1", "temperature"))
    assert head + b"\xf9\x4d\x60" == w.encode(w.Event("sensor1", "temperature", b"\xf9\x4d\x60"))
    assert w.event_head("s" * 255, "e") == w.encode(w.Event("s" * 255, "e"))


any_names = st.text(min_size=1, max_size=130).filter(lambda s: len(s.encode()) <= 255)
event_bodies = (
    st.builds(lambda b: EVENT + b, st.binary(max_size=40))
    | st.builds(lambda s, e, d: w.encode(w.Event(s, e, d)), any_names, any_names, data)
    | st.binary(max_size=40)
)
trigger_bodies = (
    st.builds(lambda b: TRIGGER + b, st.binary(max_size=12))
    | st.builds(lambda r, d: w.encode(w.Trigger(r, d)), ids, data)
    | st.binary(max_size=12)
)


@settings(max_examples=1000, deadline=None)
@given(event_bodies)
def test_split_event_agrees_with_decode_on_every_body_it_accepts(body: bytes) -> None:
    fields = w.split_event(body)
    if fields is not None:
        assert w.decode(body) == w.Event(*fields)


@settings(max_examples=1000, deadline=None)
@given(trigger_bodies)
def test_split_trigger_agrees_with_decode_on_every_body_it_accepts(body: bytes) -> None:
    fields = w.split_trigger(body)
    if fields is not None:
        assert w.decode(body) == w.Trigger(*fields)


@settings(max_examples=500, deadline=None)
@given(any_names, any_names, ids, data)
def test_heads_and_prefixes_agree_with_encode(
    sender: str, event: str, ref: int, raw: bytes
) -> None:
    assert w.event_head(sender, event) + raw == w.encode(w.Event(sender, event, raw))
    assert w.trigger_prefix(ref) + raw == w.encode(w.Trigger(ref, raw))
    short = len(sender.encode()) < 128 and len(event.encode()) < 128
    assert (w.split_event(w.event_head(sender, event) + raw) is not None) == short
