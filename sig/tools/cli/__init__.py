"""The ``sig`` command: run a gateway, or talk to one from the shell.

Every command prints one clear line and exits non-zero on failure:
1 when the gateway is unreachable or a request fails, 2 for bad usage or
a gateway that cannot start (port in use, bad address, bad config), 3 when
``sig listen --timeout`` ends before ``--count`` events.

Everything printed that came from the network (names, counters, error
messages, log lines) goes through :func:`printable`, so a peer cannot move the
terminal's cursor, recolour it or forge an output line; ``--json`` output,
``--log-format json`` and ``sig listen`` are JSON with ``ensure_ascii``, which
escapes the same.

The commands live in ``_serve`` (the gateway and its settings), ``_show``
(the client commands and their tables) and ``_top`` (the live view).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from sig.errors import ConnectError, RequestError, SigError, UsersFileError
from sig.logs import PrintableFormatter, RepeatFilter, printable, setup
from sig.protocol.constants import DEFAULT_PORT
from sig.routers import loops
from sig.tools.cli._passwd import NO_PASSWORD_FLAG, PASSWORD_ENV, cmd_passwd
from sig.tools.cli._passwd import add_parser as add_passwd_parser
from sig.tools.cli._serve import (
    DEFAULTS,
    GATEWAY_LIMITS,
    LOG_FORMATS,
    UsageError,
    demo_timer,
    load_config,
    serve,
    settings,
)
from sig.tools.cli._show import (
    cmd_links,
    cmd_listen,
    cmd_request,
    cmd_send,
    cmd_senders,
    links_footer,
)
from sig.tools.cli._top import cmd_top

__all__ = [
    "DEFAULTS",
    "GATEWAY_LIMITS",
    "PrintableFormatter",
    "UsageError",
    "build_parser",
    "demo_timer",
    "links_footer",
    "load_config",
    "main",
    "printable",
    "serve",
    "settings",
]


def version() -> str:
    """The installed package's version (``sig --version``)."""
    try:
        return metadata.version("sig-gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


# --- argument parsing -------------------------------------------------------


def add_login_options(p: argparse.ArgumentParser) -> None:
    """``--user`` and ``--password-stdin`` of a client command (the password: README, Users)."""
    p.add_argument(
        "--user",
        metavar="NAME",
        help=f"log in as NAME; the password comes from --password-stdin, ${PASSWORD_ENV}"
        f" or a prompt ({NO_PASSWORD_FLAG})",
    )
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password of --user from the first line of stdin",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sig",
        description="Run a sig gateway, or talk to one from the shell.",
        epilog="exit status: 0 ok, 1 gateway unreachable or request failed,"
        " 2 bad usage or config, 3 sig listen --timeout before --count events",
    )
    parser.add_argument("--version", action="version", version=f"sig {version()}")
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log lines on stderr as text (default) or one JSON object per line",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_p = sub.add_parser(
        "serve", help="run the gateway (TCP, serial ports, demo timer)", parents=[logs]
    )
    serve_p.add_argument("--config", help="TOML config file; flags win over it")
    serve_p.add_argument(
        "--host",
        help="address to listen on (default 127.0.0.1; any other needs users or --allow-anonymous)",
    )
    serve_p.add_argument("--port", type=int, help=f"TCP port (default {DEFAULT_PORT})")
    serve_p.add_argument("--name", help="gateway name sent to peers")
    serve_p.add_argument("--request-timeout", type=float, help="seconds (default 10)")
    serve_p.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="PATH[:BAUD]",
        help="serial port to open (repeatable; default baud 115200)",
    )
    serve_p.add_argument("--timer-name", help="demo sender name (default timer)")
    serve_p.add_argument("--timer-event", help="demo event name (default tick)")
    serve_p.add_argument("--timer-interval", type=float, help="seconds between ticks (default 5)")
    serve_p.add_argument(
        "--no-timer",
        dest="timer",
        action="store_const",
        const=False,
        help="do not run the demo sender",
    )
    serve_p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve_p.add_argument(
        "--loop",
        choices=loops.LOOPS,
        help="event loop: asyncio (default), uvloop (the fast extra), auto (uvloop if installed)",
    )
    serve_p.add_argument(
        "--no-discovery",
        dest="discovery",
        action="store_const",
        const=False,
        help="do not advertise the gateway on the LAN (mDNS _sig._tcp)",
    )
    serve_p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the status page, /metrics and /healthz there (default: off)",
    )
    serve_p.add_argument(
        "--max-connections",
        type=int,
        help="TCP connections at most (default: RLIMIT_NOFILE minus a reserve)",
    )
    serve_p.add_argument(
        "--hello-timeout", type=float, help="seconds a TCP peer has to send HELLO (default 10)"
    )
    serve_p.add_argument(
        "--tcp-keepalive",
        type=float,
        help="keepalive (s) for TCP peers that ask for none; 0 = none (default 10)",
    )
    serve_p.add_argument(
        "--stall-timeout",
        type=float,
        help="seconds a link may take nothing of its queue before it is closed (default 30)",
    )
    serve_p.add_argument(
        "--high-water", type=int, help="bytes queued to a link before its events drop (1 MiB)"
    )
    serve_p.add_argument(
        "--serial-name-grace",
        type=float,
        metavar="SECONDS",
        help="how long a quiet serial device's sender names stay reserved for its port"
        " (default: twice its link timeout; 0 = not at all)",
    )
    serve_p.add_argument(
        "--users",
        metavar="FILE",
        help="users file (sig passwd): clients must log in; SIGHUP reloads it",
    )
    serve_p.add_argument(
        "--allow-anonymous",
        action="store_const",
        const=True,
        help="let clients in without a login: beside --users, and on an address that is"
        " not loopback (which logs a warning)",
    )
    serve_p.add_argument(
        "--mqtt", dest="mqtt_url", metavar="URL",
        help="join the MQTT broker at mqtt://[user:pass@]host[:port] (or mqtts://): BRIDGE.md",
    )  # fmt: skip
    serve_p.add_argument("--mqtt-client-id", help="MQTT client id (default sig-GATEWAY_ID)")
    serve_p.add_argument("--mqtt-prefix", help="first level of the bridge's topics (default sig)")
    serve_p.add_argument("--mqtt-id", help="this gateway's id on the broker (default HOST-NAME)")
    serve_p.add_argument("--mqtt-keepalive", type=int, help="MQTT keepalive, seconds (default 30)")
    serve_p.add_argument("--tls-cert", metavar="PEM", help="TLS: the gateway's certificate chain")
    serve_p.add_argument("--tls-key", metavar="PEM", help="TLS: the certificate's private key")
    serve_p.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="mutual TLS: accept only clients with a certificate this CA signed",
    )
    serve_p.add_argument(
        "--retain-db",
        metavar="PATH",
        help="keep retained values in this sqlite3 file across restarts (default: memory only)",
    )
    serve_p.add_argument(
        "--max-queued",
        type=int,
        help="bytes queued to a link before the gateway stops reading it (1.25 MiB)",
    )

    def client_parser(
        name: str, help_text: str, timeout: str = "seconds to connect and to wait (default 5)"
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, parents=[logs])
        p.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
        p.add_argument(
            "--port", type=int, default=DEFAULT_PORT, help="gateway port (default %(default)s)"
        )
        p.add_argument("--timeout", type=float, help=timeout)
        p.add_argument(
            "--tls", action="store_true", help="connect over TLS (the system's CAs, host checked)"
        )
        p.add_argument(
            "--cafile", metavar="PEM", help="TLS, trusting this CA's certificates (implies --tls)"
        )
        p.add_argument(
            "--log-level", choices=["debug", "info", "warning", "error"], default="warning"
        )
        add_login_options(p)
        return p

    listen_p = client_parser(
        "listen",
        "print one JSON line per event",
        "stop after SECONDS; with --count, exit 3 if fewer events came (default: no limit)",
    )
    listen_p.add_argument(
        "--discover",
        action="store_true",
        help="connect to the first gateway found on the LAN (mDNS) instead of --host/--port",
    )
    listen_p.add_argument("--sender", help="only this sender (default: any)")
    listen_p.add_argument("--event", help="only this event (default: any)")
    listen_p.add_argument("--count", type=int, default=0, help="exit (status 0) after N events")
    listen_p.add_argument(
        "--policy",
        choices=("drop", "latest", "block"),
        default="drop",
        help="while this listener is behind: drop events (default), keep the latest value"
        " per sender and event, or block the TCP senders until it catches up",
    )
    listen_p.add_argument(
        "--no-local", action="store_true", help="not the events of this client's own link"
    )
    listen_p.add_argument("--json", action="store_true", help="the default: one JSON line each")

    send_p = client_parser("send", "register SENDER for a moment and trigger EVENT once")
    send_p.add_argument("sender")
    send_p.add_argument("event")
    send_p.add_argument("data", nargs="?", help="JSON data (default: none)")
    send_p.add_argument(
        "--retain",
        action="store_true",
        help="the gateway keeps the value for later listeners (stale once sig send is gone)",
    )

    request_p = client_parser("request", "call METHOD of SENDER and print the JSON result")
    request_p.add_argument("sender")
    request_p.add_argument("method")
    request_p.add_argument("params", nargs="?", help="JSON params (default: none)")
    request_p.add_argument("--json", action="store_true", help="the default: the result as JSON")

    senders_p = client_parser("senders", "list connected senders")
    senders_p.add_argument("--json", action="store_true", help="a JSON map of senders")
    links_p = client_parser("links", "list the gateway's links with their counters")
    links_p.add_argument("--json", action="store_true", help="a JSON list, every counter")
    links_p.add_argument(
        "-a", "--all", action="store_true", help="every counter in NOTES, not only the notable"
    )
    top_p = client_parser("top", "live rates per link and per sender, redrawn in place")
    top_p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls (default 1)"
    )
    top_p.add_argument(
        "--iterations", type=int, default=0, help="stop after N polls (default: until Ctrl-C)"
    )
    top_p.add_argument("--json", action="store_true", help="one JSON object per poll, no screen")

    add_passwd_parser(sub)
    sim_p = sub.add_parser("device-sim", help="emulate a UART device (see PROTOCOL.md)")
    sim_p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


