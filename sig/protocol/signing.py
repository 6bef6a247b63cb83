"""Signed frames on the serial hop (PROTOCOL.md section 5): sign and verify, no I/O.

A signed body is the plain body with the AUTH flag set in its header byte, a
4-byte counter after the header (and, in HELLO and WELCOME, an 8-byte nonce
after the counter), and an 8-byte tag at the end::

    header|0x40, counter (u32, big-endian), [nonce (8)], fields..., tag (8)

The tag is keyed BLAKE2s with an 8-byte digest (RFC 7693, ``outlen`` = 8) over
``direction || device_nonce || gateway_nonce || the signed body without the
tag``. The two nonces bind every frame to one session: the device picks its
nonce for each HELLO, the gateway its own for each WELCOME, so a frame of one
session never verifies in another (across device resets and gateway restarts
alike) and neither side has to store anything. The counter, strictly
increasing per direction within a session, stops replays inside one.

:class:`Signer` is one end of one link (``role`` "device" or "gateway"):
:meth:`Signer.seal` signs what that end sends, :meth:`Signer.unseal` checks and
strips what it receives, raising :class:`~sig.errors.SignatureError` whose
``reason`` is the counter to count it in. The caller does the I/O and keeps the
counts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable

from sig.errors import SignatureError
from sig.protocol.constants import FLAG_AUTH, TYPE_MASK

__all__ = [
    "COUNTER_LEN",
    "HANDSHAKE_OVERHEAD",
    "KEY_LEN",
    "NONCE_LEN",
    "OVERHEAD",
    "RECENT_HELLOS",
    "TAG_LEN",
    "TO_DEVICE",
    "TO_GATEWAY",
    "Signer",
    "is_signed",
    "parse_key",
    "sign",
    "tag",
    "verify",
]

#: Bytes of the keyed BLAKE2s digest that end a signed body (64 bits).
TAG_LEN = 8
#: Bytes of the per-direction frame counter after the header byte.
COUNTER_LEN = 4
#: Bytes of the session nonce HELLO (the device's) and WELCOME (the gateway's) carry.
NONCE_LEN = 8
#: Bytes of a key: BLAKE2s takes up to 32; sig uses exactly 32.
KEY_LEN = 32
#: What signing adds to a body: counter and tag (12 bytes; HELLO and WELCOME 20).
OVERHEAD = COUNTER_LEN + TAG_LEN
HANDSHAKE_OVERHEAD = OVERHEAD + NONCE_LEN
#: Direction byte of the MAC input: frames to the gateway, frames to the device.
TO_GATEWAY, TO_DEVICE = 0, 1
#: Largest counter; a side that would pass it starts a new session (HELLO / INVITE).
MAX_COUNTER = 0xFFFFFFFF
#: Device nonces a gateway remembers per link to refuse a replayed HELLO.
RECENT_HELLOS = 32

_HELLO, _WELCOME = 0x01, 0x02
_ZERO_NONCE = bytes(NONCE_LEN)


def parse_key(data: bytes) -> bytes:
    """A key file's content: 64 hex digits (whitespace around allowed) or 32 raw bytes."""
    text = data.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == KEY_LEN:
        return bytes(data)
    raise ValueError(
        f"a key is {2 * KEY_LEN} hex digits or {KEY_LEN} raw bytes, not {len(data)} bytes"
    )


def is_signed(body: bytes) -> bool:
    """True when the header byte has the AUTH flag."""
    return bool(body) and bool(body[0] & FLAG_AUTH)


def _has_nonce(header: int) -> bool:
    return header & TYPE_MASK in (_HELLO, _WELCOME)


def tag(
    key: bytes, direction: int, device_nonce: bytes, gateway_nonce: bytes, signed: bytes
) -> bytes:
    """The 8-byte tag of ``signed`` (a signed body without its tag)."""
    mac = hashlib.blake2s(key=key, digest_size=TAG_LEN)
    mac.update(bytes((direction,)))
    mac.update(device_nonce)
    mac.update(gateway_nonce)
    mac.update(signed)
    return mac.digest()


def sign(
    key: bytes,
    direction: int,
    device_nonce: bytes,
    gateway_nonce: bytes,
    counter: int,
    body: bytes,
) -> bytes:
    """The signed body of the plain ``body`` (HELLO carries ``device_nonce``, WELCOME
    ``gateway_nonce``; for HELLO ``gateway_nonce`` is 8 zero bytes)."""
    header = body[0]
    if header & FLAG_AUTH:
        raise ValueError("body is signed already")
    head = bytes((header | FLAG_AUTH,)) + counter.to_bytes(COUNTER_LEN, "big")
    if _has_nonce(header):
        head += device_nonce if header & TYPE_MASK == _HELLO else gateway_nonce
    signed = head + body[1:]
    return signed + tag(key, direction, device_nonce, gateway_nonce, signed)


def split(signed: bytes) -> tuple[int, bytes, bytes, bytes]:
    """``(counter, nonce, plain body, tag)`` of a signed body; raises SignatureError."""
    header = signed[0]
    if not header & FLAG_AUTH:
        raise SignatureError("frame is not signed", "unsigned")
    nonce_len = NONCE_LEN if _has_nonce(header) else 0
    start = 1 + COUNTER_LEN + nonce_len
    if len(signed) < start + TAG_LEN:
        raise SignatureError("signed frame too short for its counter and tag", "auth_failed")
    counter = int.from_bytes(signed[1 : 1 + COUNTER_LEN], "big")
    nonce = signed[1 + COUNTER_LEN : start]
    plain = bytes((header & ~FLAG_AUTH,)) + signed[start:-TAG_LEN]
    return counter, nonce, plain, signed[-TAG_LEN:]


