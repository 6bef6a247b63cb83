"""The ``sig`` command line, run as separate processes against ``sig serve``."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from presence import plain
from procs import Gateway, Peer, Proc, run_sig, wait_until

T = 20.0



def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway(0, "--timer-interval", "0.1")
    yield gw
    assert gw.stop() == 0


@pytest.fixture
def bound_port() -> Iterator[int]:
    """A port that is taken (bound and listening) for the test's duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_listen_prints_json_lines(gateway: Gateway) -> None:
    r = run_sig("listen", "--port", str(gateway.port), "--sender", "timer", "--count", "3")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 3
    assert all(set(x) == {"time", "sender", "event", "data"} for x in lines)
    assert [(x["sender"], x["event"]) for x in lines] == [("timer", "tick")] * 3
    assert [x["data"] - lines[0]["data"] for x in lines] == [0, 1, 2]


def test_send_reaches_a_listener(gateway: Gateway) -> None:
    port = str(gateway.port)
    watch = Proc([sys.executable, "-m", "sig", "listen", "--port", port,
                  "--sender", "cli-s", "--count", "3"])  # fmt: skip
    try:

        def listening() -> bool:
            links = json.loads(run_sig("links", "--port", port, "--json").stdout)
            return any(x["peer"] == "sig-listen" and x["listeners"] for x in links)

        wait_until(listening, what="sig listen registered")
        r = run_sig("send", "--port", port, "cli-s", "ev", '{"a": [1, 2.5, "x"]}')
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        assert watch.wait(T) == 0
        got = [(x["event"], x["data"]) for x in map(json.loads, watch.lines)]
        assert plain(got) == [
            ("#connect", {"events": ["ev"], "requests": []}),
            ("ev", {"a": [1, 2.5, "x"]}),
            ("#disconnect", {"events": ["ev"], "requests": []}),
        ]
    finally:
        watch.kill()


def test_request_result_and_failures(gateway: Gateway) -> None:
    port = str(gateway.port)
    r = run_sig("request", "--port", port, "timer", "get_ticks")
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), int), r
    r = run_sig("request", "--port", port, "$gateway", "stats")
    assert r.returncode == 0 and json.loads(r.stdout)["senders"] >= 1
    r = run_sig("request", "--port", port, "nobody", "x")
    assert r.returncode == 1 and r.stdout == ""
    assert "NoSuchSender" in one_line(r.stderr)
    r = run_sig("request", "--port", port, "timer", "nope")
    assert r.returncode == 1 and "NoSuchMethod" in one_line(r.stderr)
    r = run_sig("request", "--port", port, "timer", "get_ticks", "{not json")
    assert r.returncode == 2 and "not valid JSON" in one_line(r.stderr)