COMMANDS = {
    "listen": cmd_listen,
    "send": cmd_send,
    "request": cmd_request,
    "senders": cmd_senders,
    "links": cmd_links,
    "top": cmd_top,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["device-sim"]:  # argparse's REMAINDER drops a leading --option
        from sig.tools.device_sim import main as sim_main

        return int(sim_main(argv[1:]))
    args = build_parser().parse_args(argv)
    command = args.command
    repeat: RepeatFilter | None = None
    try:
        if command == "serve":
            conf = settings(args)
            repeat = setup(
                str(conf["log_level"]).upper(),
                conf["log_format"],
                "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
            )
            return loops.run(serve(conf), conf["loop"])
        if command == "passwd":
            return cmd_passwd(args)
        if command == "device-sim":
            from sig.tools.device_sim import main as sim_main

            return int(sim_main(args.rest))
        if getattr(args, "interval", 1.0) <= 0:
            raise UsageError("--interval must be positive")
        repeat = setup(
            args.log_level.upper(), args.log_format or "text", "sig %(levelname)s: %(message)s"
        )
        return asyncio.run(COMMANDS[command](args))
    except (UsageError, UsersFileError) as exc:  # a bad users file is bad config
        print(f"sig {command}: {printable(exc)}", file=sys.stderr)
        return 2
    except ConnectError as exc:
        where = "on the LAN" if getattr(args, "discover", False) else f"at {args.host}:{args.port}"
        print(f"sig {command}: cannot reach the gateway {where}: {printable(exc)}", file=sys.stderr)
        return 1
    except RequestError as exc:  # the message is the handler's or gateway's text
        print(f"sig {command}: {type(exc).__name__}: {printable(exc)}", file=sys.stderr)
        return 1
    except SigError as exc:
        print(f"sig {command}: {type(exc).__name__}: {printable(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if repeat is not None:
            repeat.flush()  # what was held back is counted, even at exit
            logging.shutdown()
