"""The sequence header (sig.protocol.reliable) against tests/vectors.json and its own rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sig.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from sig.protocol import messages as w
from sig.protocol import reliable as r
from sig.protocol.frame import FrameDecoder, encode_frame
from sig.protocol.signing import Signer

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())["reliable"]


@pytest.mark.parametrize("case", VECTORS["sequenced"], ids=lambda c: c["name"])
def test_sequenced_vectors(case: dict[str, Any]) -> None:
    plain, body = bytes.fromhex(case["plain"]), bytes.fromhex(case["body"])
    assert r.add_seq(plain, case["seq"]) == body
    assert r.strip_seq(body) == (case["seq"], plain)
    assert w.MessageType(plain[0]).name == case["type"]
    assert encode_frame(body).hex() == case["frame"]
    assert FrameDecoder().feed(bytes.fromhex(case["frame"])) == [body]


@pytest.mark.parametrize("case", VECTORS["acks"], ids=lambda c: c["name"])
def test_ack_vectors(case: dict[str, Any]) -> None:
    assert w.encode(w.Ack(case["seq"])).hex() == case["body"]
    assert w.decode(bytes.fromhex(case["body"])) == w.Ack(case["seq"])
    assert encode_frame(bytes.fromhex(case["body"])).hex() == case["frame"]


def test_handshake_vectors_carry_the_feature_bit() -> None:
    hs = VECTORS["handshake"]
    hello = w.decode(bytes.fromhex(hs["hello_body"]))
    welcome = w.decode(bytes.fromhex(hs["welcome_body"]))
    assert isinstance(hello, w.Hello) and hello.features == w.Feature.RELIABLE
    assert isinstance(welcome, w.Welcome) and welcome.features == w.Feature.RELIABLE


@pytest.mark.parametrize("case", VECTORS["bad"], ids=lambda c: c["name"])
def test_bad_vectors(case: dict[str, Any]) -> None:
    """In a reliable session strip_seq refuses them; without, decode does (SEQ not negotiated)."""
    body = bytes.fromhex(case["body"])
    with pytest.raises(RemoteProtocolError) as info:
        if case["reliable"]:
            seq, plain = r.strip_seq(body)
            w.decode(plain)  # ack_empty: no SEQ flag, the codec refuses it
        else:
            w.decode(body)
    assert info.value.code == ErrorCode[case["error"]]


def test_signed_sequenced_vectors() -> None:
    """Sequence header first, then the signature over it; verify, then strip."""
    sv = VECTORS["signed"]
    key, nd, ng = (bytes.fromhex(sv[k]) for k in ("key", "device_nonce", "gateway_nonce"))
    assert sv["features"] == w.Feature.RELIABLE | w.Feature.AUTH
    for case in sv["frames"]:
        plain, seqd = bytes.fromhex(case["plain"]), bytes.fromhex(case["sequenced"])
        assert r.add_seq(plain, case["seq"]) == seqd
        body = bytes.fromhex(case["body"])
        assert body[0] == plain[0] | 0xC0 and body[-8:].hex() == case["tag"]
        receiver = Signer(key, "gateway" if case["direction"] == 0 else "device")
        receiver.device_nonce, receiver.gateway_nonce = nd, ng
        receiver.rx_counter = case["counter"] - 1
        assert r.strip_seq(receiver.unseal(body)) == (case["seq"], plain)


def test_plain_body_passes_through() -> None:
    body = w.encode(w.Trigger(1))
    assert r.strip_seq(body) == (0, body)
    assert not r.is_sequenced(body) and r.is_sequenced(r.add_seq(body, 1))


@pytest.mark.parametrize("seq", [1, 127, 128, 300, 16384, r.MAX_SEQ])
def test_round_trip_and_length(seq: int) -> None:
    body = w.encode(w.Request(9, "s", "m"))
    seqd = r.add_seq(body, seq)
    assert len(seqd) == len(body) + r.seq_len(seq) <= len(body) + r.MAX_SEQ_LEN
    assert r.strip_seq(seqd) == (seq, body)


def test_add_seq_refuses_what_the_spec_never_sends() -> None:
    with pytest.raises(LocalProtocolError):
        r.add_seq(w.encode(w.Ping(1)), 1)  # never sequenced
    with pytest.raises(LocalProtocolError):
        r.add_seq(w.encode(w.Trigger(1)), 0)
    with pytest.raises(LocalProtocolError):
        r.add_seq(r.add_seq(w.encode(w.Trigger(1)), 1), 2)  # twice
    with pytest.raises(LocalProtocolError):
        r.add_seq(b"", 1)


def test_the_type_lists_cover_every_type_once() -> None:
    both = r.ALWAYS_SEQUENCED & r.NEVER_SEQUENCED
    rest = set(w.MessageType) - r.ALWAYS_SEQUENCED - r.NEVER_SEQUENCED
    assert both == set() and rest == {w.MessageType.TRIGGER}
