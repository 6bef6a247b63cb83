"""Event and request data <-> the CBOR item carried on the wire (RFC 8949).

No data (``None``) travels as zero bytes, so an event without data costs
nothing. Everything else is one CBOR item in preferred serialisation: floats
in the shortest form that loses nothing (``21.5`` is three bytes), map keys
sorted. Only the API layer calls this module; the gateway forwards the bytes.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from .errors import DecodeError, EncodeError

_dumps = cbor2.dumps


def pack(value: Any) -> bytes:
    """Encode ``value`` for the wire; ``None`` is ``b""``. Raises EncodeError."""
    if value is None:
        return b""
    try:
        return _dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise EncodeError(
            f"cannot send {type(value).__name__} as event data: {exc}"
            " (use None, bool, int, float, str, bytes, list, dict)"
        ) from exc


def unpack(raw: bytes) -> Any:
    """Decode data received from the wire; ``b""`` is ``None``. Raises DecodeError."""
    if not raw:
        return None
    fp = io.BytesIO(raw)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(f"event data is not one valid CBOR item: {exc}") from exc
    if fp.tell() != len(raw):
        raise DecodeError(f"event data has {len(raw) - fp.tell()} bytes after its CBOR item")
    return value
