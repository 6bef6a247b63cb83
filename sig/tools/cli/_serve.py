"""``sig serve``: its settings (defaults, TOML config, flags) and the gateway's start."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from carriers.stream import DEFAULT_HIGH_WATER, DEFAULT_MAX_QUEUED, DEFAULT_STALL_TIMEOUT
from sig.core.gateway import DEFAULT_HELLO_TIMEOUT, DEFAULT_TCP_KEEPALIVE_MS
from sig.errors import ConnectError, SigError
from sig.logs import printable
from sig.protocol.constants import DEFAULT_PORT
from sig.routers.loops import resolve as resolve_loop

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

logger = logging.getLogger("sig.cli")

DEFAULTS: dict[str, Any] = {
    # Loopback only unless told otherwise; beyond loopback, users or allow_anonymous.
    "host": "127.0.0.1",
    "port": DEFAULT_PORT,
    "name": "sig-gateway",
    "request_timeout": 10.0,
    "timer": True,
    "timer_name": "timer",
    "timer_event": "tick",
    "timer_interval": 5.0,
    "serial": [],
    "log_level": "info",
    "log_format": "text",  # or "json": one JSON object per line (journald, Loki)
    "loop": "asyncio",  # or "uvloop" (the fast extra), "auto": uvloop when installed
    # Seconds a quiet serial device's sender names stay reserved for its port
    # (None: twice its link timeout; 0: not at all).
    "serial_name_grace": None,
    "limits": None,  # sig.Limits from the config's [limits] table
    "discovery": True,
    "http": None,  # "HOST:PORT" of the status page, /metrics and /healthz; None: off
    # Connection and queue limits ([gateway] table; README, Configuration).
    # max_connections None: from RLIMIT_NOFILE.
    "max_connections": None,
    "hello_timeout": DEFAULT_HELLO_TIMEOUT,
    "tcp_keepalive": DEFAULT_TCP_KEEPALIVE_MS / 1000,
    "stall_timeout": DEFAULT_STALL_TIMEOUT,
    "high_water": DEFAULT_HIGH_WATER,
    "max_queued": DEFAULT_MAX_QUEUED,
    # [auth] (README, Users): a users file makes clients log in; allow_anonymous
    # admits those that do not (--allow-anonymous; and it is what lets anonymous
    # clients in on an address that is not loopback); tls_principal "subject": a
    # client certificate names one.
    "users": None,
    "allow_anonymous": False,
    "tls_principal": "none",
    # [tls] cert, key, client_ca / --tls-cert, --tls-key, --tls-client-ca (PEM files).
    "tls_cert": None,
    "tls_key": None,
    "tls_client_ca": None,
    # Access control (README, "Access control"): the [acl] policy (None: no ACL,
    # everything allowed) and the owned names' state file (None: next to the config).
    "acl": None,
    "state": None,
    # Retained values on disk (--retain-db / [retained] path; README, "Retained values").
    "retain_db": None,
    # The MQTT bridge (BRIDGE.md): the [mqtt] table, and --mqtt URL and its flags.
    "mqtt": None,
    "mqtt_url": None,
    "mqtt_client_id": None,
    "mqtt_prefix": None,
    "mqtt_id": None,
    "mqtt_keepalive": None,
}
#: The [tls] table's keys and the settings they set.
TLS_KEYS = {"cert": "tls_cert", "key": "tls_key", "client_ca": "tls_client_ca"}
#: Limits in [gateway] (and flags): key -> (type, smallest allowed value).
LOG_FORMATS = ("text", "json")
GATEWAY_LIMITS: dict[str, tuple[type, float]] = {
    "max_connections": (int, 1),
    "hello_timeout": (float, 0),
    "tcp_keepalive": (float, 0),
    "stall_timeout": (float, 0.01),
    "high_water": (int, 1),
    "max_queued": (int, 1),
    "serial_name_grace": (float, 0),
}


class UsageError(SigError):
    """Bad command line or config file (exit code 2)."""


# --- configuration ----------------------------------------------------------


def load_config(path: str | None) -> dict[str, Any]:
    """Read a TOML config into flat settings (see examples/sig.toml)."""
    if path is None:
        return {}
    try:
        doc = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    gateway = doc.get("gateway", {})
    keys = ("host", "port", "name", "request_timeout", "log_level", "log_format", "loop")
    for key in (*keys, *GATEWAY_LIMITS):
        if key in gateway:
            out[key] = gateway[key]
    timer = doc.get("timer", {})
    for key, target in (
        ("enabled", "timer"),
        ("name", "timer_name"),
        ("event", "timer_event"),
        ("interval", "timer_interval"),
    ):
        if key in timer:
            out[target] = timer[key]
    discovery = doc.get("discovery", {})
    if "enabled" in discovery:
        if not isinstance(discovery["enabled"], bool):
            raise UsageError("config: [discovery] enabled must be true or false")
        out["discovery"] = discovery["enabled"]
    if "serial" in doc:
        if not isinstance(doc["serial"], list):
            raise UsageError("config: [[serial]] must be an array of tables")
        out["serial"] = doc["serial"]
    if "limits" in doc:
        out["limits"] = _limits(path, doc["limits"])
    http = doc.get("http", {})
    if not isinstance(http, dict) or set(http) - {"listen"}:
        raise UsageError('config: [http] takes one key, listen = "127.0.0.1:8080"')
    if http.get("listen"):
        out["http"] = str(http["listen"])
    out.update(_auth_table(path, doc.get("auth", {})))
    out.update(_tls_table(path, doc.get("tls", {})))
    out.update(_access(path, doc))
    out.update(_retained_table(path, doc.get("retained", {})))
    if "mqtt" in doc:
        out["mqtt"] = doc["mqtt"]
    known = {"gateway", "timer", "serial", "limits", "discovery", "http", "auth", "tls", "acl"}
    known.update(("retained", "mqtt"))
    unknown = set(doc) - known
    if unknown:
        raise UsageError(f"config {path}: unknown section(s) {', '.join(sorted(unknown))}")
    return out


def _auth_table(path: str, table: Any) -> dict[str, Any]:
    """``[auth]`` of the config: users (a file), allow_anonymous, tls_principal (and
    state, the owned names' file, which :func:`_access` reads)."""
    from sig.core.auth import TLS_PRINCIPALS

    keys = ("users", "allow_anonymous", "tls_principal", "state")
    if not isinstance(table, dict) or not set(table) <= set(keys):
        raise UsageError(f"config {path}: [auth] takes only {', '.join(keys)}")
    if "users" in table and (not isinstance(table["users"], str) or not table["users"]):
        raise UsageError(f"config {path}: auth.users must be the path of a users file")
    if "allow_anonymous" in table and not isinstance(table["allow_anonymous"], bool):
        raise UsageError(f"config {path}: auth.allow_anonymous must be true or false")
    if table.get("tls_principal", "none") not in TLS_PRINCIPALS:
        raise UsageError(
            f"config {path}: auth.tls_principal must be one of {', '.join(TLS_PRINCIPALS)}"
        )
    return dict(table)


def _tls_table(path: str, table: Any) -> dict[str, str]:
    """``[tls]`` of the config: cert, key and client_ca, each a file path."""
    if not isinstance(table, dict) or not set(table) <= set(TLS_KEYS):
        raise UsageError(f"config {path}: [tls] takes only {', '.join(TLS_KEYS)}")
    for key, value in table.items():
        if not isinstance(value, str) or not value:
            raise UsageError(f"config {path}: tls.{key} must be a file path")
    return {TLS_KEYS[key]: value for key, value in table.items()}


def tls_context(conf: dict[str, Any]) -> Any:
    """The gateway's ssl.SSLContext from the settings, None without TLS (UsageError if half set)."""
    from carriers.tcp import server_context

    cert, key, client_ca = conf["tls_cert"], conf["tls_key"], conf["tls_client_ca"]
    if not cert and not key:
        if client_ca:
            raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not cert or not key:
        raise UsageError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
    try:
        return server_context(cert, key, client_ca)
    except SigError as exc:
        raise UsageError(str(exc)) from exc


def _limits(path: str, table: Any) -> Any:
    """``[limits]`` of the config as a sig.Limits (per-link limits, PROTOCOL.md section 4)."""
    from dataclasses import fields

    from sig.core.gateway import Limits

    known = {f.name for f in fields(Limits)}
    if not isinstance(table, dict) or not set(table) <= known:
        raise UsageError(f"config {path}: [limits] takes only {', '.join(sorted(known))}")
    for key, value in table.items():
        if type(value) is not int or value < 1:
            raise UsageError(f"config {path}: limits.{key} must be an integer >= 1")
    return Limits(**table)


def _retained_table(path: str, table: Any) -> dict[str, Any]:
    """``[retained] path = "retained.db"`` (relative to the config): the values on disk."""
    if not isinstance(table, dict) or set(table) - {"path"}:
        raise UsageError(f'config {path}: [retained] takes one key, path = "retained.db"')
    where = table.get("path")
    if where is None:
        return {}
    if not isinstance(where, str) or not where:
        raise UsageError(f"config {path}: [retained] path must be a file path")
    return {"retain_db": str(Path(path).parent / where)}


def open_retain_db(router: Any, where: str | None) -> Any:
    """The gateway's retained values on disk, loaded (None: off); UsageError if unusable."""
    if where is None:
        return None
    import sqlite3

    from sig.routers.retained_db import RetainedDb

    db = RetainedDb(where, router.core.retained)
    try:
        db.open()
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"--retain-db {where}: {exc}") from exc
    return db


