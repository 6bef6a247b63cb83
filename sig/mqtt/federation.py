"""Federation of gateways through one MQTT broker, sans-I/O (BRIDGE.md).

:class:`Federation` is one peer of the gateway core: it holds one session on a
:class:`BridgeLink`, speaks sig's messages to the core like any client (HELLO
aside) and MQTT to the broker through a :class:`~sig.mqtt.state.Broker` it is
given (the asyncio side, :mod:`sig.mqtt.bridge`, owns the connection). So the
core needs no special case:

* every sender another gateway announces in its retained presence is a sender
  of this session (local listeners get its events by the normal rules, and
  its ``#connect`` / ``#disconnect`` from the core itself): :mod:`sig.mqtt.senders`;
* the session LISTENs for exactly what the other gateways' listeners asked
  for (their retained ``listens``), so only that crosses the broker:
  :mod:`sig.mqtt.listens`;
* a local REQUEST to a remote sender reaches this session like any handler's
  and leaves as an MQTT 5 request: :mod:`sig.mqtt.requests`.

Nothing loops: events of this session's own senders are never published, and
the event subscriptions use MQTT 5's No Local.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sig.core.gateway import GatewayCore
from sig.core.routing import BUILTIN_EVENTS, check_name
from sig.errors import DecodeError
from sig.mqtt.listens import Listens
from sig.mqtt.payload import Codec
from sig.mqtt.requests import Requests
from sig.mqtt.senders import Senders
from sig.mqtt.state import (
    BRIDGE_LIMITS,
    BRIDGE_PRINCIPAL,
    COUNTERS,
    MAX_GATEWAYS,
    Broker,
    GatewayState,
    Props,
    Remote,
)
from sig.mqtt.topics import Topics
from sig.protocol import messages as w

logger = logging.getLogger(__name__)


class BridgeLink:
    """The :class:`sig.core.session.Link` of the bridge's session: messages, no bytes."""

    persistent = False
    peer_subject: str | None = None
    limits = BRIDGE_LIMITS  #: many senders on one link (sig.core.limits.link_limits)

    def __init__(self, federation: Federation, name: str) -> None:
        self.name = name
        self.dropped = 0
        self._federation = federation

    def send(self, body: bytes, *, droppable: bool = False, urgent: bool = False) -> bool:
        return self._federation.from_core(body)

    def close(self) -> None:
        """Only a breach closes it, which the bridge never commits: logged."""
        logger.warning("%s: the gateway closed the bridge's session", self.name)

    def stats(self) -> dict[str, Any]:
        return self._federation.stats()


