"""The device end of the reliable UART mode for ``sig device-sim`` (PROTOCOL.md section 5).

A device that asks for the mode (bit 0x01 in HELLO) and gets it (the bit in
WELCOME) runs the gateway's own state machine,
:class:`sig.core.reliable.ReliableSession`, with the C library's default
window of 2: registrations, listens, requests, responses and errors go
sequenced, and so do the triggers of the events it marks reliable; what it
receives goes through the session first (ACKs, duplicates and gaps stop
there). Outside a reliable session every call here is a no-op, so the
emulator's code reads the same with the mode on or off.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from sig.core.reliable import COUNTERS, ReliableSession
from sig.protocol import messages as w
from sig.protocol.data import pack
from sig.protocol.reliable import ALWAYS_SEQUENCED

__all__ = ["DeviceReliable", "add_arguments", "options"]

#: Unacknowledged frames the device keeps (the C library's default window).
WINDOW = 2
#: The device's initial retransmission timeout, seconds (the C library's default).
RTO = 0.2
#: Sequenced messages the device queues while its window is full.
QUEUE = 64


class DeviceReliable:
    """The reliable mode of one emulated device: asked for or not, open or not.

    ``write(body)`` sends one body (it signs and frames it). ``counts`` has the
    counters of PROTOCOL.md section 5, kept across sessions.
    """

    def __init__(self, wanted: bool, write: Callable[[bytes], None]) -> None:
        self.wanted = wanted
        self.write = write
        self.counts = dict.fromkeys(COUNTERS, 0)
        #: The window and initial retransmission timeout (seconds) of the next session.
        self.window = WINDOW
        self.rto = RTO
        #: The open reliable session (None: none, or the gateway did not grant it).
        self.session: ReliableSession | None = None

    @property
    def features(self) -> int:
        """The HELLO feature bit this device asks for."""
        return int(w.Feature.RELIABLE) if self.wanted else 0

    def open(self, features: int) -> None:
        """WELCOME: a reliable session when both sides set the bit (seq starts at 1)."""
        self.session = None
        if self.wanted and features & w.Feature.RELIABLE:
            self.session = ReliableSession(
                self.write, self.counts, window=self.window, rto_initial=self.rto, queue_limit=QUEUE
            )

    def reset(self) -> None:
        """The session ended (HELLO again, port lost): forget what was kept and expected."""
        self.session = None

    def receive(self, body: bytes, now: float) -> bytes | None:
        """The plain body to handle, or None when the reliable layer consumed it.
        Raises RemoteProtocolError for a bad sequence header (MALFORMED)."""
        if self.session is None:
            return body
        return self.session.receive(body, now)

    def send(self, msg: w.Message, now: float, sequenced: bool = False) -> bool:
        """Send ``msg`` sequenced if the mode is open and the spec (or ``sequenced``,
        a reliable trigger) says so; False: not taken, the caller sends it plain."""
        session = self.session
        if session is None or not (sequenced or msg.TYPE in ALWAYS_SEQUENCED):
            return False
        if not session.send(w.encode(msg), now):
            self.counts["reliable_dropped"] += 1
        return True

    def full(self) -> bool:
        """True when a sequenced send now would be dropped (window and queue full)."""
        session = self.session
        return session is not None and len(session.queue) >= session.queue_limit

    def backlog(self) -> int:
        """Sequenced frames sent but not acknowledged yet, or waiting for the window."""
        session = self.session
        return len(session.kept) + len(session.queue) if session is not None else 0

    def poll(self, now: float) -> bool:
        """Retransmit when due; True after 16 retransmissions in vain (start over)."""
        session = self.session
        return session is not None and session.poll(now)

    def stray_ack(self, msg: w.Ack) -> None:
        """An ACK outside a reliable session: ignored, counted."""
        self.counts["bad_acks"] += 1

    def meta(self, events: Iterable[str], marked: frozenset[str]) -> bytes:
        """REGISTER_SENDER ``meta`` naming the events sent reliably (for information)."""
        names = [e for e in events if e in marked]
        return pack({"reliable": names}) if self.session is not None and names else b""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--reliable`` and ``--reliable-events`` of ``sig device-sim``."""
    parser.add_argument(
        "--reliable",
        action="store_true",
        help="ask for the reliable UART mode (sequenced, acknowledged, retransmitted frames)",
    )
    parser.add_argument(
        "--reliable-events",
        metavar="E1,E2",
        help="the events whose triggers are sent reliably (default with --reliable: all)",
    )


def options(args: Any) -> dict[str, Any]:
    """The DeviceSim keyword arguments of those two options."""
    marked = args.reliable_events
    return {
        "reliable": bool(args.reliable or marked is not None),
        "reliable_events": None if marked is None else [e for e in marked.split(",") if e],
    }
