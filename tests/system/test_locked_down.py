"""The CLI end to end against a locked-down gateway: TLS, users and ACLs at once.

One ``sig serve`` process with a certificate from a test CA, a users file made
by ``sig passwd`` and an ``[acl]``; the client commands are real processes too.
What an admin may do works; a narrow user, an anonymous client, a wrong
password and a client without TLS are each refused, and the gateway says so.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import Pki
from procs import Gateway, run_sig


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[Gateway, Path]]:
    pki = Pki(tmp_path)
    ca = pki.ca("home")
    server = pki.issue("gateway", "localhost", ca)
    users = tmp_path / "users"
    for user, password in (("admin", "root-pw"), ("dashboard", "dash-pw")):
        made = run_sig("passwd", str(users), user, "--password-stdin", stdin=password + "\n")
        assert made.returncode == 0, made
    config = tmp_path / "sig.toml"
    config.write_text(
        f"""
[tls]
cert = "{server.cert}"
key = "{server.key}"

[auth]
users = "{users}"
state = "{tmp_path / 'state.json'}"

[acl.users.admin]
admin = true
listen = ["*"]
request = ["*"]

[acl.users.dashboard]
listen = ["timer"]
"""
    )
    gw = Gateway(0, "--config", str(config), "--timer-interval", "0.1", "--no-discovery")
    yield gw, tmp_path / "home.pem"
    assert gw.stop() == 0, gw.stderr_text()


def test_the_cli_against_a_gateway_with_tls_users_and_acls(locked: tuple[Gateway, Path]) -> None:
    gw, ca = locked
    port = str(gw.port)
    tls = ("--port", port, "--tls", "--cafile", str(ca), "--timeout", "15")

    def as_user(user: str, password: str, *command: str) -> subprocess.CompletedProcess[str]:
        return run_sig(*command, *tls, "--user", user, "--password-stdin", stdin=password + "\n")

    senders = as_user("admin", "root-pw", "senders", "--json")
    assert senders.returncode == 0, senders
    assert "timer" in json.loads(senders.stdout)
    ticks = as_user("admin", "root-pw", "request", "timer", "get_ticks")
    assert ticks.returncode == 0, ticks
    heard = as_user("dashboard", "dash-pw", "listen", "--sender", "timer", "--count", "1")
    assert heard.returncode == 0 and "tick" in heard.stdout, heard

    # The dashboard may listen, not list peers nor call handlers.
    listing = as_user("dashboard", "dash-pw", "links", "--json")
    assert listing.returncode == 1 and "NotAuthorised" in listing.stderr, listing
    call = as_user("dashboard", "dash-pw", "request", "timer", "get_ticks")
    assert call.returncode == 1 and "NotAuthorised" in call.stderr, call
    # Without TLS the client gets no session; without a login, or with a wrong
    # password, it is refused (each refusal slows this address's next answers).
    plain = run_sig("senders", "--port", port, "--timeout", "5", "--user", "admin",
                    "--password-stdin", stdin="root-pw\n")  # fmt: skip
    assert plain.returncode != 0, plain
    anonymous = run_sig("senders", *tls)
    assert anonymous.returncode == 1 and "NotAuthorised" in anonymous.stderr, anonymous
    wrong = as_user("admin", "guess", "senders")
    assert wrong.returncode == 1 and "NotAuthorised" in wrong.stderr, wrong

    stats = json.loads(as_user("admin", "root-pw", "request", "$gateway", "stats").stdout)
    assert stats["auth_failures"] >= 2 and stats["acl_refusals"] >= 2, stats
    assert stats["closed_tls"] >= 1, stats