class Federation:
    """The bridge's session on the core and its view of the other gateways (sans-I/O)."""

    def __init__(
        self,
        core: GatewayCore,
        *,
        gateway_id: str,
        incarnation: str,
        topics: Topics,
        codec: Codec,
        wall: Callable[[], float],
        wake: Callable[[], None],
        link_name: str = "mqtt",
    ) -> None:
        check_name("gateway id", gateway_id)
        self.core = core
        self.me = gateway_id
        self.incarnation = incarnation
        self.topics = topics
        self.codec = codec
        self.wall = wall
        self._wake = wake
        self.broker: Broker | None = None  #: set while connected
        self.state = "connecting"
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.remote: dict[str, Remote] = {}
        self.gateways: dict[str, GatewayState] = {}
        self._later: list[w.Message] = []  # what the core sent that needs the core again
        self.link = BridgeLink(self, link_name)
        self.session = core.attach(self.link)
        hello = w.Hello("mqtt-bridge", 65535, 0)
        core.registrations.open_session(self.session, hello, BRIDGE_PRINCIPAL)
        self.senders = Senders(self)
        self.listens = Listens(self)
        self.requests = Requests(self)
        #: Local senders whose #connect / #disconnect came: scanned on the next pump.
        self.dirty: set[str] = set()
        self.follows = self._follow_senders()
        self.senders.scan()

    def _follow_senders(self) -> bool:
        """LISTEN for every #connect / #disconnect: local senders are then followed by
        name, not by a scan of the whole table (False: an ACL refused it; tick scans)."""
        ids = []
        for lid, event in ((1 << 30, "#connect"), ((1 << 30) + 1, "#disconnect")):
            self.feed(w.Listen(lid, None, event))
            ids.append(lid in self.session.listeners)
        return all(ids)

    # --- what the parts share (sig.mqtt.state.Host) -----------------------------

    def feed(self, msg: w.Message) -> None:
        """One message from the bridge's session to the core."""
        self.core.receive(self.session, w.encode(msg))

    def later(self, msg: w.Message) -> None:
        """Feed ``msg`` once the core's current call is over (see :meth:`pump`)."""
        self._later.append(msg)
        self._wake()

    def online(self, gateway: str) -> bool:
        state = self.gateways.get(gateway)
        return state is not None and state.online

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
        props: Props | None = None,
    ) -> None:  # fmt: skip
        """Hand one message to the broker's queue; counted as dropped when it cannot be."""
        broker = self.broker
        if broker is None:
            self.counters["dropped_offline"] += 1
        elif broker.publish(topic, payload, qos=qos, retain=retain, props=props):
            self.counters["published"] += 1
        else:
            self.counters["dropped_full"] += 1

    # --- the core's side ----------------------------------------------------------

    def from_core(self, body: bytes) -> bool:
        """A message the core sent to the bridge's session."""
        fast = w.split_event(body)
        if fast is not None:
            self._event_out(*fast)
            return True
        try:
            msg = w.decode(body)
        except DecodeError:  # the core's own encoding: cannot happen, logged
            logger.exception("bridge: undecodable message from the core")
            return True
        if isinstance(msg, w.Event):
            self._event_out(msg.sender, msg.event, msg.data)
        elif isinstance(msg, w.Request):
            self.requests.out(msg)
        elif isinstance(msg, w.Ping):
            self.later(w.Pong(msg.token))
        elif isinstance(msg, w.Error):
            logger.info("bridge: gateway error %s (ref %s): %s", msg.code, msg.ref, msg.message)
        return True

    def pump(self) -> None:
        """Feed what had to wait for the core's call to end (PONG, early answers)."""
        later, self._later = self._later, []
        for msg in later:
            self.feed(msg)
        if self.dirty:
            names, self.dirty = self.dirty, set()
            self.senders.scan(names)

    def _event_out(self, sender: str, event: str, data: bytes) -> None:
        """An event a remote listener asked for: publish it (never one that came from MQTT)."""
        if event in BUILTIN_EVENTS:  # never published: each gateway fires its own
            if sender not in self.remote:
                self.dirty.add(sender)  # a local sender came or went
                self._wake()
            return
        if sender in self.remote or self._owned(sender):
            self.counters["loops_suppressed"] += 1
            return
        try:
            payload = self.codec.to_mqtt(data)
        except DecodeError:
            self.counters["dropped_malformed"] += 1
            return
        self.publish(self.topics.event(sender, event), payload)

    def _owned(self, sender: str) -> bool:
        info = self.core.table.sender(sender)
        return info is not None and info.owner is self.session

    # --- the broker's side: the connection -----------------------------------------

    def connected(self, broker: Broker) -> None:
        """The broker accepted us: status, subscriptions, our presence and listens."""
        self.broker = broker
        self.state = "connected"
        self.publish(self.topics.status(self.me), self.status_payload(True), qos=1, retain=True)
        for topic_filter in (
            self.topics.all_status,
            self.topics.all_listens,
            self.topics.all_presence,
            self.topics.all_requests,
            self.topics.responses(self.me),
        ):
            broker.subscribe(topic_filter)
        self.senders.publish_all()
        self.listens.connected()

    def disconnected(self) -> None:
        """The broker is away: forget every remote sender (their #disconnect) and listen."""
        self.broker = None
        self.state = "down"
        self.senders.forget_remote()
        self.gateways.clear()
        self.listens.forget_remote()

    def status_payload(self, online: bool) -> bytes:
        """The retained status (``online`` now, ``offline`` as the last will)."""
        state = "online" if online else "offline"
        return json.dumps({"state": state, "incarnation": self.incarnation}).encode()

    def tick(self) -> None:
        """Follow this gateway's own senders and listens (the bridge calls it often)."""
        self.pump()
        if not self.follows:
            self.senders.scan()
        if self.broker is not None:
            self.listens.scan()

    def goodbye(self) -> None:
        """A clean stop: our presence cleared, our status offline (before disconnecting)."""
        for name in list(self.senders.local):
            self.senders.local_gone(name)
        self.publish(self.topics.status(self.me), self.status_payload(False), qos=1, retain=True)

    # --- the broker's side: messages -------------------------------------------------

    def on_message(self, topic: str, payload: bytes, props: Props | None = None) -> bool:
        """One message from the broker; False if no topic of the scheme (for the imports)."""
        self.counters["received"] += 1
        parsed = self.topics.parse(topic)
        if parsed is None:
            return False
        kind = parsed[0]
        if kind == "event":
            self._event_in(parsed[1], parsed[2], payload)
        elif kind == "presence":
            self.senders.presence(parsed[1], parsed[2], payload)
        elif kind == "status":
            self._status(parsed[1], payload)
        elif kind == "listens":
            self.listens.received(parsed[1], payload)
        elif kind == "request":
            self.requests.served(parsed[1], parsed[2], payload, props or Props())
        elif kind == "resp" and parsed[1] == self.me:
            self.requests.response(payload, props or Props())
        return True

    def _event_in(self, sender: str, event: str, payload: bytes) -> None:
        remote = self.remote.get(sender)
        prefix = remote.event_refs.get(event) if remote is not None else None
        if prefix is None:
            self.counters["ignored_unmapped"] += 1
            return
        try:
            data = self.codec.to_cbor(payload)
        except DecodeError:
            self.counters["dropped_malformed"] += 1
            return
        self.core.receive(self.session, prefix + data)

    def _status(self, gateway: str, payload: bytes) -> None:
        """A gateway's retained status: online (which incarnation) or offline (its will)."""
        try:
            doc = json.loads(payload)
            online = doc["state"] == "online"
            incarnation = str(doc["incarnation"])
        except (ValueError, TypeError, KeyError):
            if payload:
                self.counters["dropped_malformed"] += 1
            online, incarnation = False, ""
        if gateway == self.me:
            if not online or incarnation != self.incarnation:  # a past life's will or status
                status = self.status_payload(True)
                self.publish(self.topics.status(self.me), status, qos=1, retain=True)
            return
        if gateway not in self.gateways and len(self.gateways) >= MAX_GATEWAYS:
            self.counters["ignored_unmapped"] += 1
            return
        self.gateways[gateway] = GatewayState(online, incarnation)
        self.senders.gateway_changed(gateway)
        self.listens.sync()

    # --- figures ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The bridge's row in ``sig links``: its state and counters."""
        return {
            "mqtt": self.state,
            "gateways": sum(1 for g in self.gateways.values() if g.online),
            "remote_senders": len(self.remote),
            "remote_listens": len(self.listens.listening),
            **self.counters,
        }
