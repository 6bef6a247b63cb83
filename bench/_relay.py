"""The bare asyncio relay: the least a Python router over sig's frames can do.

The floor for any Python gateway in ``bench/router.py`` (system ``relay``):
the same TCP frames (COBS + CRC-16, ``sig.protocol.frame``) and just enough
of the protocol that sig's own clients run against it unchanged (HELLO ->
WELCOME, REGISTER_SENDER -> SENDER_REGISTERED, LISTEN -> LISTENING, TRIGGER ->
EVENT, REQUEST / RESPONSE forwarded with the request id mapped, PING -> PONG).
Nothing else: no validation beyond the codec, no limits, no counters, no
ACL, no slow-consumer handling, no logging. Each ``data_received`` decodes
its frames, routes them, and writes once per destination (the same
coalescing the gateway does per loop turn). A benchmark peer, not a product:
never run it on anything but loopback.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sig.protocol import messages as w
from sig.protocol.frame import FrameDecoder, encode_frame

_TRIGGER = int(w.MessageType.TRIGGER)
_REQUEST = int(w.MessageType.REQUEST)
_RESPONSE = int(w.MessageType.RESPONSE)


class Relay:
    """The routing state: who listens to what, who owns which sender name."""

    def __init__(self) -> None:
        self.listeners: dict[tuple[str | None, str | None], list[RelayLink]] = {}
        self.owners: dict[str, RelayLink] = {}
        self.ids = itertools.count(1)
        self.pending: dict[int, tuple[RelayLink, int]] = {}  # relay id -> (requester, its id)

    def targets(self, sender: str, event: str) -> list[RelayLink]:
        out: list[RelayLink] = []
        for key in ((sender, event), (None, event), (sender, None), (None, None)):
            out += self.listeners.get(key, ())
        return out


class RelayLink(asyncio.Protocol):
    """One TCP connection to the relay."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.out = bytearray()
        self.heads: dict[int, tuple[bytes, list[RelayLink]]] = {}  # event_ref -> head, targets
        self.events: dict[int, tuple[str, str]] = {}
        self.names: list[str] = []
        self.keys: list[tuple[str | None, str | None]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        for key in self.keys:
            self.relay.listeners[key].remove(self)
        for name in self.names:
            self.relay.owners.pop(name, None)

    def data_received(self, data: bytes) -> None:
        dirty: set[RelayLink] = set()
        for body in self.decoder.feed(data):
            kind = body[0]
            if kind == _TRIGGER and body[1] < 0x80:  # the hot path: no message object
                head, targets = self.heads[body[1]]
                frame = encode_frame(head + body[2:])
                for link in targets:
                    link.out += frame
                    dirty.add(link)
            else:
                self.control(w.decode(body), dirty)
        for link in dirty:
            if link.transport is not None and not link.transport.is_closing():
                link.transport.write(bytes(link.out))
            link.out.clear()

    def send(self, msg: w.Message, dirty: set[RelayLink]) -> None:
        self.out += encode_frame(w.encode(msg))
        dirty.add(self)

    def control(self, msg: w.Message, dirty: set[RelayLink]) -> None:
        relay = self.relay
        if isinstance(msg, w.Request):
            owner = relay.owners.get(msg.sender)
            if owner is None:
                self.send(w.Response(msg.request_id, 4, "no such sender"), dirty)
                return
            rid = next(relay.ids)
            relay.pending[rid] = (self, msg.request_id)
            owner.send(w.Request(rid, msg.sender, msg.method, msg.data), dirty)
        elif isinstance(msg, w.Response):
            requester, their_id = relay.pending.pop(msg.request_id)
            requester.send(w.Response(their_id, msg.status, msg.message, msg.data), dirty)
        elif isinstance(msg, w.Hello):
            self.send(w.Welcome("relay", msg.max_body, 0), dirty)
        elif isinstance(msg, w.RegisterSender):
            relay.owners[msg.name] = self
            self.names.append(msg.name)
            for ref, event in msg.events:
                self.events[ref] = (msg.name, event)
            self.refresh()
            self.send(w.SenderRegistered(msg.sender_ref), dirty)
        elif isinstance(msg, w.Listen):
            key = (msg.sender, msg.event)
            relay.listeners.setdefault(key, []).append(self)
            self.keys.append(key)
            for link in {*relay.owners.values()}:
                link.refresh()
            self.send(w.Listening(msg.listener_id), dirty)
        elif isinstance(msg, w.Ping):
            self.send(w.Pong(msg.token), dirty)

    def refresh(self) -> None:
        """Recompute this link's (event_ref -> EVENT head, targets) after a change."""
        self.heads = {
            ref: (w.event_head(sender, event), self.relay.targets(sender, event))
            for ref, (sender, event) in self.events.items()
        }


async def serve() -> asyncio.Server:
    """The relay on a free 127.0.0.1 port."""
    relay = Relay()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: RelayLink(relay), "127.0.0.1", 0)
