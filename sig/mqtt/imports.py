"""``[[mqtt.import]]``: plain MQTT devices (Tasmota, Zigbee2MQTT, ESPHome) as sig senders.

A rule maps a topic filter to a sender and an event: ``{1}``, ``{2}``, ...
in ``sender`` / ``event`` stand for the topic levels the filter's wildcards
matched (``+`` one level each, ``#`` each of the levels left, one number each). An imported
sender lives on the bridge's session like a remote one: local listeners see
its ``#connect`` when its first message comes, and its ``#disconnect`` when
a retained empty message clears its topic or the broker connection is lost.
It is never published back, and it has no requests.

Bad input is counted on the bridge's row (``sig links``), never fatal:
a payload that is not JSON (``payload = "json"``) in ``dropped_malformed``, a
topic that maps to no valid sender and event name in ``ignored_unmapped``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sig.core.routing import check_declared_event, check_name
from sig.errors import DecodeError, InvalidNameError
from sig.mqtt.payload import json_to_cbor
from sig.protocol.data import pack

if TYPE_CHECKING:
    from sig.mqtt.config import ImportRule
    from sig.mqtt.federation import Federation
    from sig.mqtt.state import Broker

logger = logging.getLogger(__name__)

#: Imported senders at most (then new ones are ignored and counted).
MAX_IMPORTED = 1024


def match(topic_filter: str, topic: str) -> list[str] | None:
    """The levels ``topic_filter``'s wildcards matched in ``topic``, or None if no match."""
    want, got = topic_filter.split("/"), topic.split("/")
    out: list[str] = []
    for i, level in enumerate(want):
        if level == "#":
            if i >= len(got):
                return None  # a rule's "#" must match one level at least to name something
            out.extend(got[i:])
            return out
        if i >= len(got):
            return None
        if level == "+":
            out.append(got[i])
        elif level != got[i]:
            return None
    return out if len(got) == len(want) else None


def expand(template: str, levels: list[str]) -> str | None:
    """``template`` with ``{1}``... replaced by the matched levels; None if one is missing."""
    try:
        return template.format("", *levels)
    except (IndexError, KeyError, ValueError):
        return None


class Importer:
    """The import rules of one bridge."""

    def __init__(self, federation: Federation, rules: Iterable[ImportRule]) -> None:
        self.federation = federation
        self.rules = tuple(rules)
        self.events: dict[str, set[str]] = {}  # imported sender -> the events seen

    def connected(self, broker: Broker) -> None:
        """Subscribe to every rule's filter (the federation forgot our senders on the loss)."""
        self.events.clear()
        for rule in self.rules:
            broker.subscribe(rule.topic)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on an imported topic: an event of an imported sender."""
        counters = self.federation.counters
        for rule in self.rules:
            levels = match(rule.topic, topic)
            if levels is None:
                continue
            names = self._names(rule, levels)
            if names is None:
                counters["ignored_unmapped"] += 1
                return
            sender, event = names
            if not payload:
                if retained or sender in self.events:
                    self._forget(sender)
                return
            try:
                data = self._data(rule.payload, payload)
            except DecodeError:
                counters["dropped_malformed"] += 1
                return
            self._trigger(sender, event, data)
            return
        counters["ignored_unmapped"] += 1

    @staticmethod
    def _names(rule: ImportRule, levels: list[str]) -> tuple[str, str] | None:
        sender, event = expand(rule.sender, levels), expand(rule.event, levels)
        try:
            check_name("sender", sender)
            check_declared_event(event)
        except InvalidNameError:
            return None
        if sender is None or event is None or sender.startswith("$"):
            return None
        return sender, event

    @staticmethod
    def _data(kind: str, payload: bytes) -> bytes:
        if kind == "json":
            return json_to_cbor(payload)
        try:
            return pack(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return pack(payload)

    def _trigger(self, sender: str, event: str, data: bytes) -> None:
        fed = self.federation
        known = self.events.get(sender)
        if known is None or event not in known:
            if known is None and len(self.events) >= MAX_IMPORTED:
                fed.counters["ignored_unmapped"] += 1
                return
            events = sorted((known or set()) | {event})
            if known is not None:
                fed.senders.unregister(sender)
            if fed.senders.register_import(sender, events) is None:
                fed.counters["conflicts"] += 1  # the name is taken here
                self.events.pop(sender, None)
                return
            self.events[sender] = set(events)
        remote = fed.remote.get(sender)
        if remote is not None:
            fed.core.receive(fed.session, remote.event_refs[event] + data)

    def _forget(self, sender: str) -> None:
        if self.events.pop(sender, None) is not None:
            self.federation.senders.unregister(sender)
