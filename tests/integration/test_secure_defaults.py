"""Secure defaults (issue 11, item 1), with real ``sig serve`` processes.

* no config: 127.0.0.1 only, anonymous clients welcome there (the README's
  first command, demo sender and all);
* any other address needs users configured, or ``--allow-anonymous`` /
  ``[auth] allow_anonymous = true``, which logs a WARNING naming the address
  at every start; without either ``sig serve`` exits 2 and says what to do.

Addresses that are not loopback are only ever bound inside a network
namespace made by the test (a veth pair with 10.233.0.1, which exists nowhere
else), so nothing is opened on the machine's own network. A loopback alias
such as 127.0.0.2 is still loopback and needs nothing.
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
from pathlib import Path

import pytest
from pki import Pki
from procs import Gateway, Proc, child_env, run_sig

import sig
from sig.routers.gateway import ExposedError, check_exposure, exposed

T = 20.0  #: bound for any one wait
NS_ADDR = "10.233.0.1"  #: an address of the test's namespace (not loopback, nowhere else)
REFUSAL = "refusing to serve anonymous clients on"




# --- the rule itself ----------------------------------------------------------------


def test_loopback_addresses_are_the_only_ones_that_need_nothing() -> None:
    assert exposed(["127.0.0.1", "127.0.0.2", "::1"]) == []  # 127/8 is loopback, aliases too
    assert exposed(["0.0.0.0", "::", "10.233.0.1", "fe80::1%eth0"]) == [
        "0.0.0.0", "::", "10.233.0.1", "fe80::1%eth0"
    ]  # fmt: skip
    check_exposure(["127.0.0.1"], 3000, authenticated=False, allow_anonymous=False)
    check_exposure(["0.0.0.0"], 3000, authenticated=True, allow_anonymous=False)  # users
    check_exposure(["0.0.0.0"], 3000, authenticated=True, allow_anonymous=True)  # warns
    with pytest.raises(ExposedError, match="--allow-anonymous"):
        check_exposure(["0.0.0.0"], 3000, authenticated=False, allow_anonymous=False)


async def test_server_router_defaults_to_loopback_and_refuses_the_lan_before_binding() -> None:
    assert sig.ServerRouter().host == "127.0.0.1"
    gw = sig.ServerRouter(None, 0)  # None: every address
    with pytest.raises(ExposedError, match=REFUSAL):
        await gw.start()
    assert gw.listen_addresses() == []  # nothing was bound
    assert isinstance(ExposedError("x"), sig.ConnectError)  # code that catches ConnectError


# --- sig serve on the machine's loopback ------------------------------------------


def test_sig_serve_with_no_config_listens_on_loopback_and_serves_anonymous_clients() -> None:
    gw = Gateway(0, "--timer-interval", "0.2")  # the README's first command, on a free port
    try:
        assert gw.lines[0].startswith("sig gateway 'sig-gateway' listening on 127.0.0.1:")
        r = run_sig("request", "--port", str(gw.port), "timer", "get_ticks")
        assert r.returncode == 0 and isinstance(json.loads(r.stdout), int), r.stderr
        assert "anonymous clients allowed" not in gw.stderr_text()
    finally:
        assert gw.stop() == 0


def test_the_readme_first_command_no_flags_at_all_serves_the_demo_timer_on_loopback() -> None:
    """``sig serve`` as the README starts it (``Gateway`` passes ``--host``; this does not),
    on a free port instead of 3000."""
    proc = Proc([sys.executable, "-m", "sig", "serve", "--port", "0", "--timer-interval", "0.2"])
    try:
        line = proc.wait_line(lambda s: "listening on" in s, T)
        assert " listening on 127.0.0.1:" in line, line
        port = line.rsplit(":", 1)[1]
        r = run_sig("request", "--port", port, "timer", "get_ticks")
        assert r.returncode == 0 and isinstance(json.loads(r.stdout), int), r.stderr
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait(T) == 0


def test_a_loopback_alias_is_loopback_and_needs_nothing() -> None:
    proc = Proc([sys.executable, "-m", "sig", "serve", "--host", "127.0.0.2", "--port", "0",
                 "--no-timer", "--no-discovery"])  # fmt: skip
    try:
        proc.wait_line(lambda s: "listening on 127.0.0.2:" in s, T)
        assert REFUSAL not in proc.stderr_text()
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait(T) == 0


# --- beyond loopback: inside a namespace of the test's own --------------------------


def _ip() -> list[str]:
    ip = shutil.which("ip") or ("/sbin/ip" if Path("/sbin/ip").exists() else None)
    if ip is None:
        pytest.fail("SECURE DEFAULTS TEST CANNOT RUN: `ip` (iproute2) is missing;"
                    " ./run-tests installs it", pytrace=False)  # fmt: skip
    return [ip] if os.geteuid() == 0 else ["sudo", "-n", "-E", ip]


@pytest.fixture(scope="module")
def netns() -> Iterator[list[str]]:
    """A namespace with loopback and a veth pair, ``NS_ADDR`` on one end; yields the
    ``ip netns exec NS`` prefix. Deleted (with what runs in it) at the end."""
    ip = _ip()
    ns = f"sigsd{os.getpid()}"
    run = lambda *a: subprocess.run([*ip, *a], capture_output=True, text=True, timeout=T)  # noqa: E731
    made = run("netns", "add", ns)
    if made.returncode != 0:
        pytest.fail(
            f"SECURE DEFAULTS TEST CANNOT RUN: `ip netns add` failed ({made.stderr.strip()});"
            " a network namespace needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)",
            pytrace=False,
        )
    try:
        a, b = f"sd{os.getpid()}a", f"sd{os.getpid()}b"
        for step in (
            ("link", "add", a, "netns", ns, "type", "veth", "peer", "name", b, "netns", ns),
            ("-n", ns, "addr", "add", f"{NS_ADDR}/24", "dev", a),
            ("-n", ns, "link", "set", a, "up"),
            ("-n", ns, "link", "set", b, "up"),
            ("-n", ns, "link", "set", "lo", "up"),
        ):
            r = run(*step)
            assert r.returncode == 0, f"ip {' '.join(step)}: {r.stderr}"
        yield [*ip, "netns", "exec", ns]
    finally:
        for pid in run("netns", "pids", ns).stdout.split():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)
        run("netns", "delete", ns)


@contextlib.contextmanager
def serving(ns: list[str], *args: str, discovery: bool = False) -> Iterator[Proc]:
    """``sig serve ARGS`` inside the namespace, up (banner printed); stopped afterwards."""
    quiet = () if discovery else ("--no-discovery",)
    proc = Proc([*ns, sys.executable, "-m", "sig", "serve", *quiet, *args],
                env=child_env())  # fmt: skip
    try:
        proc.wait_line(lambda s: "listening on" in s, T)
        yield proc
    finally:
        proc.signal(signal.SIGTERM)
        proc.wait(T)
        proc.kill()


@pytest.mark.parametrize("host", ["0.0.0.0", NS_ADDR])
def test_a_lan_address_without_users_or_allow_anonymous_exits_2_saying_what_to_do(
    netns: list[str], host: str
) -> None:
    r = run_sig("serve", "--host", host, "--port", "3601", "--no-discovery", prefix=netns)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert REFUSAL in r.stderr and f"{host}:3601" in r.stderr, r.stderr
    for advice in ("--users FILE", "--allow-anonymous", "allow_anonymous = true", "127.0.0.1"):
        assert advice in r.stderr, (advice, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""  # never got as far as a banner


def test_allow_anonymous_serves_the_lan_address_and_warns_at_every_start(
    netns: list[str],
) -> None:
    for _ in range(2):  # every start, not once
        with serving(netns, "--host", NS_ADDR, "--port", "3602", "--allow-anonymous",
                     "--timer-interval", "0.2") as gw:  # fmt: skip
            warning = gw.wait_log("anonymous clients allowed")
            assert "WARNING" in warning and f"{NS_ADDR}:3602" in warning, warning
            r = run_sig("request", "--host", NS_ADDR, "--port", "3602", "timer", "get_ticks",
                        prefix=netns)  # fmt: skip
            assert r.returncode == 0 and isinstance(json.loads(r.stdout), int), r.stderr
            gw.wait_log(f"tcp:{NS_ADDR}:")  # the client came in on the LAN address
            assert len([s for s in gw.err_lines if "anonymous clients allowed" in s]) == 1


def test_the_config_file_can_allow_anonymous_clients_too(netns: list[str], tmp_path: Path) -> None:
    config = tmp_path / "lan.toml"
    config.write_text(
        '[gateway]\nhost = "0.0.0.0"\nport = 3603\n\n[auth]\nallow_anonymous = true\n'
    )
    with serving(netns, "--config", str(config), "--no-timer") as gw:
        warning = gw.wait_log("anonymous clients allowed")
        assert "WARNING" in warning and "0.0.0.0:3603" in warning, warning
        r = run_sig("senders", "--host", NS_ADDR, "--port", "3603", "--json", prefix=netns)
        assert r.returncode == 0, r.stderr
    config.write_text(
        '[gateway]\nhost = "0.0.0.0"\nport = 3603\n\n[auth]\nallow_anonymous = "yes"\n'
    )
    r = run_sig("serve", "--config", str(config), prefix=netns)
    assert r.returncode == 2 and "allow_anonymous must be true or false" in r.stderr, r.stderr
    config.write_text("auth = 5\n")
    r = run_sig("serve", "--config", str(config), prefix=netns)
    assert r.returncode == 2 and "[auth] takes only" in r.stderr, r.stderr


def test_with_users_configured_the_lan_address_is_served_without_a_warning(
    netns: list[str], tmp_path: Path
) -> None:
    users = tmp_path / "users"
    r = subprocess.run([sys.executable, "-m", "sig", "passwd", str(users), "alice",
                        "--password-stdin"], input="wonderland\n", capture_output=True,
                       text=True, timeout=T, env=child_env())  # fmt: skip
    assert r.returncode == 0, r.stderr
    with serving(netns, "--host", NS_ADDR, "--port", "3605", "--no-timer",
                 "--users", str(users)) as gw:  # fmt: skip
        r = run_sig("senders", "--host", NS_ADDR, "--port", "3605", "--user", "alice",
                "--password-stdin", "--json", prefix=netns, stdin="wonderland\n")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "anonymous clients allowed" not in gw.stderr_text()
    # users and allow_anonymous: anonymous clients get in on the LAN address, and it says so
    with serving(netns, "--host", NS_ADDR, "--port", "3605", "--no-timer",
                 "--users", str(users), "--allow-anonymous") as gw:  # fmt: skip
        warning = gw.wait_log("anonymous clients allowed")
        assert f"{NS_ADDR}:3605" in warning, warning


def test_loopback_in_the_namespace_still_needs_nothing(netns: list[str]) -> None:
    with serving(netns, "--port", "3604", "--no-timer") as gw:
        assert " listening on 127.0.0.1:3604" in gw.lines[0]
        r = run_sig("senders", "--port", "3604", "--json", prefix=netns)
        assert r.returncode == 0, r.stderr
        # ...and from the LAN address nobody gets in: it is not listening there.
        r = run_sig("senders", "--host", NS_ADDR, "--port", "3604", "--timeout", "2", prefix=netns)
        assert r.returncode == 1 and "cannot reach the gateway" in r.stderr, r.stderr


DISCOVER = (
    "import dataclasses, json, sig\n"
    "print(json.dumps([dataclasses.asdict(g) for g in sig.discover(timeout=15.0, limit=1)]))\n"
)


TLS_NO_HOST = """
import asyncio, sys, sig
async def main():
    client = sig.AsyncClientRouter(None, cafile=sys.argv[1], auto_reconnect=False,
                                   connect_timeout=15.0)
    await client.connect()
    print(f"connected {client.host}:{client.port}")
    await client.close()
