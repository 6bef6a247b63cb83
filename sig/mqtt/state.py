"""What the bridge's parts share: limits, counters, claims, and the host they work on (pure).

The federation (:mod:`sig.mqtt.federation`) is split into parts that each do
one job on the same state: :mod:`~sig.mqtt.senders` (presence, claims, the
tie-break), :mod:`~sig.mqtt.listens` (subscriptions follow listens) and
:mod:`~sig.mqtt.requests` (MQTT 5 request/response). They reach that state
through :class:`Host`, which :class:`~sig.mqtt.federation.Federation` is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sig.core.limits import Limits
from sig.core.principals import Principal
from sig.core.routing import Key, check_name
from sig.core.session import Session
from sig.errors import InvalidNameError
from sig.mqtt.payload import Codec
from sig.mqtt.topics import Topics
from sig.protocol import messages as w

#: Other gateways one bridge follows at most (more are counted and ignored).
MAX_GATEWAYS = 256
#: Listen keys one gateway announces at most; beyond it announces "everything".
MAX_LISTEN_KEYS = 1024
#: Requests from the broker this gateway serves at once (then BUSY).
MAX_SERVING = 256
#: The bridge link's limits: every remote sender lives on this one link.
BRIDGE_LIMITS = Limits(
    senders_per_link=16384, listeners_per_link=MAX_GATEWAYS * 8, pending_per_link=1024
)
#: Who the bridge's session acts as: a device principal without a configured name, so
#: that remote senders claim no name here for good (sig.core.claims) and an [acl] can
#: still say what remote senders may be (BRIDGE.md, "Access control").
BRIDGE_PRINCIPAL = Principal("device:mqtt", "device")
#: Presence payloads larger than this are refused (events and requests lists).
MAX_PRESENCE_BYTES = 32 << 10

COUNTERS = (
    "published",  #: messages handed to the broker
    "received",  #: messages from the broker
    "dropped_malformed",  #: payloads that do not decode (bad JSON/CBOR, bad presence)
    "ignored_unmapped",  #: topics that map to no sig sender or event here
    "dropped_offline",  #: what could not be published while the broker was away
    "dropped_full",  #: what could not be published: MAX_OUTBOX messages already waited
    "loops_suppressed",  #: events of this bridge's own senders, never published back
    "conflicts",  #: duplicate sender names across gateways, resolved by the tie-break
    "requests_out",  #: local requests sent to a remote sender
    "requests_in",  #: requests from the broker served here
    "late_responses",  #: answers to requests that had already finished
)


@dataclass(frozen=True)
class Props:
    """The MQTT 5 properties the bridge reads and writes."""

    response_topic: str | None = None
    correlation: bytes | None = None
    user: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str | None:
        for k, v in self.user:
            if k == key:
                return v
        return None


class Broker(Protocol):
    """What the federation asks of the MQTT connection (the asyncio side queues it)."""

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
        props: Props | None = None,
    ) -> bool: ...  # fmt: skip

    def subscribe(self, topic_filter: str, *, no_local: bool = False) -> None: ...

    def unsubscribe(self, topic_filter: str) -> None: ...


@dataclass(frozen=True)
class Claim:
    """One gateway's claim of one sender name (its retained presence)."""

    gateway: str
    sender: str
    events: tuple[str, ...]
    methods: tuple[str, ...]
    default_handler: bool
    since: float
    incarnation: str

    @property
    def rank(self) -> tuple[float, str]:
        """The tie-break: the earlier claim wins, then the smaller gateway id."""
        return (self.since, self.gateway)

    def payload(self) -> bytes:
        return json.dumps(
            {
                "gateway": self.gateway,
                "incarnation": self.incarnation,
                "events": list(self.events),
                "requests": list(self.methods),
                "default_handler": self.default_handler,
                "since": self.since,
            },
            separators=(",", ":"),
        ).encode()


@dataclass
class Remote:
    """A remote sender registered on the bridge's session."""

    claim: Claim
    sender_ref: int
    event_refs: dict[str, bytes] = field(default_factory=dict)  #: event -> TRIGGER prefix


@dataclass
class GatewayState:
    online: bool
    incarnation: str


class Host(Protocol):
    """The federation as its parts see it."""

    core: Any  #: the GatewayCore
    session: Session
    me: str
    incarnation: str
    topics: Topics
    codec: Codec
    wall: Callable[[], float]
    counters: dict[str, int]
    broker: Broker | None
    remote: dict[str, Remote]
    gateways: dict[str, GatewayState]

    def feed(self, msg: w.Message) -> None: ...

    def later(self, msg: w.Message) -> None: ...

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
        props: Props | None = None,
    ) -> None: ...  # fmt: skip

    def online(self, gateway: str) -> bool: ...


def parse_claim(gateway: str, sender: str, payload: bytes) -> Claim | None:
    """A presence payload as a claim, or None if it is not a valid one."""
    if len(payload) > MAX_PRESENCE_BYTES:
        return None
    try:
        doc = json.loads(payload)
        events = tuple(doc["events"])
        methods = tuple(doc.get("requests", ()))
        since = float(doc["since"])
        incarnation = str(doc["incarnation"])
        default = bool(doc.get("default_handler", False))
        if str(doc.get("gateway", gateway)) != gateway:
            return None
        for name in (*events, *methods):
            check_name("name", name)
    except (ValueError, TypeError, KeyError, AttributeError, InvalidNameError):
        return None
    if len(events) > BRIDGE_LIMITS.events_per_sender or since != since:
        return None
    return Claim(gateway, sender, events, methods, default, since, incarnation)


def parse_listens(payload: bytes) -> frozenset[Key] | None:
    """A gateway's retained listens as keys (empty: none), or None if malformed."""
    if not payload:
        return frozenset()
    try:
        items = json.loads(payload)
        keys: set[Key] = set()
        for sender, event in items:
            for name in (sender, event):
                if name is not None:
                    check_name("name", name)
            keys.add((sender, event))
    except (ValueError, TypeError, InvalidNameError):
        return None
    if len(keys) > MAX_LISTEN_KEYS:
        return None
    return frozenset(keys)
