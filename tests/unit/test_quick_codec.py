"""The request path's quick codec (issue 13, latency) agrees with the full codec.

``decode`` takes REQUEST and RESPONSE bodies of the common shape without its
cursor, and ``write_varint`` writes one-byte values at once. Each must give
exactly what the cursor (``_READERS``) and the general writer give, and leave
everything unusual to them, so that errors are reported as before.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sig.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from sig.protocol import messages as w

REQUEST, RESPONSE = bytes([w.MessageType.REQUEST]), bytes([w.MessageType.RESPONSE])


def cursor_decode(body: bytes) -> w.Message:
    """``decode`` as it is without the quick paths: the cursor reader of the type."""
    reader = w._Reader(body, 1)
    msg = w._READERS[body[0]](reader)
    reader.end()
    return msg


def test_common_requests_and_responses_decode_quickly_to_the_same_messages() -> None:
    for msg in (
        w.Request(1, "svc", "echo", b"\x50" + bytes(16)),
        w.Request(2**21 - 1, "s" * 127, "é" * 63),
        w.Response(7, 0, "", b"\x01"),
        w.Response(2**21 - 1, 0x7F, "t" * 127, b""),
        w.Response(3, ErrorCode.NO_SUCH_METHOD, "sender 'svc' has no method 'x'"),
    ):
        body = w.encode(msg)
        quick = w._QUICK[body[0]](body)
        assert quick == msg == cursor_decode(body) == w.decode(body)


@pytest.mark.parametrize(
    "body",
    [
        REQUEST,  # no id
        REQUEST + b"\x80",  # id cut short
        REQUEST + b"\x80\x80\x80\x01\x01s\x01m",  # a 4-byte id: the cursor's job
        REQUEST + b"\x01",  # id, no names
        REQUEST + b"\x01\x00\x01m",  # empty sender: the cursor reports INVALID_NAME
        REQUEST + b"\x01\x01s\x00",  # empty method
        REQUEST + b"\x01\x01s\x02m",  # method shorter than its length
        REQUEST + b"\x01\x01\xff\x01m",  # sender not UTF-8
        w.encode(w.Request(1, "s" * 128, "m")),  # a two-byte name length
        RESPONSE + b"\x01",  # no status
        RESPONSE + b"\x01\x00",  # no text length
        RESPONSE + b"\x01\x00\x05ab",  # text shorter than its length
        RESPONSE + b"\x01\x80\x01\x00",  # a two-byte status
        RESPONSE + b"\x01\x00\x01\xff",  # text not UTF-8
        w.encode(w.Response(1, 0, "t" * 128)),  # a two-byte text length
        w.encode(w.Response(2**21, 0, "")),  # a 4-byte id
    ],
    ids=repr,
)
def test_unusual_bodies_are_left_to_the_cursor(body: bytes) -> None:
    assert w._QUICK[body[0]](body) is None
    try:
        expected: object = cursor_decode(body)
    except RemoteProtocolError as exc:
        with pytest.raises(RemoteProtocolError) as info:
            w.decode(body)
        assert (info.value.code, str(info.value)) == (exc.code, str(exc))
    else:
        assert w.decode(body) == expected


names = st.text(min_size=1, max_size=130).filter(lambda s: len(s.encode()) <= 255)
ids = st.integers(0, 2**32 - 1)
bodies = (
    st.builds(lambda b: REQUEST + b, st.binary(max_size=24))
    | st.builds(lambda b: RESPONSE + b, st.binary(max_size=24))
    | st.builds(
        lambda i, s, m, d: w.encode(w.Request(i, s, m, d)), ids, names, names, st.binary(max_size=8)
    )
    | st.builds(
        lambda i, c, t, d: w.encode(w.Response(i, c, t, d)),
        ids,
        ids,
        st.text(max_size=140),
        st.binary(max_size=8),
    )
)


@settings(max_examples=2000, deadline=None)
@given(bodies)
def test_decode_agrees_with_the_cursor_on_every_request_and_response(body: bytes) -> None:
    try:
        expected = cursor_decode(body)
    except RemoteProtocolError as exc:
        with pytest.raises(RemoteProtocolError) as info:
            w.decode(body)
        assert info.value.code == exc.code
    else:
        assert w.decode(body) == expected


@pytest.mark.parametrize("value", [0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, 2**32 - 1])
def test_write_varint_is_leb128_for_every_size(value: int) -> None:
    out = bytearray()
    w.write_varint(out, value)
    expected = bytearray()
    while True:  # LEB128 by its definition
        byte, value = value & 0x7F, value >> 7
        expected.append(byte | (0x80 if value else 0))
        if not value:
            break
    assert out == expected


@pytest.mark.parametrize("value", [-1, 2**32])
def test_write_varint_still_refuses_what_is_out_of_range(value: int) -> None:
    with pytest.raises(LocalProtocolError, match="varint out of range"):
        w.write_varint(bytearray(), value)


@pytest.mark.parametrize(
    "body",
    [
        bytes([0x22, 0x81, 0x00, 0x01, 0x73, 0x01, 0x6D]),  # REQUEST id 1 as 81 00
        bytes([0x22, 0x80, 0x80, 0x00, 0x01, 0x73, 0x01, 0x6D]),  # REQUEST id 0 as 80 80 00
        bytes([0x23, 0x85, 0x00, 0x00, 0x00]),  # RESPONSE id 5 as 85 00
    ],
)
def test_a_padded_request_id_is_refused_on_the_fast_path_too(body: bytes) -> None:
    """The shortcut must refuse what the cursor refuses (PROTOCOL.md section 2:
    shortest-form varints only), or a REQUEST could cross one hop that another drops."""
    with pytest.raises(RemoteProtocolError, match="shortest form"):
        w.decode(body)
