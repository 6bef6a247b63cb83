"""The signing codec (sig.protocol.signing) against tests/vectors.json and its own rules."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sig.errors import ErrorCode, SignatureError
from sig.protocol import messages as w
from sig.protocol import signing as s
from sig.protocol.frame import encode_frame

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())["signing"]
KEY = bytes.fromhex(VECTORS["key"])
ND = bytes.fromhex(VECTORS["device_nonce"])
NG = bytes.fromhex(VECTORS["gateway_nonce"])


def nonces(*values: bytes) -> Callable[[int], bytes]:
    """A fixed random source: the given nonces, in order."""
    it: Iterator[bytes] = iter(values)
    return lambda n: next(it)


def frames(direction: int | None = None) -> list[dict[str, Any]]:
    return [f for f in VECTORS["frames"] if direction is None or f["direction"] == direction]


@pytest.mark.parametrize("case", VECTORS["blake2s"], ids=lambda c: f"{len(c['input']) // 2}B")
def test_blake2s_vectors(case: dict[str, Any]) -> None:
    digest = hashlib.blake2s(
        bytes.fromhex(case["input"]), key=bytes.fromhex(case["key"]), digest_size=case["outlen"]
    )
    assert digest.hexdigest() == case["digest"]


def test_rfc7693_abc() -> None:
    abc = VECTORS["blake2s"][0]
    assert abc["digest"].startswith("508c5e8c327c14e2e1a72ba34eeb452f")  # RFC 7693 appendix B


@pytest.mark.parametrize("case", frames(), ids=lambda c: c["name"])
def test_sign_matches_vectors(case: dict[str, Any]) -> None:
    plain = bytes.fromhex(case["plain"])
    ng = bytes(8) if case["name"] == "hello" else NG
    body = s.sign(KEY, case["direction"], ND, ng, case["counter"], plain)
    assert body.hex() == case["body"]
    assert encode_frame(body).hex() == case["frame"]
    counter, _, unsigned, tag = s.split(body)
    assert (counter, unsigned.hex(), tag.hex()) == (case["counter"], case["plain"], case["tag"])


def test_tag_input_example() -> None:
    ex = VECTORS["tag_input_example"]
    mac_input = bytes.fromhex(ex["mac_input"])
    assert hashlib.blake2s(mac_input, key=KEY, digest_size=8).hexdigest() == ex["tag"]


def test_a_session_in_order_both_ends() -> None:
    """Device and gateway signers reproduce and accept every vector of one session."""
    device = s.Signer(KEY, "device", nonces(ND))
    gateway = s.Signer(KEY, "gateway", nonces(NG))
    for case in frames():
        if case["name"] == "ping_big_counter":
            continue  # a counter far ahead: checked below
        plain, body = bytes.fromhex(case["plain"]), bytes.fromhex(case["body"])
        sender, receiver = (
            (device, gateway) if case["direction"] == s.TO_GATEWAY else (gateway, device)
        )
        assert sender.seal(plain) == body, case["name"]
        assert receiver.unseal(body) == plain, case["name"]
    assert device.established and gateway.established
    big = frames()[-1]
    assert gateway.unseal(bytes.fromhex(big["body"])) == bytes.fromhex(big["plain"])
    assert gateway.rx_counter == 0x01020304  # gaps are allowed: frames get lost on a UART


def _gateway_after_vectors() -> s.Signer:
    gateway = s.Signer(KEY, "gateway", nonces(NG))
    for case in frames():
        if case["direction"] == s.TO_GATEWAY and case["name"] != "ping_big_counter":
            gateway.unseal(bytes.fromhex(case["body"]))
        elif case["name"] == "welcome":
            gateway.seal(bytes.fromhex(case["plain"]))
    return gateway


@pytest.mark.parametrize("case", VECTORS["bad"], ids=lambda c: c["name"])
def test_bad_frames_refused_with_their_reason(case: dict[str, Any]) -> None:
    if case["direction"] == s.TO_GATEWAY:
        receiver = _gateway_after_vectors()
    else:
        receiver = s.Signer(KEY, "device", nonces(ND))
        receiver.seal(bytes.fromhex(frames()[0]["plain"]))
        receiver.unseal(bytes.fromhex(frames()[1]["body"]))
    before = receiver.rx_counter
    with pytest.raises(SignatureError) as info:
        receiver.unseal(bytes.fromhex(case["body"]))
    assert info.value.reason == case["reason"]
    assert info.value.code == ErrorCode.NOT_AUTHORISED
    assert receiver.rx_counter == before  # a refused frame moves nothing


def test_replayed_hello_refused_new_hello_accepted() -> None:
    hello = bytes.fromhex(frames()[0]["body"])
    gateway = s.Signer(KEY, "gateway", nonces(NG, NG))
    gateway.unseal(hello)
    with pytest.raises(SignatureError, match="seen before") as info:
        gateway.unseal(hello)
    assert info.value.reason == "replayed"
    device = s.Signer(KEY, "device", nonces(b"\x01" * 8))
    fresh = device.seal(bytes.fromhex(frames()[0]["plain"]))
    assert gateway.unseal(fresh) == bytes.fromhex(frames()[0]["plain"])
    assert gateway.device_nonce == b"\x01" * 8 and not gateway.established


def test_device_reset_old_session_frames_fail() -> None:
    """After a new HELLO (device reset), frames of the old session never verify."""
    gateway = s.Signer(KEY, "gateway", nonces(NG, b"\x02" * 8))
    for case in frames(s.TO_GATEWAY)[:3]:
        if case["name"] == "register_sender":
            gateway.seal(bytes.fromhex(frames()[1]["plain"]))  # the WELCOME in between
        gateway.unseal(bytes.fromhex(case["body"]))
    device = s.Signer(KEY, "device", nonces(b"\x03" * 8))
    gateway.unseal(device.seal(bytes.fromhex(frames()[0]["plain"])))
    welcome = gateway.seal(bytes.fromhex(frames()[1]["plain"]))
    device.unseal(welcome)
    old_trigger = bytes.fromhex(frames()[3]["body"])
    with pytest.raises(SignatureError) as info:
        gateway.unseal(old_trigger)
    assert info.value.reason == "auth_failed"
    old_event = bytes.fromhex(frames()[4]["body"])
    with pytest.raises(SignatureError):
        device.unseal(old_event)  # and the old session's gateway frames fail at the device
    plain = bytes.fromhex(frames()[3]["plain"])
    assert gateway.unseal(device.seal(plain)) == plain  # the new session works


def test_stale_welcome_and_no_session() -> None:
    device = s.Signer(KEY, "device", nonces(b"\x04" * 8))
    with pytest.raises(SignatureError, match="without a HELLO"):
        device.unseal(bytes.fromhex(frames()[1]["body"]))
    device.seal(bytes.fromhex(frames()[0]["plain"]))  # a HELLO with another nonce
    with pytest.raises(SignatureError) as info:
        device.unseal(bytes.fromhex(frames()[1]["body"]))  # a WELCOME for another HELLO
    assert info.value.reason == "auth_failed"
    with pytest.raises(SignatureError, match="no signed session"):
        device.seal(w.encode(w.Ping(1)))  # nothing but HELLO before WELCOME


def test_counter_exhaustion_needs_a_new_session() -> None:
    device = s.Signer(KEY, "device", nonces(ND))
    gateway = s.Signer(KEY, "gateway", nonces(NG))
    gateway.unseal(device.seal(bytes.fromhex(frames()[0]["plain"])))
    device.unseal(gateway.seal(bytes.fromhex(frames()[1]["plain"])))
    device.tx_counter = s.MAX_COUNTER - 1
    gateway.unseal(device.seal(w.encode(w.Ping(1))))
    with pytest.raises(SignatureError, match="used up"):
        device.seal(w.encode(w.Ping(2)))
    assert not device.established


def test_overhead_and_trigger_size() -> None:
    trigger = next(f for f in frames() if f["name"] == "trigger_float32")
    plain_frame = encode_frame(bytes.fromhex(trigger["plain"]))
    assert len(plain_frame) == 11  # PROTOCOL.md section 6
    assert len(bytes.fromhex(trigger["frame"])) == 11 + s.OVERHEAD == 23
    hello = frames()[0]
    assert len(hello["body"]) // 2 == len(hello["plain"]) // 2 + s.HANDSHAKE_OVERHEAD


def test_parse_key_forms() -> None:
    assert s.parse_key(KEY.hex().encode() + b"\n") == KEY
    assert s.parse_key(KEY) == KEY
    assert s.parse_key(b"0" * 64) == bytes(32)
    for bad in (b"", b"abc", b"z" * 64, KEY + b"\x00"):
        with pytest.raises(ValueError, match="hex digits or 32 raw bytes"):
            s.parse_key(bad)


def test_signer_arguments_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        s.Signer(b"short", "device")
    with pytest.raises(ValueError, match="role"):
        s.Signer(KEY, "router")
    with pytest.raises(ValueError, match="signed already"):
        s.sign(KEY, 0, ND, NG, 1, bytes.fromhex(frames()[3]["body"]))
