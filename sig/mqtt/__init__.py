"""The MQTT bridge: federation of gateways, plain-MQTT imports, Home Assistant discovery.

A layer between the routers and the tools (pyproject's import-linter
contracts): :mod:`sig.mqtt.topics`, :mod:`~sig.mqtt.payload`,
:mod:`~sig.mqtt.federation`, :mod:`~sig.mqtt.imports` and :mod:`~sig.mqtt.hass`
do no I/O; only :mod:`sig.mqtt.bridge` runs on asyncio (aiomqtt). BRIDGE.md
documents the topic scheme and what the bridge relies on.
"""

from __future__ import annotations

from typing import Any

from sig.mqtt.config import MqttConfig, MqttConfigError, from_settings, parse_url

__all__ = ["MqttConfig", "MqttConfigError", "bridge_config", "from_settings", "parse_url", "start"]


def bridge_config(conf: dict[str, Any]) -> MqttConfig | None:
    """The bridge's settings from ``sig serve``'s (``[mqtt]`` + ``--mqtt*`` flags); None: off."""
    table = dict(conf.get("mqtt") or {})
    for flag, key in (("mqtt_url", "url"), ("mqtt_client_id", "client_id"),
                      ("mqtt_prefix", "prefix"), ("mqtt_id", "gateway_id"),
                      ("mqtt_keepalive", "keepalive")):  # fmt: skip
        if conf.get(flag) is not None:
            table[key] = conf[flag]
    if not table:
        return None
    return from_settings(table, str(conf.get("name", "sig-gateway")))


def start(core: Any, config: MqttConfig) -> Any:
    """Start the bridge of ``core`` (a GatewayCore) in the running loop; its MqttBridge."""
    from sig.mqtt.bridge import MqttBridge

    bridge = MqttBridge(core, config)
    bridge.start()
    return bridge
