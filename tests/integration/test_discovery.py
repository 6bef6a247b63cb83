"""Discovery (mDNS / DNS-SD ``_sig._tcp``): the records, and the real thing across a veth.

The network tests build their own LAN: two network namespaces joined by a veth
pair, with addresses from 10.231.0.0/24 that exist only inside those
namespaces (traffic never leaves the machine, and the host's own interfaces
never see a packet). ``sig serve`` runs in one namespace, the discovering
side in the other, as separate processes. Creating namespaces needs root
(CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2: where that is missing these
tests FAIL and say why, they are never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from procs import Gateway, Proc, child_env

import sig
from sig.routers.discovery import (
    MAX_INSTANCE,
    MAX_TXT_STRING,
    advertised_addresses,
    instance_label,
    parse_txt,
    txt_properties,
)
from sig.tools.cli import UsageError, build_parser, load_config, settings

T = 20.0  #: bound for any one wait; discovery itself answers in about a second

GW_ADDR = "10.231.0.1"  #: the gateway's end of the veth (only inside its namespace)
CLIENT_ADDR = "10.231.0.2"  #: the discovering end
NS_PREFIX = f"sigd{os.getpid()}"


# --- the records, without a network ------------------------------------------


def test_txt_record_is_versioned_and_round_trips() -> None:
    txt = txt_properties("lab-gw", tls=False)
    assert list(txt) == ["txtvers", "proto", "tls", "name"]  # txtvers first (RFC 6763 §6.7)
    assert txt == {"txtvers": "1", "proto": "1", "tls": "0", "name": "lab-gw"}
    assert parse_txt(dict(txt)) == ("lab-gw", False, 1)
    assert parse_txt({**txt, "tls": "1"}) == ("lab-gw", True, 1)
    assert parse_txt({"txtvers": "1", "proto": "2", "tls": "0"}) == (None, False, 2)


def test_long_names_are_cut_to_dns_sd_limits_on_a_character_boundary() -> None:
    name = "é" * 200  # 400 UTF-8 bytes: more than a label (63) and a TXT string (255)
    label = instance_label(name)
    assert label == "é" * (MAX_INSTANCE // 2) and len(label.encode()) <= MAX_INSTANCE
    txt_name = txt_properties(name, tls=False)["name"]
    assert len(("name=" + txt_name).encode()) <= MAX_TXT_STRING
    assert txt_name == "é" * ((MAX_TXT_STRING - 5) // 2)


@pytest.mark.parametrize(
    "txt",
    [
        {},
        {"txtvers": "2", "proto": "1", "tls": "0"},
        {"txtvers": "1", "proto": "x", "tls": "0"},
        {"txtvers": "1", "proto": "9" * 50, "tls": "0"},
        {"txtvers": "1", "proto": "1", "tls": "yes"},
        {"txtvers": "1", "proto": None, "tls": "0"},
    ],
)
def test_a_foreign_or_malformed_txt_record_is_rejected(txt: dict[str, str | None]) -> None:
    with pytest.raises(ValueError):
        parse_txt(txt)


def test_only_addresses_a_lan_peer_can_use_are_advertised() -> None:
    local = ["127.0.0.1", "10.231.0.1", "192.168.7.2", "::1", "fe80::1", "fd00::5"]
    assert advertised_addresses(["0.0.0.0"], local) == ["10.231.0.1", "192.168.7.2"]
    assert advertised_addresses(["::"], local) == ["fd00::5"]  # link-local is not usable
    assert advertised_addresses(["0.0.0.0", "::"], local) == [
        "10.231.0.1",
        "192.168.7.2",
        "fd00::5",
    ]
    assert advertised_addresses(["192.168.7.2"], local) == ["192.168.7.2"]
    assert advertised_addresses(["127.0.0.1"], local) == []
    assert advertised_addresses(["::1"], local) == []
    assert advertised_addresses(["0.0.0.0"], ["127.0.0.1"]) == []


def test_discovery_is_on_by_default_and_off_by_config_or_flag(tmp_path: Path) -> None:
    parser = build_parser()
    assert settings(parser.parse_args(["serve"]))["discovery"] is True
    assert settings(parser.parse_args(["serve", "--no-discovery"]))["discovery"] is False
    config = tmp_path / "sig.toml"
    config.write_text("[discovery]\nenabled = false\n")
    assert load_config(str(config)) == {"discovery": False}
    assert settings(parser.parse_args(["serve", "--config", str(config)]))["discovery"] is False
    example = Path(__file__).resolve().parents[2] / "examples" / "sig.toml"
    assert load_config(str(example))["discovery"] is True
    config.write_text('[discovery]\nenabled = "no"\n')
    with pytest.raises(UsageError, match="enabled must be true or false"):
        load_config(str(config))


def test_a_loopback_gateway_says_in_one_line_that_it_does_not_advertise() -> None:
    gw = Gateway(0, "--name", "lo-gw", "--no-timer")
    try:
        r = subprocess.run(
            [sys.executable, "-m", "sig", "senders", "--port", str(gw.port), "--json"],
            capture_output=True, text=True, timeout=T, env=child_env(),
        )  # fmt: skip
        assert r.returncode == 0 and json.loads(r.stdout) == {}, r.stderr
        assert gw.stop() == 0
        lines = [s for s in gw.stderr_text().splitlines() if "discovery" in s]
        assert len(lines) == 1, lines
        assert "not advertising on the LAN" in lines[0] and "loopback only" in lines[0]
    finally:
        gw.kill()


async def test_blocking_discover_refuses_to_run_inside_an_event_loop() -> None:
    with pytest.raises(sig.SigError, match="discover_async"):
        sig.discover(timeout=1)
    with pytest.raises(ValueError):
        await sig.discover_async(timeout=0)


# --- two namespaces and a veth: a LAN of the test's own ------------------------


def _ip_command() -> list[str]:
    """``ip`` (as root), or a failure that says plainly what is missing."""
    ip = shutil.which("ip") or ("/sbin/ip" if Path("/sbin/ip").exists() else None)
    if ip is None:
        pytest.fail(
            "DISCOVERY TEST CANNOT RUN: the `ip` command (Debian package iproute2) is not "
            "installed; ./run-tests installs it",
            pytrace=False,
        )
    if os.geteuid() == 0:
        return [ip]
    return ["sudo", "-n", "-E", ip]  # CI without root: passwordless sudo, else the fail below


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=T, check=False)


@dataclass
class Lan:
    """Namespaces ``gw`` and ``client`` joined by one veth pair."""

    ip: list[str]
    gw: str
    client: str
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, ns: str, *argv: str, stdin: bool = False) -> Proc:
        """A process inside namespace ``ns`` (stopped at teardown)."""
        proc = Proc([*self.ip, "netns", "exec", ns, *argv], stdin=stdin, env=child_env())
        self.procs.append(proc)
        return proc

    def run(self, ns: str, *argv: str, timeout: float = T) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.ip, "netns", "exec", ns, *argv],
            capture_output=True, text=True, timeout=timeout, env=child_env(),
        )  # fmt: skip

    def serve(self, *args: str) -> Proc:
        """``sig serve`` in the gateway namespace; returns once it printed its banner.

        A LAN gateway: on every address unless ``--host`` says otherwise, and
        anonymous clients allowed there (these tests have no users).
        """
        where = () if "--host" in args else ("--host", "0.0.0.0")
        argv = [sys.executable, "-m", "sig", "serve", *where, "--allow-anonymous", *args]
        gw = self.spawn(self.gw, *argv)
        gw.wait_line(lambda s: "listening on" in s, T)
        return gw


@contextlib.contextmanager
def make_lan(suffix: str) -> Iterator[Lan]:
    """Create both namespaces and the veth; delete them again even when the test fails."""
    ip = _ip_command()
    gw_ns, client_ns = f"{NS_PREFIX}{suffix}g", f"{NS_PREFIX}{suffix}c"
    made: list[str] = []
    try:
        for ns in (gw_ns, client_ns):
            r = _run([*ip, "netns", "add", ns])
            if r.returncode != 0:
                pytest.fail(
                    f"DISCOVERY TEST CANNOT RUN: `ip netns add {ns}` failed "
                    f"(exit {r.returncode}: {r.stderr.strip()!r}); creating a network namespace "
                    "needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) on this machine",
                    pytrace=False,
                )
            made.append(ns)
        veth_gw, veth_client = f"sd{os.getpid()}{suffix}g", f"sd{os.getpid()}{suffix}c"
        steps = [
            ["link", "add", veth_gw, "netns", gw_ns, "type", "veth",
             "peer", "name", veth_client, "netns", client_ns],
            ["-n", gw_ns, "addr", "add", f"{GW_ADDR}/24", "dev", veth_gw],
            ["-n", client_ns, "addr", "add", f"{CLIENT_ADDR}/24", "dev", veth_client],
            ["-n", gw_ns, "link", "set", veth_gw, "up"],
            ["-n", client_ns, "link", "set", veth_client, "up"],
            ["-n", gw_ns, "link", "set", "lo", "up"],
            ["-n", client_ns, "link", "set", "lo", "up"],
        ]  # fmt: skip
        for step in steps:
            r = _run([*ip, *step])
            if r.returncode != 0:
                pytest.fail(
                    f"DISCOVERY TEST CANNOT RUN: `ip {' '.join(step)}` failed: "
                    f"{r.stderr.strip()!r}",
                    pytrace=False,
                )
        lan = Lan(ip, gw_ns, client_ns)
        try:
            yield lan
        finally:
            for proc in lan.procs:
                proc.kill()
    finally:
        for ns in made:
            # Whatever the test started in there and is still running (e.g. behind sudo).
            for pid in _run([*ip, "netns", "pids", ns]).stdout.split():
                _run([*ip[:-1], "kill", "-9", pid] if ip[0] == "sudo" else ["kill", "-9", pid])
            _run([*ip, "netns", "delete", ns])  # the veth pair goes with its namespaces


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    with make_lan("a") as made:
        yield made


@pytest.fixture(scope="module")
def lab_gw(lan: Lan) -> Iterator[Proc]:
    """An advertised gateway on every interface, port 3555, ticking every 0.2 s."""
    gw = lan.serve("--name", "lab-gw", "--port", "3555", "--timer-interval", "0.2")
    gw_advertising(gw)
    yield gw
    gw.signal(signal.SIGTERM)
    assert gw.wait(T) == 0  # withdrawing the advertisement does not hang the shutdown



def gw_advertising(gw: Proc) -> str:
    """Wait for the one discovery log line, and check that it says the gateway is published."""
    line = gw.wait_log("discovery:")
    assert "discovery: advertising" in line, line
    return line


DISCOVER = (
    "import dataclasses, json, sys, sig\n"
    "found = sig.discover(timeout=float(sys.argv[1]), limit=int(sys.argv[2]) or None)\n"
    "print(json.dumps([dataclasses.asdict(g) for g in found]))\n"
)


def discover_from(lan: Lan, timeout: float, limit: int = 0) -> list[dict[str, object]]:
    r = lan.run(lan.client, sys.executable, "-c", DISCOVER, str(timeout), str(limit))
    assert r.returncode == 0, r.stderr
    found: list[dict[str, object]] = json.loads(r.stdout)
    return found


def test_a_gateway_is_found_across_the_veth_with_its_address_port_and_txt(
    lan: Lan, lab_gw: Proc
) -> None:
    found = discover_from(lan, T, limit=1)
    assert found == [
        {
            "name": "lab-gw",
            "addresses": [GW_ADDR],  # not the namespace's 127.0.0.1: only what a peer can use
            "port": 3555,
            "tls": False,
            "version": 1,
            "instance": "lab-gw",
        }
    ]


def test_sig_listen_discover_receives_a_real_event(lan: Lan, lab_gw: Proc) -> None:
    r = lan.run(
        lan.client, sys.executable, "-m", "sig", "listen", "--discover",
        "--sender", "timer", "--event", "tick", "--count", "1", "--timeout", str(T),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip())
    assert line["sender"] == "timer" and line["event"] == "tick" and line["data"] >= 1
    assert "session opened by 'sig-listen'" in lab_gw.stderr_text()
    assert f"tcp:{CLIENT_ADDR}:" in lab_gw.stderr_text()  # it came over the veth


CLIENTS = """
import asyncio, json, sig

