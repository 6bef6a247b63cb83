"""Subscriptions follow listens, across gateways (sans-I/O, BRIDGE.md).

Each gateway publishes the (sender, event) keys its own listeners want as one
retained list (``<prefix>/@gw/<gateway>/listens``) and subscribes to their
event topics; every other gateway LISTENs on its core for the union of what
the online gateways want. So an event crosses the broker only when some
remote listener asked for it, the seed's transport optimisation kept across
machines.
"""

from __future__ import annotations

import itertools
import json

from sig.core.routing import Key
from sig.mqtt.state import MAX_GATEWAYS, MAX_LISTEN_KEYS, Host, parse_listens
from sig.protocol import messages as w
from sig.protocol.constants import LISTEN_NO_LOCAL


class Listens:
    """This gateway's listen keys, the other gateways', and the session's LISTENs."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.local: frozenset[Key] = frozenset()
        self.remote: dict[str, frozenset[Key]] = {}
        self.listening: dict[Key, int] = {}  # what the session LISTENs for -> listener_id
        #: Keys published whoever listens (Home Assistant discovery's described events).
        self.always: set[Key] = set()
        self._ids = itertools.count(1)

    def received(self, gateway: str, payload: bytes) -> None:
        """Another gateway's retained listens."""
        host = self.host
        if gateway == host.me:
            return
        keys = parse_listens(payload)
        if keys is None:
            host.counters["dropped_malformed"] += 1
            return
        if not keys:
            self.remote.pop(gateway, None)
        elif gateway in self.remote or len(self.remote) < MAX_GATEWAYS:
            self.remote[gateway] = keys
        self.sync()

    def sync(self) -> None:
        """LISTEN on the core for exactly what online gateways' listeners want."""
        host = self.host
        want: set[Key] = set(self.always)
        for gateway, keys in self.remote.items():
            if host.online(gateway):
                want |= keys
        for key in [k for k in self.listening if k not in want]:
            host.feed(w.Unlisten(self.listening.pop(key)))
        for key in want - self.listening.keys():
            lid = next(self._ids)
            host.feed(w.Listen(lid, key[0], key[1], LISTEN_NO_LOCAL))
            if host.session.listeners.get(lid) == key:
                self.listening[key] = lid

    def forget_remote(self) -> None:
        self.remote.clear()
        self.sync()

    def publish_always(self, keys: set[Key], gone: set[Key]) -> None:
        """Publish events of ``keys`` whoever listens (and those of ``gone`` no longer)."""
        self.always -= gone
        self.always |= keys
        self.sync()

    def connected(self) -> None:
        """Subscribe to the event topics of our keys again, and publish them."""
        host = self.host
        broker = host.broker
        assert broker is not None
        for key in self.local:
            broker.subscribe(host.topics.listen_filter(*key), no_local=True)
        self.publish(self.local)

    def scan(self) -> None:
        """Follow the keys of this gateway's listeners (not the bridge's own)."""
        host = self.host
        session = host.session
        table = host.core.table
        keys = frozenset(
            k
            for k in table.subscribed_keys()
            if any(s is not session for s in table.subscribers(*k))
        )
        if keys == self.local:
            return
        broker = host.broker
        if broker is not None:
            for key in keys - self.local:
                broker.subscribe(host.topics.listen_filter(*key), no_local=True)
            for key in self.local - keys:
                broker.unsubscribe(host.topics.listen_filter(*key))
        self.publish(keys)
        self.local = keys

    def publish(self, keys: frozenset[Key]) -> None:
        host = self.host
        items: list[list[str | None]] = sorted(
            ([s, e] for s, e in keys), key=lambda k: (k[0] or "", k[1] or "")
        )
        if len(items) > MAX_LISTEN_KEYS:
            items = [[None, None]]  # too many to list: everything (documented)
        payload = json.dumps(items, separators=(",", ":")).encode() if items else b""
        host.publish(host.topics.listens(host.me), payload, qos=1, retain=True)
