"""Frame layer: CRC, COBS, and the streaming decoder under every chunking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from sig.errors import LocalProtocolError
from sig.protocol.frame import (
    CRC_C_EXTENSION,
    FrameDecoder,
    crc16,
    encode_frame,
    encoded_size_max,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())


def test_crc_is_genibus_check_value() -> None:
    # The catalogue check value of CRC-16/GENIBUS, independent of the vectors file.
    assert crc16(b"123456789") == 0xD64E
    # ... and the final xor of 0xFFFF is what tells it from CRC-16/CCITT-FALSE (0x29B1).
    assert crc16(b"123456789") ^ 0xFFFF == 0x29B1


def test_crc_continues_over_pieces() -> None:
    # The C library's sig_crc16_update has the same contract: it takes a finished CRC.
    assert crc16(b"") == 0
    assert crc16(b"6789", crc16(b"12345")) == crc16(b"123456789")


def test_crc_uses_the_c_extension() -> None:
    # crcmod silently falls back to pure Python when its extension did not build.
    assert CRC_C_EXTENSION


@pytest.mark.parametrize("case", VECTORS["crc16_genibus"], ids=lambda c: c["input"][:12])
def test_crc_vectors(case: dict[str, str]) -> None:
    assert crc16(bytes.fromhex(case["input"])) == int(case["crc"], 16)


@pytest.mark.parametrize("case", VECTORS["cobs"], ids=lambda c: c["decoded"][:12])
def test_cobs_vectors(case: dict[str, str]) -> None:
    decoded, encoded = bytes.fromhex(case["decoded"]), bytes.fromhex(case["encoded"])
    assert cobs.encode(decoded) == encoded
    assert cobs.decode(encoded) == decoded
    assert 0 not in encoded


def test_cobs_known_examples_from_the_paper() -> None:
    # Independent of vectors.json: examples from Cheshire & Baker / Wikipedia.
    assert cobs.encode(b"\x00") == b"\x01\x01"
    assert cobs.encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs.encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"


@pytest.mark.parametrize("msg", VECTORS["messages"], ids=lambda m: m["name"])
def test_frame_vectors_encode_and_decode(msg: dict[str, str]) -> None:
    body, frame = bytes.fromhex(msg["body"]), bytes.fromhex(msg["frame"])
    assert encode_frame(body) == frame
    assert len(frame) <= encoded_size_max(len(body))
    dec = FrameDecoder()
    assert dec.feed(frame) == [body]
    assert dec.stats.frames == 1 and dec.stats.errors == 0


@pytest.mark.parametrize("case", VECTORS["streams"], ids=lambda c: c["name"])
def test_stream_vectors(case: dict[str, object]) -> None:
    stream = bytes.fromhex(str(case["stream"]))
    expected = [bytes.fromhex(b) for b in case["bodies"]]  # type: ignore[attr-defined]
    for chunking in ("whole", "bytewise", "splits"):
        if chunking == "whole":
            pieces = [[stream]]
        elif chunking == "bytewise":
            pieces = [[stream[i : i + 1] for i in range(len(stream))]]
        else:
            pieces = [[stream[:i], stream[i:]] for i in range(len(stream) + 1)]
        for chunks in pieces:
            dec = FrameDecoder(int(case.get("max_body", 65535)))  # type: ignore[call-overload]
            out = [body for chunk in chunks for body in dec.feed(chunk)]
            assert out == expected, chunking
            stats = dec.stats.as_dict()
            for key, value in case["stats"].items():  # type: ignore[attr-defined]
                assert stats[key] == value, (chunking, key)
            assert stats["bytes_in"] == len(stream)


def test_decoder_handles_trailing_partial_frame() -> None:
    frame = encode_frame(b"\x03\x01")
    dec = FrameDecoder()
    assert dec.feed(frame + frame[:3]) == [b"\x03\x01"]
    assert dec.pending == 3
    assert dec.feed(frame[3:]) == [b"\x03\x01"]
    assert dec.pending == 0


def test_oversize_is_bounded_and_counted_once() -> None:
    dec = FrameDecoder(max_body=16)
    huge = encode_frame(b"\x21" + b"x" * 1000)
    for i in range(0, len(huge) - 1, 7):  # everything but the delimiter, in small chunks
        assert dec.feed(huge[i : min(i + 7, len(huge) - 1)]) == []
        assert dec.pending <= encoded_size_max(16)
    assert dec.feed(b"\x00" + encode_frame(b"\x03\x05")) == [b"\x03\x05"]
    assert dec.stats.oversize == 1
    assert dec.stats.frames == 1


def test_encode_frame_refuses_empty_and_huge_bodies() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"")
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 65536)


def test_max_body_frame_round_trips() -> None:
    body = bytes(range(256)) * 255 + b"abc"
    assert len(body) == 65283
    dec = FrameDecoder()
    assert dec.feed(encode_frame(body)) == [body]


bodies = st.binary(min_size=1, max_size=600)


@settings(max_examples=200, deadline=None)
@given(st.lists(bodies, max_size=8), st.data())
def test_any_chunking_yields_the_same_frames(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(b) for b in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    dec = FrameDecoder()
    out = [body for chunk in chunks for body in dec.feed(chunk)]
    assert out == frames
    assert dec.stats.errors == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), bodies)
def test_garbage_never_raises_and_resynchronises(garbage: bytes, body: bytes) -> None:
    dec = FrameDecoder(max_body=1024)
    dec.feed(garbage)  # must not raise, whatever it holds
    # After the garbage, a delimiter ends whatever partial frame it left.
    out = dec.feed(b"\x00" + encode_frame(body))
    assert out[-1:] == [body]
    s = dec.stats
    assert s.bytes_in == len(garbage) + 1 + len(encode_frame(body))