async def main():
    found = await sig.discover_async(timeout=20, limit=1)
    async with sig.AsyncClientRouter(host=None, name="async-disc", connect_timeout=20) as c:
        ticks = await c.request("timer", "get_ticks")
    return [g.name for g in found], c.host, c.port, ticks

names, host, port, async_ticks = asyncio.run(main())
sync = sig.ClientRouter(host=None, name="sync-disc", connect_timeout=20)
sync.connect()
sync_ticks = sync.request("timer", "get_ticks")
sync.close()
print(json.dumps([names, host, port, async_ticks, sync_ticks]))
"""


def test_clients_with_no_host_connect_to_the_discovered_gateway(lan: Lan, lab_gw: Proc) -> None:
    r = lan.run(lan.client, sys.executable, "-c", CLIENTS)
    assert r.returncode == 0, r.stderr
    names, host, port, async_ticks, sync_ticks = json.loads(r.stdout)
    assert names == ["lab-gw"] and (host, port) == (GW_ADDR, 3555)
    assert isinstance(async_ticks, int) and isinstance(sync_ticks, int)
    assert sync_ticks >= async_ticks
    log = lab_gw.stderr_text()
    assert "session opened by 'async-disc'" in log and "session opened by 'sync-disc'" in log


def test_loopback_and_disabled_gateways_are_not_advertised(lan: Lan, lab_gw: Proc) -> None:
    lo = lan.serve("--name", "lo-gw", "--host", "127.0.0.1", "--port", "3556", "--no-timer")
    quiet = lan.serve("--name", "quiet-gw", "--port", "3557", "--no-timer", "--no-discovery")
    one = lan.serve("--name", "one-gw", "--host", GW_ADDR, "--port", "3558", "--no-timer")
    gw_advertising(one)
    for gw, says in ((lo, "loopback only (127.0.0.1)"), (quiet, "discovery: off")):
        lines = [s for s in gw.stderr_text().splitlines() if "discovery" in s]
        assert len(lines) == 1 and says in lines[0], lines
    # A full browse window: the two advertised gateways answer, the other two never do.
    found = {g["name"]: g for g in discover_from(lan, 5.0)}
    assert sorted(found) == ["lab-gw", "one-gw"], found
    assert found["one-gw"]["addresses"] == [GW_ADDR] and found["one-gw"]["port"] == 3558
    for gw in (lo, quiet, one):
        gw.signal(signal.SIGTERM)
        assert gw.wait(T) == 0


HOLD_MDNS_PORT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 5353))  # no SO_REUSEADDR: like avahi with disallow-other-stacks\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()  # held until the test closes stdin (or kills it)\n"
)


def test_a_zeroconf_failure_costs_one_line_and_never_the_gateway() -> None:
    with make_lan("f") as lan:
        holder = lan.spawn(lan.gw, sys.executable, "-c", HOLD_MDNS_PORT, stdin=True)
        holder.wait_line(lambda s: s == "held", T)
        gw = lan.serve("--name", "stubborn-gw", "--port", "3555", "--timer-interval", "0.2")
        r = lan.run(lan.gw, sys.executable, "-m", "sig", "request", "--port", "3555",
                    "timer", "get_ticks")  # fmt: skip
        assert r.returncode == 0 and isinstance(json.loads(r.stdout), int), r.stderr
        line = gw.wait_log("discovery")
        assert "cannot advertise" in line and "disallow-other-stacks=no" in line, line
        assert "runs without it" in line
        # The discovering side on the same host cannot browse: one clear line, exit 1.
        r = lan.run(lan.gw, sys.executable, "-m", "sig", "listen", "--discover",
                    "--timeout", "2")  # fmt: skip
        assert r.returncode == 1
        assert r.stderr.strip() == (
            "sig listen: cannot reach the gateway on the LAN: "
            "cannot browse for sig gateways: [Errno 98] Address already in use: another mDNS"
            " stack holds UDP port 5353 and does not share it (avahi-daemon: set"
            " disallow-other-stacks=no)"
        ), r.stderr
        gw.signal(signal.SIGTERM)
        assert gw.wait(T) == 0
        lines = [s for s in gw.stderr_text().splitlines() if "5353" in s or "discovery" in s]
        assert lines == [line]  # one line (zeroconf's own is held back), also at shutdown


def test_no_gateway_on_the_lan_is_a_clear_connect_error() -> None:
    with make_lan("n") as lan:
        r = lan.run(lan.client, sys.executable, "-m", "sig", "listen", "--discover",
                    "--timeout", "1.5")  # fmt: skip
        assert r.returncode == 1
        assert r.stderr.strip() == (
            "sig listen: cannot reach the gateway on the LAN: "
            "no sig gateway found on the LAN within 1.5 s"
        ), r.stderr


WATCH = (
    "import sys\n"
    "from zeroconf import ServiceBrowser, Zeroconf\n"
    "def on(zeroconf, service_type, name, state_change):\n"
    "    print(state_change.name, name, flush=True)\n"
    "zc = Zeroconf()\n"
    "ServiceBrowser(zc, '_sig._tcp.local.', handlers=[on])\n"
    "sys.stdin.read()\n"
    "zc.close()\n"
)


def test_a_stopping_gateway_withdraws_its_advertisement(lan: Lan, lab_gw: Proc) -> None:
    watcher = lan.spawn(lan.client, sys.executable, "-c", WATCH, stdin=True)
    gw = lan.serve("--name", "bye-gw", "--port", "3559", "--no-timer")
    gw_advertising(gw)
    watcher.wait_line(lambda s: s == "Added bye-gw._sig._tcp.local.", T)
    gw.signal(signal.SIGTERM)
    assert gw.wait(T) == 0
    # Goodbye packets (TTL 0), not the record TTLs of minutes, make it go at once.
    watcher.wait_line(lambda s: s == "Removed bye-gw._sig._tcp.local.", T)
    assert "Removed lab-gw._sig._tcp.local." not in watcher.lines


TLS_ADVERTISER = """
import asyncio, logging, sys
from sig.routers.discovery import Advertiser

async def main():
    adv = Advertiser("future-gw", 3600, ["0.0.0.0"], tls=True)
    assert await adv.start()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await adv.stop()

logging.basicConfig(level=logging.INFO)
asyncio.run(main())
"""

NO_HOST_CLIENT = (
    "import sig\n"
    "c = sig.ClientRouter(host=None, auto_reconnect=False, connect_timeout=3)\n"
    "try:\n"
    "    c.connect()\n"
    "except sig.ConnectError as exc:\n"
    "    print('refused:', exc)\n"
)


def test_a_host_none_client_never_picks_a_gateway_it_cannot_speak_to() -> None:
    with make_lan("t") as lan:
        adv = lan.spawn(lan.gw, sys.executable, "-c", TLS_ADVERTISER, stdin=True)
        gw_advertising(adv)
        found = discover_from(lan, T, limit=1)
        assert [(g["name"], g["tls"], g["port"]) for g in found] == [("future-gw", True, 3600)]
        r = lan.run(lan.client, sys.executable, "-c", NO_HOST_CLIENT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "refused: no sig gateway found on the LAN within 3 s"
