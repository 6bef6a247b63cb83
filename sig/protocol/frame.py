"""Frame layer: ``COBS(body || CRC-16) || 0x00`` on any byte stream (sans-I/O).

A frame carries one message body. The CRC is CRC-16/GENIBUS (poly 0x1021,
init 0xFFFF, not reflected, final xor 0xFFFF; check value 0xD64E for
b"123456789") over the body, appended most significant byte first. The final
xor is what catches a lost COBS code byte: without it (CRC-16/CCITT-FALSE) a
frame whose CRC ends in 0x00 still checked with that byte dropped (PROTOCOL.md
section 1, "Why this check"). The result is COBS-encoded
so it holds no zero byte, and a single 0x00 ends it. The same frames run over
UART and TCP, so a device behind a serial-to-TCP bridge works unchanged.

:class:`FrameDecoder` accepts bytes in any chunking and returns whole bodies.
Anything wrong with a frame (bad COBS, bad CRC, too short, too long) is counted
in :class:`FrameStats` and the frame is dropped; decoding resumes after the next
0x00. The decoder never raises on input.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import crcmod.predefined
from cobs import cobs

from sig.errors import LocalProtocolError
from sig.protocol.constants import DEFAULT_MAX_BODY as DEFAULT_MAX_BODY
from sig.protocol.constants import MAX_BODY_LIMIT as MAX_BODY_LIMIT

#: Frame delimiter.
DELIMITER = 0x00
#: Size of the CRC trailer inside the COBS-encoded part.
CRC_SIZE = 2

crc16 = crcmod.predefined.mkPredefinedCrcFun("crc-16-genibus")
"""CRC-16/GENIBUS of a bytes-like object, as an int; ``crc16(b, crc16(a)) == crc16(a + b)``."""

#: True when crcmod's C extension is in use (it falls back silently to Python).
CRC_C_EXTENSION: bool = bool(getattr(sys.modules["crcmod.crcmod"], "_usingExtension", False))

_cobs_encode = cobs.encode
_cobs_decode = cobs.decode
_CobsDecodeError = cobs.DecodeError


def encoded_size_max(body_len: int) -> int:
    """Largest number of bytes a body of ``body_len`` bytes takes on the wire."""
    n = body_len + CRC_SIZE
    return n + n // 254 + 1 + 1  # COBS overhead, then the delimiter


def encode_frame(body: bytes) -> bytes:
    """Return the wire bytes of one frame carrying ``body``."""
    if not body:
        raise LocalProtocolError("a frame body holds at least the message type byte")
    if len(body) > MAX_BODY_LIMIT:
        raise LocalProtocolError(f"body of {len(body)} bytes exceeds {MAX_BODY_LIMIT}")
    encoded: bytes = _cobs_encode(body + crc16(body).to_bytes(2, "big"))
    return encoded + b"\x00"


class SharedEncoder:
    """``encode_frame`` that encodes the same body object only once in a row.

    The gateway hands one EVENT body object to every link that receives it;
    each link frames what it sends, and this cache makes that one encoding
    however many links there are. It is keyed by identity: it holds the last
    body, so no other object can be mistaken for it. A hot caller may test
    ``body is shared.body`` itself and read ``shared.frame`` (carriers.outbox does).
    """

    __slots__ = ("body", "frame")

    def __init__(self) -> None:
        self.body = b""  #: the last body encoded
        self.frame = encode_frame(b"\x00")  #: its frame (a placeholder until the first call)

    def __call__(self, body: bytes) -> bytes:
        if body is not self.body:
            self.body, self.frame = body, encode_frame(body)
        return self.frame


@dataclass
class FrameStats:
    """What a decoder has seen; errors by kind. Never reset by the decoder."""

    frames: int = 0  #: good frames returned
    bytes_in: int = 0  #: every byte fed, delimiters included
    empty: int = 0  #: 0x00 with nothing before it (allowed; used to resynchronise)
    crc_errors: int = 0  #: decoded fine, CRC did not match
    framing_errors: int = 0  #: not valid COBS, or shorter than type byte + CRC
    oversize: int = 0  #: longer than the decoder's max_body allows

    @property
    def errors(self) -> int:
        """All dropped frames, whatever the reason."""
        return self.crc_errors + self.framing_errors + self.oversize

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FrameDecoder:
    """Streaming frame decoder: ``feed(bytes) -> list[body]``.

    ``max_body`` bounds the memory held for one partial frame: once the pending
    bytes could no longer be a frame of at most ``max_body`` body bytes, they are
    discarded and the rest of that frame is skipped up to the next delimiter.
    """

    __slots__ = ("_buf", "_limit", "_skipping", "max_body", "stats")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        if not 1 <= max_body <= MAX_BODY_LIMIT:
            raise ValueError(f"max_body must be within 1..{MAX_BODY_LIMIT}")
        self.max_body = max_body
        self._limit = encoded_size_max(max_body) - 1  # without the delimiter
        self._buf = bytearray()
        self._skipping = False
        self.stats = FrameStats()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held in the buffer."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the bodies of all frames they complete."""
        self.stats.bytes_in += len(data)
        if b"\x00" not in data:
            self._append(data)
            return []
        parts = data.split(b"\x00")
        tail = parts.pop()
        if self._buf or self._skipping:  # the first part ends the frame already begun
            first = self._complete(parts[0])
            if first is None:
                del parts[0]
            else:
                parts[0] = first
        out: list[bytes] = []
        unwrap = self._unwrap
        for part in parts:
            body = unwrap(part)
            if body is not None:
                out.append(body)
        self._append(tail)
        return out

    def _complete(self, part: bytes) -> bytes | None:
        """The pending bytes + ``part`` as one encoded frame; None if it was being skipped."""
        self._append(part)
        skipping = self._skipping  # _append only ever sets it
        chunk = bytes(self._buf)
        self._buf.clear()
        self._skipping = False
        return None if skipping else chunk

    def _append(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        if len(self._buf) + len(data) > self._limit:
            self.stats.oversize += 1
            self._buf.clear()
            self._skipping = True
            return
        self._buf += data

    def _unwrap(self, encoded: bytes) -> bytes | None:
        """The body of one encoded frame (delimiter removed), or None, counted, if it is bad."""
        stats = self.stats
        if not encoded:
            stats.empty += 1
            return None
        if len(encoded) > self._limit:
            stats.oversize += 1
            return None
        try:
            raw: bytes = _cobs_decode(encoded)
        except _CobsDecodeError:
            stats.framing_errors += 1
            return None
        if len(raw) <= CRC_SIZE:
            stats.framing_errors += 1
            return None
        body = raw[:-CRC_SIZE]
        if len(body) > self.max_body:
            stats.oversize += 1
            return None
        if crc16(body) != int.from_bytes(raw[-CRC_SIZE:], "big"):
            stats.crc_errors += 1
            return None
        stats.frames += 1
        return body