def _access(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """``[acl]`` as a sig.core.acl.Policy, and ``[auth] state`` (relative to the config).

    Without ``[auth] state`` the owned names go next to the users file or the
    config (:func:`state_path`).
    """
    from sig.core.acl import AclConfigError, Policy

    out: dict[str, Any] = {}
    if "acl" in doc:
        try:
            out["acl"] = Policy.from_table(doc["acl"])
        except AclConfigError as exc:
            raise UsageError(f"config {path}: {exc}") from exc
    auth = doc.get("auth", {})
    state = auth.get("state") if isinstance(auth, dict) else None
    if state is not None and (not isinstance(state, str) or not state):
        raise UsageError(f'config {path}: [auth] state must be a file path, e.g. "sig-state.json"')
    if state is not None:
        out["state"] = str(Path(path).parent / state)
    return out


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then command-line flags (flags win)."""
    merged = dict(DEFAULTS)
    merged.update(load_config(args.config))
    merged["config_path"] = getattr(args, "config", None)  # read again on SIGHUP
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None and value != []:
            merged[key] = value
    if merged["timer_interval"] is not None and float(merged["timer_interval"]) <= 0:
        raise UsageError("--timer-interval must be positive")
    if merged["log_format"] not in LOG_FORMATS:
        raise UsageError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    try:
        merged["loop"] = resolve_loop(merged["loop"])  # what "auto" means on this install
    except SigError as exc:
        raise UsageError(f"--loop / [gateway] {exc}") from None
    for key, (kind, least) in GATEWAY_LIMITS.items():
        value = merged[key]
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{flag} / {key} must be a number, not {value!r}")
        if kind is int and value != int(value):
            raise UsageError(f"{flag} / {key} must be a whole number, not {value!r}")
        if value < least:
            raise UsageError(f"{flag} / {key} must be at least {least:g}, not {value!r}")
        merged[key] = kind(value)
    return merged


# --- sig serve --------------------------------------------------------------


async def serve(conf: dict[str, Any], ready: Any = None) -> int:
    from sig.routers.gateway import (
        FDS_PER_SERIAL_PORT,
        ExposedError,
        ServerRouter,
        default_max_connections,
    )

    ports: list[Any] = []
    if conf["serial"]:
        from sig.routers.serial import SerialSpecError, parse_specs

        try:
            ports = parse_specs(conf["serial"])  # a bad spec is reported before anything opens
        except SerialSpecError as exc:
            print(f"sig serve: {exc}", file=sys.stderr)
            return 2
    max_connections = conf["max_connections"] or default_max_connections(
        FDS_PER_SERIAL_PORT * len(conf["serial"])
    )
    try:
        tls = tls_context(conf)
        _check_mqtt(conf)
    except (UsageError, SigError) as exc:
        print(f"sig serve: {exc}", file=sys.stderr)
        return 2
    router = ServerRouter(
        conf["host"],
        int(conf["port"]),
        name=conf["name"],
        tls=tls,
        request_timeout=float(conf["request_timeout"]),
        limits=conf["limits"],
        max_connections=max_connections,
        hello_timeout=conf["hello_timeout"],
        tcp_keepalive=conf["tcp_keepalive"],
        stall_timeout=conf["stall_timeout"],
        high_water=conf["high_water"],
        max_queued=conf["max_queued"],
        serial_name_grace=conf["serial_name_grace"],
        **_auth_options(conf),
    )
    problem = _apply_access(router, conf)
    if problem is not None:
        print(f"sig serve: {problem}", file=sys.stderr)
        return 2
    try:
        retain_db = open_retain_db(router, conf["retain_db"])
    except UsageError as exc:
        print(f"sig serve: {exc}", file=sys.stderr)
        return 2
    try:
        await router.start()
    except ExposedError as exc:
        print(f"sig serve: {exc}", file=sys.stderr)
        return 2
    except ConnectError as exc:
        print(f"sig serve: cannot listen on {conf['host']}:{conf['port']}: {exc}", file=sys.stderr)
        return 2
    http = await _start_http(router, conf["http"], allow_anonymous=bool(conf["allow_anonymous"]))
    if http is False:
        await router.stop()
        return 2
    bridge = _start_mqtt(router, conf)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig_no in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig_no, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):  # no SIGHUP on Windows
        loop.add_signal_handler(signal.SIGHUP, router.reload_security)
    if conf["serial"]:
        from sig.routers.serial import open_serial_links

        await open_serial_links(router, conf["serial"])
    if conf["timer"]:
        router.spawn(
            demo_timer(
                router, conf["timer_name"], conf["timer_event"], float(conf["timer_interval"])
            ),
            "sig-demo-timer",
        )
    advertiser = None
    if conf["discovery"]:
        from sig.routers.discovery import Advertiser

        advertiser = Advertiser(
            conf["name"], router.port, router.listen_addresses(), tls=tls is not None
        )
        await advertiser.start()  # never raises: one log line when it cannot
    else:
        logger.info("discovery: off (--no-discovery or [discovery] enabled = false)")
    logger.info("event loop: %s", conf.get("loop", "asyncio"))
    print(banner(conf, router.port, ports, http, advertiser), flush=True)
    await stop.wait()
    logger.info("shutting down")
    if bridge is not None:
        await bridge.stop()
    if http:
        await http.stop()
    if advertiser is not None:
        await advertiser.stop()
    await router.stop()
    if retain_db is not None:
        retain_db.close()  # every value is stale now: written last
    return 0


def _check_mqtt(conf: dict[str, Any]) -> None:
    """Raise MqttConfigError for a bad ``--mqtt`` / ``[mqtt]`` (before anything opens)."""
    if conf.get("mqtt") is not None or conf.get("mqtt_url") is not None:
        from sig import mqtt

        mqtt.bridge_config(conf)


def _start_mqtt(router: Any, conf: dict[str, Any]) -> Any:
    """The MQTT bridge (``--mqtt`` / ``[mqtt]``), started; None when off. Checked before."""
    from sig import mqtt

    config = mqtt.bridge_config(conf)
    return None if config is None else mqtt.start(router.core, config)


def _auth_options(conf: dict[str, Any]) -> dict[str, Any]:
    """The ServerRouter options of the ``[auth]`` settings (and ``--users``)."""
    return {
        "users": conf["users"],
        "allow_anonymous": bool(conf["allow_anonymous"]),
        "tls_principal": conf["tls_principal"],
    }


def _apply_access(router: Any, conf: dict[str, Any]) -> str | None:
    """Install the ACLs, the owned names' state file and their SIGHUP reload on ``router``.

    Returns what stops the start (an unreadable state file), or None.
    """
    from sig.routers.claims_file import StateFileError, open_claims

    access = router.core.access
    if conf.get("acl") is not None:
        access.install(conf["acl"])
    state = state_path(conf)
    if state is not None:
        try:
            access.use_claims(open_claims(state))
        except StateFileError as exc:
            return str(exc)
    if conf.get("config_path"):
        router.acl_reloader = lambda: reload_acl(conf["config_path"])
    return None


def state_path(conf: dict[str, Any]) -> Path | None:
    """Where the owned names are kept: ``[auth] state``, else sig-state.json next to
    the users file, else next to the config; None (memory only) without either.

    The file is written only when a name is first claimed.
    """
    from sig.routers.claims_file import DEFAULT_STATE_NAME

    if conf.get("state"):
        return Path(conf["state"])
    beside = conf.get("users") or conf.get("config_path")
    return Path(beside).parent / DEFAULT_STATE_NAME if beside else None


def reload_acl(path: str) -> Any:
    """The ``[acl]`` of the config at ``path`` again (SIGHUP); None if it cannot be used.

    A config that no longer reads or parses keeps the ACLs in force (logged):
    a typo must not open the gateway, nor lock everyone out.
    """
    from sig.core.acl import OPEN

    try:
        conf = load_config(path)
    except UsageError as exc:
        logger.error("SIGHUP: keeping the ACLs in force: %s", exc)
        return None
    policy = conf.get("acl") or OPEN
    logger.info("SIGHUP: ACLs reloaded from %s (%s)", path, describe_acl(policy))
    return policy


def describe_acl(policy: Any) -> str:
    """One line on the ACLs in force, for the banner and the reload log."""
    if policy is None or not policy.configured:
        return "off (no [acl]: everything allowed)"
    anonymous = "anonymous allowed some" if policy.anonymous else "anonymous denied"
    return f"{len(policy.users)} user(s), {len(policy.devices)} device(s), {anonymous}"


def banner(conf: dict[str, Any], port: int, ports: list[Any], http: Any, advertiser: Any) -> str:
    """What ``sig serve`` prints once it runs: where, with or without TLS, what else.

    One block on stdout, printed at once; its first line is the one scripts
    wait for (``listening on HOST:PORT``). Logs go to stderr.
    """
    serial = ", ".join(f"{printable(p.port)} at {p.baud} baud" for p in ports) or "none"
    if advertiser is None:
        discovery = "off"
    elif advertiser.addresses:
        discovery = f"on, _sig._tcp on {', '.join(advertiser.addresses)}"
    else:
        discovery = "on, but nothing to advertise (loopback only, or no LAN address)"
    if not conf.get("tls_cert"):
        tls = "no TLS (plain TCP)"
    elif conf.get("tls_client_ca"):
        tls = f"on, mutual: client certificates signed by {printable(conf['tls_client_ca'])}"
    else:
        tls = f"on, certificate {printable(conf['tls_cert'])}"
    rows = [
        ("tls", tls),
        ("serial", serial),
        ("http", f"{http.url} (status page, /metrics, /healthz)" if http else "off"),
        ("discovery", discovery),
        ("users", _users_row(conf)),
        ("acl", describe_acl(conf.get("acl"))),
        ("mqtt", _mqtt_row(conf)),
    ]
    head = f"sig gateway '{printable(conf['name'])}' listening on {conf['host']}:{port}"
    return "\n".join([head, *(f"  {k:<10} {v}" for k, v in rows)])


def _mqtt_row(conf: dict[str, Any]) -> str:
    """The banner's mqtt line: the broker and this gateway's id there, or off."""
    from sig import mqtt

    config = mqtt.bridge_config(conf)
    if config is None:
        return "off"
    return f"{config.url} as {printable(config.gateway_id)}, topics {printable(config.prefix)}/..."


def _users_row(conf: dict[str, Any]) -> str:
    """The banner's users line: who may open a session."""
    if not conf["users"]:
        return "none (every client is anonymous)"
    anonymous = "anonymous allowed" if conf["allow_anonymous"] else "no anonymous"
    return f"{printable(conf['users'])} ({anonymous}; SIGHUP reloads)"


async def _start_http(router: Any, bind: str | None, *, allow_anonymous: bool = False) -> Any:
    """The HTTP side on ``bind`` ("HOST:PORT"), None when off, False if it cannot start.

    The HTTP side has no login, and in-process code is trusted (it sends
    requests as the gateway, past users and ACLs): beyond loopback it needs
    ``--allow-anonymous``, like the TCP port without users.
    """
    if not bind:
        return None
    from sig.routers.http import HttpBindError, HttpSide, is_loopback, parse_bind

    try:
        host, port = parse_bind(bind)
        if not is_loopback(host) and not allow_anonymous:
            raise HttpBindError(
                f"--http {bind}: the status page has no login and acts as the gateway (past "
                "users and ACLs); keep it on 127.0.0.1 (reach it through an SSH tunnel) or "
                "pass --allow-anonymous"
            )
        http = HttpSide(router, host, port)
        await http.start()
    except HttpBindError as exc:
        print(f"sig serve: {exc}", file=sys.stderr)
        return False
    return http


async def demo_timer(router: Any, name: str, event: str, interval: float) -> None:
    """The seed's demo sender: ``timer`` triggers ``tick`` with a count every interval."""
    ticks = 0
    sender = router.add_sender(name, [event], {"get_ticks": lambda params: ticks})
    while True:
        await asyncio.sleep(interval)
        ticks += 1
        sender.trigger(event, ticks)