asyncio.run(main())
"""


def test_a_lan_gateway_with_tls_says_so_in_its_banner_and_advertises_tls_1(
    netns: list[str], tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("ca")
    server = pki.issue("gw", "sig-lab", ca, names=("sig-lab", NS_ADDR))
    with serving(netns, "--host", NS_ADDR, "--port", "3606", "--allow-anonymous", "--no-timer",
                 "--tls-cert", str(server.cert), "--tls-key", str(server.key),
                 "--name", "tls-lab", discovery=True) as gw:  # fmt: skip
        assert f"tls        on, certificate {server.cert}" in gw.lines[1], gw.lines
        r = subprocess.run([*netns, sys.executable, "-c", DISCOVER], capture_output=True,
                           text=True, timeout=T, env=child_env())  # fmt: skip
        assert r.returncode == 0, r.stderr
        (found,) = json.loads(r.stdout)
        assert found["name"] == "tls-lab" and found["tls"] is True, found
        assert found["addresses"] == [NS_ADDR] and found["port"] == 3606
        r = run_sig("senders", "--host", NS_ADDR, "--port", "3606", "--cafile", str(ca[0].cert),
                "--json", prefix=netns)  # fmt: skip
        assert r.returncode == 0, r.stderr
        # A TLS client with no host takes the TLS gateway it discovers (a plain one would not).
        r = subprocess.run([*netns, sys.executable, "-c", TLS_NO_HOST, str(ca[0].cert)],
                           capture_output=True, text=True, timeout=T, env=child_env())  # fmt: skip
        assert r.returncode == 0 and r.stdout.strip() == f"connected {NS_ADDR}:3606", r.stderr


def test_mutual_tls_is_not_anonymous_so_the_lan_address_needs_nothing_more(
    netns: list[str], tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("ca")
    server = pki.issue("gw", "sig-lab", ca, names=(NS_ADDR,))
    tls = ["--tls-cert", str(server.cert), "--tls-key", str(server.key)]
    r = run_sig("serve", "--host", NS_ADDR, "--port", "3607", "--no-discovery", *tls, prefix=netns)
    assert r.returncode == 2 and REFUSAL in r.stderr, r.stderr  # TLS alone: still anonymous
    with serving(netns, "--host", NS_ADDR, "--port", "3607", "--no-timer", *tls,
                 "--tls-client-ca", str(ca[0].cert)) as gw:  # fmt: skip
        assert "tls        on, mutual" in gw.lines[1], gw.lines
        assert "anonymous clients allowed" not in gw.stderr_text()