def verify(
    key: bytes, direction: int, device_nonce: bytes, gateway_nonce: bytes, signed: bytes
) -> None:
    """Raise SignatureError("auth_failed") unless ``signed``'s tag is right."""
    expected = tag(key, direction, device_nonce, gateway_nonce, signed[:-TAG_LEN])
    if not hmac.compare_digest(expected, signed[-TAG_LEN:]):
        raise SignatureError("bad tag (wrong key, or forged)", "auth_failed")


class Signer:
    """The signing state of one end of one link: nonces and both counters.

    ``role`` is "device" or "gateway". ``random(n)`` gives the nonces
    (:func:`os.urandom` unless a test fixes them).
    """

    def __init__(self, key: bytes, role: str, random: Callable[[int], bytes] = os.urandom) -> None:
        if len(key) != KEY_LEN:
            raise ValueError(f"a key is {KEY_LEN} bytes, not {len(key)}")
        if role not in ("device", "gateway"):
            raise ValueError(f"role is 'device' or 'gateway', not {role!r}")
        self.key = key
        self.role = role
        self.random = random
        self.tx_dir, self.rx_dir = (
            (TO_GATEWAY, TO_DEVICE) if role == "device" else (TO_DEVICE, TO_GATEWAY)
        )
        #: The current session's nonces (None: none yet).
        self.device_nonce: bytes | None = None
        self.gateway_nonce: bytes | None = None
        self.tx_counter = 0
        self.rx_counter = 0
        #: Device nonces of recent HELLOs (gateway): a replayed HELLO is refused.
        self.recent: deque[bytes] = deque(maxlen=RECENT_HELLOS)

    @property
    def established(self) -> bool:
        """True once both nonces are known: every frame is signed and checked."""
        return self.device_nonce is not None and self.gateway_nonce is not None

    def reset(self) -> None:
        """Forget the session (its frames no longer verify)."""
        self.device_nonce = self.gateway_nonce = None
        self.tx_counter = self.rx_counter = 0

    # --- sending ------------------------------------------------------------

    def seal(self, body: bytes) -> bytes:
        """Sign ``body`` for sending; raises SignatureError when there is no session
        (the caller sends it plain or not at all) or the counter is used up."""
        kind = body[0] & TYPE_MASK
        if self.role == "device" and kind == _HELLO:
            self.reset()
            self.device_nonce = self.random(NONCE_LEN)
            return sign(self.key, self.tx_dir, self.device_nonce, _ZERO_NONCE, 0, body)
        if self.role == "gateway" and kind == _WELCOME and self.device_nonce is not None:
            self.gateway_nonce = self.random(NONCE_LEN)
            self.tx_counter = 0
        if not self.established:
            raise SignatureError("no signed session to sign with", "auth_failed")
        if self.tx_counter >= MAX_COUNTER:
            self.reset()
            raise SignatureError("counter used up: a new session is needed", "auth_failed")
        self.tx_counter += 1
        assert self.device_nonce is not None and self.gateway_nonce is not None
        return sign(
            self.key, self.tx_dir, self.device_nonce, self.gateway_nonce, self.tx_counter, body
        )

    # --- receiving ----------------------------------------------------------

    def unseal(self, signed: bytes) -> bytes:
        """The plain body of a received signed body; raises SignatureError."""
        counter, nonce, plain, _ = split(signed)
        kind = plain[0]
        if self.role == "gateway" and kind == _HELLO:
            return self._hello(signed, counter, nonce, plain)
        if self.role == "device" and kind == _WELCOME:
            return self._welcome(signed, counter, nonce, plain)
        if not self.established:
            raise SignatureError("signed frame outside any session", "auth_failed")
        assert self.device_nonce is not None and self.gateway_nonce is not None
        verify(self.key, self.rx_dir, self.device_nonce, self.gateway_nonce, signed)
        if counter <= self.rx_counter:
            raise SignatureError(f"counter {counter} already seen", "replayed")
        self.rx_counter = counter
        return plain

    def _hello(self, signed: bytes, counter: int, nonce: bytes, plain: bytes) -> bytes:
        """A HELLO (gateway): counter 0, signed under (its nonce, zeros); a new session."""
        verify(self.key, self.rx_dir, nonce, _ZERO_NONCE, signed)
        if counter != 0:
            raise SignatureError(f"HELLO with counter {counter}, not 0", "auth_failed")
        if nonce in self.recent:
            raise SignatureError("HELLO nonce seen before", "replayed")
        self.recent.append(nonce)
        self.reset()
        self.device_nonce = nonce
        return plain

    def _welcome(self, signed: bytes, counter: int, nonce: bytes, plain: bytes) -> bytes:
        """A WELCOME (device): answers the last HELLO; the session is established."""
        if self.device_nonce is None:
            raise SignatureError("WELCOME without a HELLO", "auth_failed")
        verify(self.key, self.rx_dir, self.device_nonce, nonce, signed)
        if counter == 0 or (self.gateway_nonce == nonce and counter <= self.rx_counter):
            raise SignatureError(f"WELCOME counter {counter} already seen", "replayed")
        self.gateway_nonce = nonce
        self.rx_counter = counter
        self.tx_counter = 0
        return plain
