"""The device end of signed frames for ``sig device-sim`` (PROTOCOL.md section 5).

What a keyed device does with each frame: sign what it sends (nothing but
HELLO before WELCOME), and check what it receives. Unsigned, it takes only
INVITE (it only restarts the handshake, which line noise could do too) and,
while it waits for WELCOME, ERROR (the gateway's NOT_AUTHORISED, which it
cannot sign without a session).
"""

from __future__ import annotations

from sig.errors import SignatureError
from sig.protocol import messages as w
from sig.protocol.signing import Signer, is_signed, parse_key

__all__ = ["DeviceSigning", "read_key_file"]

#: The device's drop counters, one per SignatureError reason.
DROP_COUNTERS = ("auth_failed", "replayed", "unsigned")


def read_key_file(path: str) -> bytes:
    """The key in ``path`` (64 hex digits or 32 raw bytes); raises OSError or ValueError."""
    with open(path, "rb") as f:
        return parse_key(f.read(256))


class DeviceSigning:
    """Seal and unseal one device's frames; ``counts`` the frames it dropped."""

    def __init__(self, key: bytes) -> None:
        self.signer = Signer(key, "device")
        self.counts = dict.fromkeys(DROP_COUNTERS, 0)

    def seal(self, body: bytes) -> bytes | None:
        """The signed body, or None: not sendable (no session yet, or counter used up)."""
        try:
            return self.signer.seal(body)
        except SignatureError:
            return None

    def unseal(self, body: bytes, awaiting_welcome: bool) -> tuple[bytes | None, str]:
        """``(plain body, "")``, or ``(None, why)`` for a frame dropped (and counted);
        ``why`` starts with the frame's type (``WELCOME auth_failed: ...``)."""
        if not is_signed(body):
            kind = body[0]
            if kind == w.MessageType.INVITE or (kind == w.MessageType.ERROR and awaiting_welcome):
                return body, ""
            self.counts["unsigned"] += 1
            return None, f"{_type_name(body[0])} unsigned: frame is not signed"
        try:
            return self.signer.unseal(body), ""
        except SignatureError as exc:
            self.counts[exc.reason] += 1
            return None, f"{_type_name(body[0])} {exc.reason}: {exc}"


def _type_name(header: int) -> str:
    """The message type a header byte names (its number if unknown)."""
    try:
        return w.MessageType(header & w.TYPE_MASK).name
    except ValueError:
        return str(header & w.TYPE_MASK)
