"""The ``sig`` command line, run as separate processes against ``sig serve``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Gateway, Peer, Proc, child_env, wait_until

T = 20.0


def sig_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sig.cli", *args],
        capture_output=True,
        text=True,
        timeout=T,
        env=child_env(),
    )


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
    r = sig_cli("listen", "--port", str(gateway.port), "--sender", "timer", "--count", "3")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 3
    assert all(set(x) == {"time", "sender", "event", "data"} for x in lines)
    assert [(x["sender"], x["event"]) for x in lines] == [("timer", "tick")] * 3
    assert [x["data"] - lines[0]["data"] for x in lines] == [0, 1, 2]


def test_send_reaches_a_listener(gateway: Gateway) -> None:
    port = str(gateway.port)
    watch = Proc([sys.executable, "-m", "sig.cli", "listen", "--port", port,
                  "--sender", "cli-s", "--count", "3"])  # fmt: skip
    try:

        def listening() -> bool:
            links = json.loads(sig_cli("links", "--port", port, "--json").stdout)
            return any(x["peer"] == "sig-listen" and x["listeners"] for x in links)

        wait_until(listening, what="sig listen registered")
        r = sig_cli("send", "--port", port, "cli-s", "ev", '{"a": [1, 2.5, "x"]}')
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        assert watch.wait(T) == 0
        got = [(x["event"], x["data"]) for x in map(json.loads, watch.lines)]
        assert got == [
            ("#connect", {"events": ["ev"], "requests": []}),
            ("ev", {"a": [1, 2.5, "x"]}),
            ("#disconnect", {"events": ["ev"], "requests": []}),
        ]
    finally:
        watch.kill()


def test_request_result_and_failures(gateway: Gateway) -> None:
    port = str(gateway.port)
    r = sig_cli("request", "--port", port, "timer", "get_ticks")
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), int), r
    r = sig_cli("request", "--port", port, "$gateway", "stats")
    assert r.returncode == 0 and json.loads(r.stdout)["senders"] >= 1
    r = sig_cli("request", "--port", port, "nobody", "x")
    assert r.returncode == 1 and r.stdout == ""
    assert "NoSuchSender" in one_line(r.stderr)
    r = sig_cli("request", "--port", port, "timer", "nope")
    assert r.returncode == 1 and "NoSuchMethod" in one_line(r.stderr)
    r = sig_cli("request", "--port", port, "timer", "get_ticks", "{not json")
    assert r.returncode == 2 and "not valid JSON" in one_line(r.stderr)


def test_senders_table_and_json(gateway: Gateway) -> None:
    r = sig_cli("senders", "--port", str(gateway.port))
    assert r.returncode == 0
    assert any(x.startswith("timer") and "get_ticks" in x for x in r.stdout.splitlines())
    r = sig_cli("senders", "--port", str(gateway.port), "--json")
    assert json.loads(r.stdout)["timer"] == {
        "events": ["tick"],
        "requests": ["get_ticks"],
        "link": "local",
    }


@pytest.mark.parametrize("command", [["listen"], ["send", "a", "b"], ["request", "a", "b"],
                                     ["senders"], ["links"]])  # fmt: skip
def test_unreachable_gateway_is_one_line_and_exit_1(free_port: int, command: list[str]) -> None:
    r = sig_cli(command[0], "--port", str(free_port), *command[1:])
    assert r.returncode == 1, r
    assert "cannot reach the gateway" in one_line(r.stderr)
    assert "Connection refused" in r.stderr


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(bound_port: int) -> None:
    r = sig_cli("serve", "--host", "127.0.0.1", "--port", str(bound_port))
    assert r.returncode == 2
    assert "address already in use" in one_line(r.stderr)


def test_serve_on_a_bad_address_is_one_line_and_exit_2() -> None:
    r = sig_cli("serve", "--host", "256.0.0.1", "--port", "0")
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
        assert peer.wait_event("d", "#disconnect", "timer")["data"] == {
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
    gw = Proc([sys.executable, "-m", "sig.cli", "serve", "--config", str(config),
               "--port", "0", "--timer-event", "flagev"])  # fmt: skip
    try:
        line = gw.wait_line(lambda s: "listening on" in s)
        assert "'cfg-gw'" in line and "127.0.0.1:" in line
        port = line.rsplit(":", 1)[1]
        assert int(port) != bound_port
        senders = json.loads(sig_cli("senders", "--port", port, "--json").stdout)
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
    r = sig_cli("serve", "--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in one_line(r.stderr)
    r = sig_cli("serve", "--config", str(tmp_path / "missing.toml"))
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
    from sig.cli import printable

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
    watch = Proc([sys.executable, "-m", "sig.cli", "listen", "--port", port,
                  "--sender", EVIL, "--event", EVIL_EVENT, "--count", "1"])  # fmt: skip
    try:
        client.connect()
        evil = client.add_sender(EVIL, [EVIL_EVENT], {EVIL_METHOD: lambda p: p, "boom": boom})
        r = sig_cli("senders", "--port", port)
        assert r.returncode == 0 and all_printable(r.stdout), r.stdout
        line = next(x for x in r.stdout.splitlines() if x.startswith("evil"))
        assert line.startswith("evil\\u202egpj.exe  events: a\\u2028events: unlock")
        assert "requests: boom, m\\u200bx" in line or "requests: m\\u200bx, boom" in line
        assert len(r.stdout.splitlines()) == len(client.list_senders())  # no forged line

        r = sig_cli("links", "--port", port)
        assert r.returncode == 0 and all_printable(r.stdout), r.stdout
        assert any(
            "peer=peer\\u202eevil  senders=evil\\u202egpj.exe" in x for x in r.stdout.splitlines()
        ), r.stdout

        # a handler's error text is the peer's too: one escaped line on stderr
        r = sig_cli("request", "--port", port, EVIL, "boom")
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

    from sig.cli import PrintableFormatter

    record = logging.LogRecord(
        "sig.client", logging.WARNING, __file__, 1, "gateway error %s: %s", (6, "x\n\x1b[1m"), None
    )
    assert (
        PrintableFormatter("sig %(message)s").format(record) == "sig gateway error 6: x\\n\\x1b[1m"
    )