def header_columns(header: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of every column title of a table's header line."""
    return [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", header)]


def parse_table(text: str, right: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of an aligned table as dicts, checking that every cell sits in its column.

    A left-aligned cell starts where its title starts; a right-aligned (number)
    cell ends where its title ends. Cells hold no spaces in these tests.
    """
    lines = text.splitlines()
    cols = header_columns(lines[0])
    rows = []
    for line in lines[1:]:
        row = {}
        for i, (name, start, end) in enumerate(cols):
            last = i == len(cols) - 1
            if name in right:
                cell = line[:end].rsplit(" ", 1)[-1]
                assert line[end : end + 1] in ("", " "), (name, line)
            else:
                cell = line[start:].split(" ", 1)[0] if not last else line[start:]
                assert start == 0 or line[start - 1 : start] in ("", " "), (name, line)
                assert cell or last, (name, line)  # only the last column may be empty
            row[name] = cell
        rows.append(row)
    return rows


def test_senders_table_and_json(gateway: Gateway) -> None:
    r = run_sig("senders", "--port", str(gateway.port))
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert [c[0] for c in header_columns(lines[0])] == ["SENDER", "LINK", "EVENTS", "REQUESTS"]
    rows = parse_table(r.stdout)
    assert {"SENDER": "timer", "LINK": "local", "EVENTS": "tick", "REQUESTS": "get_ticks"} in rows
    assert [x["SENDER"] for x in rows] == sorted(x["SENDER"] for x in rows)
    assert all(len(x) <= 80 for x in lines), lines
    r = run_sig("senders", "--port", str(gateway.port), "--json")
    assert json.loads(r.stdout)["timer"] == {
        "events": ["tick"],
        "requests": ["get_ticks"],
        "link": "local",
    }


LINK_HEADER = ["LINK", "STATE", "PEER", "SENDERS", "IN", "OUT", "ERR", "DROP", "NOTES"]
NUMBERS = ("IN", "OUT", "ERR", "DROP")


def test_links_table_columns_alignment_and_footer(gateway: Gateway) -> None:
    import sig

    port = str(gateway.port)
    with sig.ClientRouter(port=gateway.port, name="cli-peer") as client:
        client.add_sender("s-one", ["e"])
        client.add_sender("s-two", ["e"])
        r = run_sig("links", "--port", port)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert [c[0] for c in header_columns(lines[0])] == LINK_HEADER
        assert lines[-1].startswith("gateway: ") and "loop lag" in lines[-1]
        assert "closed:" in lines[-1] and "tcp connections" in lines[-1]
        rows = parse_table("\n".join(lines[:-1]), NUMBERS)
        mine = next(x for x in rows if x["PEER"] == "cli-peer")
        assert mine["LINK"].startswith("tcp:127.0.0.1:") and mine["STATE"] == "open"
        assert mine["SENDERS"] == "s-one,s-two"
        assert all(x[k].isdigit() for x in rows for k in NUMBERS), rows
        assert int(mine["IN"]) >= 3 and mine["ERR"] == "0"  # HELLO + 2 senders
        assert all(len(x) <= 80 for x in lines[:-1]), lines  # the table fits 80 columns
        # --all: every other counter of the row in NOTES, as key=value
        r = run_sig("links", "--port", port, "--all")
        mine_line = next(x for x in r.stdout.splitlines() if "cli-peer" in x)
        for key in ("bytes_in=", "bytes_out=", "crc_errors=0", "framing_errors=0", "triggers="):
            assert key in mine_line, mine_line
        links = json.loads(run_sig("links", "--port", port, "--json").stdout)
        assert isinstance(links, list) and all({"link", "state", "peer"} <= set(x) for x in links)


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    r = run_sig("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sig {version('sig-gateway')}", r


def test_json_on_every_command_that_prints_data(gateway: Gateway) -> None:
    port = str(gateway.port)
    for argv in (["senders"], ["links"], ["request", "timer", "get_ticks"],
                 ["request", "$gateway", "stats"]):  # fmt: skip
        r = run_sig(argv[0], "--port", port, *argv[1:], "--json")
        assert r.returncode == 0, r.stderr
        json.loads(r.stdout)
    r = run_sig("listen", "--port", port, "--sender", "timer", "--count", "2", "--json")
    assert r.returncode == 0 and [json.loads(x)["sender"] for x in r.stdout.splitlines()] == [
        "timer",
        "timer",
    ]
    r = run_sig("top", "--port", port, "--json", "--iterations", "2", "--interval", "0.05")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(x) for x in r.stdout.splitlines()]
    assert [f["poll"] for f in frames] == [1, 2]
    assert frames[0]["interval"] is None and frames[1]["interval"] > 0
    timer = next(x for x in frames[1]["senders"] if x["sender"] == "timer")
    assert timer["link"] == "local" and timer["events_per_s"] is not None


def test_listen_count_and_timeout_exit_status(gateway: Gateway) -> None:
    port = str(gateway.port)
    r = run_sig("listen", "--port", port, "--sender", "timer", "--count", "2", "--timeout", "15")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r
    r = run_sig("listen", "--port", port, "--sender", "nobody", "--count", "1",
                "--timeout", "0.3")  # fmt: skip
    assert r.returncode == 3 and r.stdout == "", r
    assert "timed out after 0.3 s with 0 of 1 events" in one_line(r.stderr)
    # without --count, --timeout is just how long to listen
    r = run_sig("listen", "--port", port, "--sender", "nobody", "--timeout", "0.2")
    assert r.returncode == 0 and r.stdout == "", r


def test_serve_banner_and_json_logs() -> None:
    gw = Proc([sys.executable, "-m", "sig", "serve", "--host", "127.0.0.1", "--port", "0",
               "--no-timer", "--no-discovery", "--http", "127.0.0.1:0",
               "--serial", "/nonexistent/sig-tty:57600", "--log-format", "json",
               "--log-level", "debug"])  # fmt: skip
    try:
        first = gw.wait_line(lambda s: "listening on" in s)
        assert first.startswith("sig gateway 'sig-gateway' listening on 127.0.0.1:")
        gw.wait_line(lambda s: s.startswith("  discovery"))
        banner = dict(x.split(None, 1) for x in gw.lines[1:5])
        http = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/ \(status page, /metrics, /healthz\)",
                            banner.pop("http"))  # fmt: skip
        assert http is not None and int(http.group(1)) > 0, gw.lines
        assert banner == {
            "tls": "no TLS (plain TCP)",
            "serial": "/nonexistent/sig-tty at 57600 baud",
            "discovery": "off",
        }
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
        logs = [json.loads(x) for x in gw.err_lines]  # every stderr line is one JSON object
        assert logs and all({"time", "level", "logger", "message"} <= set(x) for x in logs)
        assert any(
            x["logger"] == "sig.routers.serial" and "cannot open" in x["message"] for x in logs
        ), logs
        assert any(x["message"] == "gateway stopped" for x in logs)
    finally:
        gw.kill()


def test_serial_name_grace_flag_and_config(tmp_path: Path) -> None:
    from sig.tools.cli import build_parser, settings

    parser = build_parser()
    assert settings(parser.parse_args(["serve"]))["serial_name_grace"] is None
    config = tmp_path / "sig.toml"
    config.write_text('[gateway]\nserial_name_grace = 3.5\nlog_format = "json"\n')
    conf = settings(parser.parse_args(["serve", "--config", str(config)]))
    assert conf["serial_name_grace"] == 3.5 and conf["log_format"] == "json"
    conf = settings(
        parser.parse_args(["serve", "--config", str(config), "--serial-name-grace", "0"])
    )
    assert conf["serial_name_grace"] == 0
    r = run_sig("serve", "--serial-name-grace", "-1")
    assert r.returncode == 2 and "serial_name_grace must be at least 0" in one_line(r.stderr)


@pytest.mark.parametrize("command", [["listen"], ["send", "a", "b"], ["request", "a", "b"],
                                     ["senders"], ["links"]])  # fmt: skip
def test_unreachable_gateway_is_one_line_and_exit_1(free_port: int, command: list[str]) -> None:
    r = run_sig(command[0], "--port", str(free_port), *command[1:])
    assert r.returncode == 1, r
    assert "cannot reach the gateway" in one_line(r.stderr)
    assert "Connection refused" in r.stderr


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(bound_port: int) -> None:
    r = run_sig("serve", "--host", "127.0.0.1", "--port", str(bound_port))
    assert r.returncode == 2
    assert "address already in use" in one_line(r.stderr)


def test_serve_on_a_bad_address_is_one_line_and_exit_2() -> None:
    r = run_sig("serve", "--host", "256.0.0.1", "--port", "0")
    assert r.returncode == 2
    assert "bad address" in one_line(r.stderr)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_on_signal_and_clients_see_it(signo: int) -> None:
    gw = Gateway(0, "--timer-interval", "60")
    peer = Peer(gw.port, "watcher")
    try:
        peer.call("listen", tag="d", sender=None, event="#disconnect")
        mark = peer.mark()
        gw.signal(signo)
        assert gw.wait() == 0, gw.stderr_text()
        # The gateway's own sender goes away first, then the connection closes.
        assert plain(peer.wait_event("d", "#disconnect", "timer")["data"]) == {
            "events": ["tick"],
            "requests": ["get_ticks"],
        }
        peer.wait_msg(lambda m: m.get("ev") == "disconnected", start=mark)
        assert "Traceback" not in gw.stderr_text()
    finally:
        peer.close()
        gw.kill()


def test_config_file_with_flags_winning(tmp_path: Path, bound_port: int) -> None:
    config = tmp_path / "sig.toml"
    config.write_text(
        f"""
[gateway]
host = "127.0.0.1"
port = {bound_port}  # taken: if the file won over --port, serve would fail
name = "cfg-gw"

[timer]
name = "cfgtimer"
event = "cfgev"
interval = 60.0
"""
    )
    gw = Proc([sys.executable, "-m", "sig", "serve", "--config", str(config),
               "--port", "0", "--timer-event", "flagev"])  # fmt: skip
    try:
        line = gw.wait_line(lambda s: "listening on" in s)
        assert "'cfg-gw'" in line and "127.0.0.1:" in line
        port = line.rsplit(":", 1)[1]
        assert int(port) != bound_port
        senders = json.loads(run_sig("senders", "--port", port, "--json").stdout)
        assert senders == {
            "cfgtimer": {"events": ["flagev"], "requests": ["get_ticks"], "link": "local"}
        }
        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
    finally:
        gw.kill()


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nport = 1")
    r = run_sig("serve", "--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in one_line(r.stderr)
    r = run_sig("serve", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "cannot read config" in one_line(r.stderr)


# --- terminal safety: nothing from the network reaches the terminal raw ---------

#: Printable-looking but not printable: right-to-left override, line separator,
#: zero-width space. Names may hold them (PROTOCOL.md 2); the CLI escapes them.
EVIL = "evil\u202egpj.exe"
EVIL_EVENT = "a\u2028events: unlock"
EVIL_METHOD = "m\u200bx"
RAW = ("\u202e", "\u2028", "\u200b", "\x1b", "\n")


def all_printable(text: str) -> bool:
    return all(line.isprintable() for line in text.splitlines()) and not any(
        c in text.replace("\n", "") for c in RAW
    )


def test_printable_escapes_and_cannot_be_faked() -> None:
    from sig.tools.cli import printable

    assert printable("sensor1 Küche °C") == "sensor1 Küche °C"
    assert printable("a\x1b[2J\nevents: unlock\r\t\x00\x7f\x9b") == (
        "a\\x1b[2J\\nevents: unlock\\r\\t\\x00\\x7f\\x9b"
    )
    assert printable("x\u202ey\u2028z\U000e0041") == "x\\u202ey\\u2028z\\U000e0041"
    assert printable("back\\x1b") == "back\\\\x1b"  # a literal backslash is doubled
    assert printable(42) == "42"


def test_hostile_names_and_messages_are_escaped(gateway: Gateway) -> None:
    import sig

    port = str(gateway.port)

    def boom(params: object) -> None:
        raise ValueError("\x1b[2J\nevents: unlock")

    client = sig.ClientRouter(port=gateway.port, name="peer\u202eevil")
    watch = Proc([sys.executable, "-m", "sig", "listen", "--port", port,
                  "--sender", EVIL, "--event", EVIL_EVENT, "--count", "1"])  # fmt: skip
    try:
        client.connect()
        evil = client.add_sender(EVIL, [EVIL_EVENT], {EVIL_METHOD: lambda p: p, "boom": boom})
        r = run_sig("senders", "--port", port)
        assert r.returncode == 0 and all_printable(r.stdout), r.stdout
        line = next(x for x in r.stdout.splitlines() if x.startswith("evil"))
        row = parse_table("\n".join([r.stdout.splitlines()[0], line]))[0]
        assert row["SENDER"] == "evil\\u202egpj.exe" and row["LINK"].startswith("tcp:")
        assert row["EVENTS"] == "a\\u2028events:"  # the cell is one escaped name
        assert "boom,m\\u200bx" in line or "m\\u200bx,boom" in line
        # no forged line: the header, then one per sender
        assert len(r.stdout.splitlines()) == 1 + len(client.list_senders())

        r = run_sig("links", "--port", port)
        assert r.returncode == 0 and all_printable(r.stdout), r.stdout
        rows = parse_table("\n".join(r.stdout.splitlines()[:-1]), NUMBERS)
        assert {"PEER": "peer\\u202eevil", "SENDERS": "evil\\u202egpj.exe"}.items() <= next(
            x for x in rows if x["PEER"].startswith("peer")
        ).items(), r.stdout

        # a handler's error text is the peer's too: one escaped line on stderr
        r = run_sig("request", "--port", port, EVIL, "boom")
        assert r.returncode == 1 and all_printable(r.stderr), r.stderr
        assert "\\x1b[2J\\nevents: unlock" in one_line(r.stderr)

        # sig listen: JSON lines, every non-ASCII or control character escaped
        def listening() -> bool:
            links = client.request("$gateway", "links")
            return any(x["peer"] == "sig-listen" and x["listeners"] for x in links)

        wait_until(listening, what="sig listen registered")
        evil.trigger(EVIL_EVENT, "\x1b[31mred\n")
        assert watch.wait(T) == 0
        assert len(watch.lines) == 1 and watch.lines[0].isascii() and all_printable(watch.lines[0])
        got = json.loads(watch.lines[0])
        assert (got["sender"], got["event"], got["data"]) == (EVIL, EVIL_EVENT, "\x1b[31mred\n")
    finally:
        watch.kill()
        client.close()


def test_log_lines_from_the_network_are_escaped() -> None:
    import logging

    from sig.tools.cli import PrintableFormatter

    record = logging.LogRecord(
        "sig.routers.client", logging.WARNING, __file__, 1,
        "gateway error %s: %s", (6, "x\n\x1b[1m"), None,
    )
    assert (
        PrintableFormatter("sig %(message)s").format(record) == "sig gateway error 6: x\\n\\x1b[1m"
    )
