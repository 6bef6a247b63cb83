"""Event and request data between sig's CBOR and an MQTT payload (pure, no I/O).

Two codecs (BRIDGE.md, "Payloads"):

* ``json`` (the default): the value as UTF-8 JSON text, what Node-RED, Home
  Assistant and Telegraf read. No data (sig's empty CBOR) is an empty
  payload. JSON cannot carry everything CBOR can: byte strings, NaN and the
  infinities, map keys that are not text, tags, ``undefined``. Such a value
  travels as ``{"$cbor": "<base64 of the CBOR item>"}``, which the other
  gateway turns back into the same CBOR: federation loses nothing, and a JSON
  reader sees a plain object. A text that is not JSON is refused.
* ``cbor``: the CBOR item itself, byte for byte (lossless, smallest).

:meth:`Codec.to_mqtt` takes the CBOR bytes as they came from the wire;
:meth:`Codec.to_cbor` gives the CBOR bytes for the wire, or raises
:class:`~sig.errors.DecodeError` (the bridge drops and counts it).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from sig.errors import DecodeError, EncodeError
from sig.protocol.data import pack, unpack

PayloadKind = Literal["json", "cbor"]
PAYLOADS: tuple[PayloadKind, ...] = ("json", "cbor")
#: The key of the JSON object that wraps what JSON cannot carry.
CBOR_KEY = "$cbor"


class Codec:
    """One payload kind's two directions."""

    def __init__(self, kind: PayloadKind = "json") -> None:
        if kind not in PAYLOADS:
            raise ValueError(f"payload must be one of {', '.join(PAYLOADS)}, not {kind!r}")
        self.kind = kind

    def to_mqtt(self, data: bytes) -> bytes:
        """The MQTT payload of one CBOR item (``b""``: no data, an empty payload)."""
        if self.kind == "cbor" or not data:
            return data
        return json_payload(unpack(data), data)

    def to_cbor(self, payload: bytes) -> bytes:
        """The CBOR item of one MQTT payload; DecodeError if it is not one."""
        if self.kind == "cbor":
            unpack(payload)  # raises DecodeError unless one valid item
            return payload
        return json_to_cbor(payload)

    def value(self, payload: bytes) -> Any:
        """The decoded value of one payload (for an import's JSON), DecodeError if none."""
        return unpack(self.to_cbor(payload))


def json_payload(value: Any, raw: bytes | None = None) -> bytes:
    """``value`` as JSON, or the ``$cbor`` wrapper of its CBOR (``raw``, or packed now)."""
    try:
        if not _text_keys(value):
            raise TypeError("a map key that is not text")  # json.dumps would make it one
        return json.dumps(
            value, allow_nan=False, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (TypeError, ValueError):
        pass
    if raw is None:
        raw = pack(value)
    return json.dumps({CBOR_KEY: base64.b64encode(raw).decode()}, separators=(",", ":")).encode()


def _text_keys(value: Any, depth: int = 0) -> bool:
    """True if every map in ``value`` has only text keys (and it is not absurdly deep)."""
    if depth > 64:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and _text_keys(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_text_keys(v, depth + 1) for v in value)
    return True


def json_to_cbor(payload: bytes) -> bytes:
    """The CBOR of one JSON payload (``{"$cbor": ...}`` unwrapped); DecodeError otherwise."""
    if not payload:
        return b""
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"payload is not JSON: {exc}") from exc
    if isinstance(value, dict) and set(value) == {CBOR_KEY} and isinstance(value[CBOR_KEY], str):
        try:
            raw = base64.b64decode(value[CBOR_KEY], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"{CBOR_KEY} is not base64: {exc}") from exc
        unpack(raw)
        return raw
    try:
        return pack(value)
    except EncodeError as exc:  # cannot happen for json.loads output, kept as a guard
        raise DecodeError(str(exc)) from exc
