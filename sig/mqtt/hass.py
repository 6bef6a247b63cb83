"""Home Assistant MQTT discovery for described sig events (BRIDGE.md, "Home Assistant")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sig.mqtt.federation import Federation


class Discovery:
    """Publishes (and removes) ``<prefix>/sensor/<node>/<object>/config`` for described events."""

    def __init__(self, federation: Federation, prefix: str = "homeassistant") -> None:
        self.federation = federation
        self.prefix = prefix

    def connected(self) -> None:
        """Publish the configs of every described local sender."""

    def clear(self) -> None:
        """Remove every config this gateway published."""
