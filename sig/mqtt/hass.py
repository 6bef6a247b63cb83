"""Home Assistant MQTT discovery for the events a sender describes (BRIDGE.md, sans-I/O).

A sender describes events in its REGISTER_SENDER meta: ``{"describe":
{event: {"unit": "°C", "device_class": "temperature", ...}}}``. For each
described event of a sender on this gateway, the bridge publishes one
retained config, ``<discovery_prefix>/sensor/<node>/<object>/config``, so
the sensor appears in Home Assistant with no YAML; an empty retained config
removes it when the sender goes (or the gateway stops cleanly); the described
events are published whoever listens (Home Assistant reads them). ``node`` is
the gateway id and ``object`` the sender and event, each reduced to
``[A-Za-z0-9_-]`` (what Home Assistant accepts there) plus a short hash of
the exact names, so two names never share one.

Keys read from a description: ``unit`` (``unit_of_measurement``),
``device_class``, ``state_class``, ``name``, ``icon``, and ``value_key``: the
key of the event's JSON object that holds the value (``{"n": 3, "value":
21.5}`` with ``value_key = "value"``); without it the whole payload is the
value. Availability follows the gateway's status topic (its last will).
Discovery needs JSON payloads (``payload = "json"``): Home Assistant cannot
read CBOR.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sig.mqtt.federation import Federation
    from sig.mqtt.state import Claim
    from sig.mqtt.topics import Topics

logger = logging.getLogger(__name__)

#: Description keys copied to the config as they are (sig key -> Home Assistant key).
_KEYS = {"unit": "unit_of_measurement", "device_class": "device_class",
         "state_class": "state_class", "name": "name", "icon": "icon"}  # fmt: skip
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
#: Described events of one sender that get a config at most.
MAX_CONFIGS_PER_SENDER = 64

Describe = Mapping[str, Mapping[str, Any]]


def sender_describe(info: Any) -> Describe:
    """The ``describe`` part of a registered sender's meta (``SenderInfo.meta``), or {}.

    The core keeps each sender's meta once sender metadata is in (helper
    retained's ``sig.core.meta.SenderMeta``); until then there is none and
    nothing is published. Read through ``getattr`` so this works with both.
    """
    meta = getattr(info, "meta", None)
    describe = getattr(meta, "describe", None)
    if describe is None and isinstance(meta, Mapping):
        describe = meta.get("describe")
    return describe if isinstance(describe, Mapping) else {}


def object_id(*names: str) -> str:
    """A Home Assistant id for ``names``: readable, safe, and one per exact name."""
    digest = hashlib.blake2s("\0".join(names).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    readable = _UNSAFE.sub("_", "_".join(names)).strip("_")[:48] or "sig"
    return f"{readable}_{digest}"


def config_topic(prefix: str, gateway: str, sender: str, event: str) -> str:
    return f"{prefix}/sensor/{object_id(gateway)}/{object_id(sender, event)}/config"


def sensor_config(
    topics: Topics, gateway: str, sender: str, event: str, described: Mapping[str, Any]
) -> dict[str, Any]:
    """The discovery config of one described event (a JSON object)."""
    config: dict[str, Any] = {
        "name": f"{sender} {event}",
        "unique_id": f"sig_{object_id(gateway, sender, event)}",
        "state_topic": topics.event(sender, event),
        "availability": [
            {"topic": topics.status(gateway), "value_template": "{{ value_json.state }}"}
        ],
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {"identifiers": [f"sig_{object_id(gateway, sender)}"], "name": sender,
                   "via_device": f"sig_{object_id(gateway)}", "manufacturer": "sig"},
    }  # fmt: skip
    for key, target in _KEYS.items():
        value = described.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            config[target] = value
    value_key = described.get("value_key")
    if isinstance(value_key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value_key):
        config["value_template"] = "{{ value_json." + value_key + " }}"
    else:
        config["value_template"] = "{{ value_json }}"
    return config


class Discovery:
    """Publishes (and removes) the discovery configs of this gateway's described senders."""

    def __init__(self, federation: Federation, prefix: str = "homeassistant") -> None:
        self.federation = federation
        self.prefix = prefix
        self.published: dict[str, list[str]] = {}  # sender -> its config topics
        if federation.codec.kind != "json":
            logger.warning('mqtt: Home Assistant discovery needs payload = "json"; off')
            return
        federation.senders.hooks.append(self._changed)

    def connected(self) -> None:
        """Publish the configs of every described local sender (the broker may have lost them)."""
        self.published.clear()
        for name, claim in self.federation.senders.local.items():
            self._changed(name, claim)

    def _changed(self, name: str, claim: Claim | None) -> None:
        fed = self.federation
        for topic in self.published.pop(name, []):
            fed.publish(topic, b"", qos=1, retain=True)
        old = {k for k in fed.listens.always if k[0] == name}
        if claim is None or fed.broker is None or fed.codec.kind != "json":
            fed.listens.publish_always(set(), old)
            return
        describe = sender_describe(fed.core.table.sender(name))
        topics: list[str] = []
        keys: set[tuple[str | None, str | None]] = set()
        for event in claim.events:
            described = describe.get(event)
            if not isinstance(described, Mapping) or len(topics) >= MAX_CONFIGS_PER_SENDER:
                continue
            topic = config_topic(self.prefix, fed.me, name, event)
            config = sensor_config(fed.topics, fed.me, name, event, described)
            fed.publish(topic, json.dumps(config).encode(), qos=1, retain=True)
            topics.append(topic)
            keys.add((name, event))
        if topics:
            self.published[name] = topics
        fed.listens.publish_always(keys, old)  # Home Assistant reads the state topic

    def clear(self) -> None:
        """Remove every config this gateway published (a clean stop)."""
        for name in list(self.published):
            self._changed(name, None)
