"""``sig passwd`` and a locked-down ``sig serve --users``, as real processes.

The users file is made and changed by ``sig passwd``; every client command
logs in with ``--user`` and a password from stdin or $SIG_PASSWORD; SIGHUP
reloads the file while a listening client stays connected.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Gateway, Proc, child_env, run_sig

T = 30.0



def passwd(path: Path, user: str, password: str) -> None:
    r = run_sig("passwd", str(path), user, "--password-stdin", stdin=password + "\n")
    assert r.returncode == 0, r


def users_of(path: Path) -> dict[str, str]:
    return dict(line.split(":", 1) for line in path.read_text().splitlines())


# --- sig passwd -------------------------------------------------------------------


def test_passwd_creates_updates_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "users"
    r = run_sig("passwd", str(path), "alice", "--password-stdin", stdin="wonderland\n")
    assert r.returncode == 0 and "user alice added" in r.stdout, r
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = users_of(path)["alice"]
    assert first.startswith("$scrypt$n=16384,r=8,p=1$") and "wonderland" not in path.read_text()
    passwd(path, "bob", "builder")
    r = run_sig("passwd", str(path), "alice", "--password-stdin", stdin="changed\n")
    assert r.returncode == 0 and "user alice changed" in r.stdout, r
    assert users_of(path)["alice"] != first and set(users_of(path)) == {"alice", "bob"}
    r = run_sig("passwd", str(path), "bob", "--delete")
    assert r.returncode == 0 and set(users_of(path)) == {"alice"}, r
    r = run_sig("passwd", str(path), "bob", "--delete")
    assert r.returncode == 1 and "no user 'bob'" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users"]  # no temp file left


def test_passwd_keeps_the_mode_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    passwd(path, "alice", "wonderland")
    path.chmod(0o640)
    passwd(path, "bob", "builder")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_passwd_refuses_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "users"
    r = run_sig("passwd", str(path), "alice", "--password-stdin", stdin="\n")
    assert r.returncode == 1 and "empty" in r.stderr and not path.exists()
    r = run_sig("passwd", str(path), "al:ice", "--password-stdin", stdin="x\n")
    assert r.returncode == 2 and "must not contain ':'" in r.stderr
    path.write_text("alice:plaintext\n")
    r = run_sig("passwd", str(path), "bob", "--password-stdin", stdin="x\n")
    assert r.returncode == 2 and "line 1" in r.stderr
    assert path.read_text() == "alice:plaintext\n"  # a file it cannot read is left alone
    r = run_sig("passwd", str(path), "alice", "--password", "x")
    assert r.returncode == 2  # there is no --password flag


def test_passwd_prompt_asks_twice(tmp_path: Path) -> None:
    """Without a terminal getpass reads stdin: the two answers must match."""
    path = tmp_path / "users"
    r = run_sig("passwd", str(path), "alice", stdin="one\ntwo\n")
    assert r.returncode == 1 and "do not match" in r.stderr and not path.exists()
    r = run_sig("passwd", str(path), "alice", stdin="same\nsame\n")
    assert r.returncode == 0 and "alice" in users_of(path), r


# --- a gateway with users, end to end -----------------------------------------------


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    passwd(path, "alice", "wonderland")
    passwd(path, "bob", "builder")
    return path


@pytest.fixture
def gateway(users: Path) -> Iterator[Gateway]:
    gw = Gateway(0, "--users", str(users), "--timer-interval", "0.1", "--no-discovery")
    yield gw
    assert gw.stop() == 0, gw.stderr_text()


def test_every_client_command_logs_in(gateway: Gateway) -> None:
    port = str(gateway.port)
    login = ("--port", port, "--user", "alice", "--password-stdin")
    commands = [
        ["senders", "--json"],
        ["links", "--json"],
        ["request", "timer", "get_ticks"],
        ["send", "cli", "hello", "1"],
        ["listen", "--sender", "timer", "--count", "1"],
        ["top", "--json", "--iterations", "1", "--interval", "0.1"],
    ]
    for command in commands:
        r = run_sig(*command, *login, stdin="wonderland\n")
        assert r.returncode == 0, (command, r)
        r = run_sig(*command, "--port", port, "--user", "bob", SIG_PASSWORD="builder")
        assert r.returncode == 0, (command, r)
    senders = json.loads(run_sig("senders", "--json", *login, stdin="wonderland\n").stdout)
    assert "timer" in senders
    # Refusals last: each one slows the next answers to 127.0.0.1 (0.5 s, 1 s, 2 s...).
    bad = [("--user", "bob", "--password-stdin"), ("--user", "eve", "--password-stdin"), ()]
    for command, how in zip(commands[:3], bad, strict=True):
        r = run_sig(*command, "--port", port, "--timeout", "15", *how, stdin="nope\n")
        assert r.returncode == 1 and "NotAuthorised" in r.stderr, (command, r)
    stats = json.loads(
        run_sig("request", "$gateway", "stats", *login, "--timeout", "15",
                stdin="wonderland\n").stdout
    )
    assert stats["auth_failures"] == 3
    assert "login refused from 127.0.0.1" in gateway.stderr_text()


def test_help_says_why_there_is_no_password_flag() -> None:
    r = run_sig("listen", "--help")
    assert "--user" in r.stdout and "--password-stdin" in r.stdout
    assert "no --password flag" in " ".join(r.stdout.split())


def test_sighup_reloads_users_and_keeps_connections(gateway: Gateway, users: Path) -> None:
    port = str(gateway.port)
    listener = Proc(
        [sys.executable, "-m", "sig", "listen", "--port", port, "--sender", "timer",
         "--user", "alice"],
        env=child_env(SIG_PASSWORD="wonderland"),
    )  # fmt: skip
    try:
        listener.wait_line(lambda s: '"tick"' in s, T)
        passwd(users, "carol", "singer")
        r = run_sig("passwd", str(users), "alice", "--delete")
        assert r.returncode == 0, r
        before = len(gateway.err_lines)
        gateway.signal(signal.SIGHUP)
        gateway_log(gateway, "reload: 2 users", before)
        seen = len(listener.lines)
        listener.wait_line(lambda s: '"tick"' in s, T, start=seen)  # still connected
        r = run_sig("senders", "--port", port, "--user", "carol", SIG_PASSWORD="singer")
        assert r.returncode == 0, r
        r = run_sig("senders", "--port", port, "--user", "alice", SIG_PASSWORD="wonderland")
        assert r.returncode == 1 and "NotAuthorised" in r.stderr
        # a broken file keeps the users of before, and the gateway says why
        users.write_text("carol:plaintext\n")
        before = len(gateway.err_lines)
        gateway.signal(signal.SIGHUP)
        gateway_log(gateway, "keeping the 2 users", before)
        r = run_sig("senders", "--port", port, "--user", "carol", SIG_PASSWORD="singer")
        assert r.returncode == 0, r
        seen = len(listener.lines)
        listener.wait_line(lambda s: '"tick"' in s, T, start=seen)
        assert listener.popen.poll() is None
    finally:
        listener.kill()
    assert "Traceback" not in gateway.stderr_text()


def gateway_log(gateway: Gateway, text: str, start: int) -> None:
    """Wait for a gateway log line (stderr) containing ``text``."""
    from procs import wait_until

    wait_until(lambda: any(text in line for line in gateway.err_lines[start:]), T, text)


def test_serve_refuses_a_bad_users_file(tmp_path: Path) -> None:
    bad = tmp_path / "users"
    bad.write_text("alice:wonderland\n")
    r = run_sig("serve", "--host", "127.0.0.1", "--port", "0", "--users", str(bad))
    assert r.returncode == 2 and "plain-text passwords are refused" in r.stderr, r
    config = tmp_path / "sig.toml"
    config.write_text(f'[auth]\nusers = "{bad}"\nunknown = 1\n')
    r = run_sig("serve", "--config", str(config))
    assert r.returncode == 2 and "[auth] takes only" in r.stderr, r


def test_serve_banner_names_the_users_file(users: Path) -> None:
    gw = Gateway(0, "--users", str(users), "--no-timer", "--no-discovery")
    try:
        line = gw.wait_line(lambda s: s.startswith("  users"))
        assert str(users) in line and "no anonymous" in line
    finally:
        assert gw.stop() == 0
    assert os.path.exists(users)
