"""The bridge's settings: ``--mqtt URL`` and the ``[mqtt]`` TOML table (pure, no I/O)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sig.errors import SigError
from sig.mqtt.payload import PAYLOADS, PayloadKind
from sig.mqtt.topics import DEFAULT_PREFIX, Topics

#: MQTT keepalive (seconds): the broker fires a gateway's last will about 1.5 x this
#: after the gateway goes silent.
DEFAULT_KEEPALIVE = 30
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_TABLE_KEYS = {
    "url", "username", "password_file", "client_id", "gateway_id", "prefix", "payload",
    "keepalive", "tls", "import", "discovery", "discovery_prefix",
}  # fmt: skip


class MqttConfigError(SigError):
    """A bad ``--mqtt`` URL or ``[mqtt]`` table."""


@dataclass(frozen=True)
class ImportRule:
    """One ``[[mqtt.import]]``: a topic filter of plain MQTT devices -> sig sender and event."""

    topic: str
    sender: str = "{1}"
    event: str = "state"
    payload: str = "json"  #: "json" (the value) or "raw" (the payload as a text or bytes)


@dataclass(frozen=True)
class MqttConfig:
    """Everything the bridge needs to reach its broker and name itself there."""

    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    client_id: str = ""
    gateway_id: str = ""
    prefix: str = DEFAULT_PREFIX
    payload: PayloadKind = "json"
    keepalive: int = DEFAULT_KEEPALIVE
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    imports: tuple[ImportRule, ...] = ()
    discovery: bool = False
    discovery_prefix: str = "homeassistant"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def url(self) -> str:
        """The broker as shown in logs and ``sig links`` (never the password)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_url(url: str) -> dict[str, Any]:
    """``mqtt://[user:pass@]host[:port]`` or ``mqtts://...`` as settings."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise MqttConfigError(
            f"--mqtt {url!r}: expected mqtt://[user:pass@]host[:port] or mqtts://"
        )
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise MqttConfigError(f"--mqtt {url!r}: {exc}") from None
    out: dict[str, Any] = {"host": parts.hostname, "port": port, "tls": parts.scheme == "mqtts"}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password is not None:
        out["password"] = unquote(parts.password)
    return out


def from_settings(table: dict[str, Any], gateway_name: str) -> MqttConfig:
    """An MqttConfig from the ``[mqtt]`` table (plus ``--mqtt`` etc. merged in as keys)."""
    unknown = set(table) - _TABLE_KEYS
    if unknown:
        raise MqttConfigError(f"[mqtt]: unknown key(s) {', '.join(sorted(unknown))}")
    if not table.get("url"):
        raise MqttConfigError('[mqtt] needs url = "mqtt://host:1883" (or --mqtt URL)')
    out: dict[str, Any] = parse_url(str(table["url"]))
    for key in ("username", "client_id", "gateway_id", "prefix"):
        if key in table:
            out[key] = _text(table, key)
    if "password_file" in table:
        out["password"] = _read_secret(_text(table, "password_file"))
    payload = table.get("payload", "json")
    if payload not in PAYLOADS:
        raise MqttConfigError(f"[mqtt] payload must be one of {', '.join(PAYLOADS)}")
    out["payload"] = payload
    keepalive = table.get("keepalive", DEFAULT_KEEPALIVE)
    if isinstance(keepalive, bool) or not isinstance(keepalive, int) or not 1 <= keepalive <= 65535:
        raise MqttConfigError("[mqtt] keepalive must be a whole number of seconds, 1..65535")
    out["keepalive"] = keepalive
    out.update(_tls(table.get("tls", {})))
    out["imports"] = tuple(_import_rule(r) for r in _rules(table.get("import", [])))
    out["discovery"] = bool(table.get("discovery", False))
    if "discovery_prefix" in table:
        out["discovery_prefix"] = _text(table, "discovery_prefix")
    out.setdefault("gateway_id", _default_id(gateway_name))
    out.setdefault("client_id", f"sig-{out['gateway_id']}")
    config = MqttConfig(**out)
    try:
        Topics(config.prefix)
    except ValueError as exc:
        raise MqttConfigError(f"[mqtt] prefix: {exc}") from None
    return config


def _default_id(gateway_name: str) -> str:
    """A gateway id unique on one broker: the host name, then the gateway name."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
    return f"{host}-{gateway_name}"


def _text(table: dict[str, Any], key: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value:
        raise MqttConfigError(f"[mqtt] {key} must be a non-empty string")
    return value


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise MqttConfigError(f"[mqtt] password_file {path}: {exc.strerror}") from None


def _tls(table: Any) -> dict[str, str]:
    if not isinstance(table, dict) or set(table) - {"ca", "cert", "key"}:
        raise MqttConfigError("[mqtt.tls] takes ca, cert and key (PEM file paths)")
    return {f"tls_{k}": str(v) for k, v in table.items()}


def _rules(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise MqttConfigError("[[mqtt.import]] must be an array of tables")
    return value


def _import_rule(rule: dict[str, Any]) -> ImportRule:
    if set(rule) - {"topic", "sender", "event", "payload"} or not isinstance(
        rule.get("topic"), str
    ):
        raise MqttConfigError("[[mqtt.import]] takes topic (required), sender, event, payload")
    parsed = ImportRule(**{k: str(v) for k, v in rule.items()})
    if parsed.payload not in ("json", "raw"):
        raise MqttConfigError('[[mqtt.import]] payload must be "json" or "raw"')
    return parsed
