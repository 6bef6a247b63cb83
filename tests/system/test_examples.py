"""Each example runs with one command against a gateway (``sig serve``)."""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from presence import plain
from procs import EXAMPLES, Gateway, Proc, run_sig, wait_until

T = 20.0


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway(0, "--timer-interval", "0.1")
    yield gw
    assert gw.stop() == 0


def example(name: str, *args: str, stdin: bool = False) -> Proc:
    return Proc([sys.executable, str(EXAMPLES / name), *args], stdin=stdin)



def test_generic_server_runs_the_timer_and_stops_cleanly() -> None:
    server = example("generic_server.py", "--host", "127.0.0.1", "--port", "0",
                     "--timer-interval", "0.1")  # fmt: skip
    try:
        line = server.wait_line(lambda s: "listening on" in s)
        port = line.rsplit(":", 1)[1]
        listen = run_sig("listen", "--port", port, "--sender", "timer", "--count", "2")
        assert listen.returncode == 0, listen.stderr
        events = [json.loads(x) for x in listen.stdout.splitlines()]
        assert [(e["sender"], e["event"]) for e in events] == [("timer", "tick")] * 2
        assert events[1]["data"] == events[0]["data"] + 1
        ticks = run_sig("request", "--port", port, "timer", "get_ticks")
        assert ticks.returncode == 0 and int(ticks.stdout) >= events[1]["data"]
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    finally:
        server.kill()


def test_sender_and_listener_examples(gateway: Gateway) -> None:
    port = str(gateway.port)
    listener = example("generic_client_listener.py", "--port", port,
                       "--sender", "mysender", "--event", "None", "--count", "5")  # fmt: skip
    try:
        listener.wait_line(lambda s: s.startswith("listening to"))
        sender = example("generic_client_sender.py", "--port", port, "--count", "2",
                         "--interval", "0.05")  # fmt: skip
        try:
            assert sender.wait(T) == 0, sender.stderr_text()
        finally:
            sender.kill()
        assert listener.wait(T) == 0, listener.stderr_text()
        # the incarnation is random per gateway start (PROTOCOL.md section 4)
        got = [re.sub(r', "incarnation": \d+', "", x) for x in listener.lines if x.startswith("[")]
        assert got == [
            '[mysender] #connect: {"events": ["tick", "tac"], "requests": ["get_count"]}',
            "[mysender] tick: 1",
            "[mysender] tac: 1",
            "[mysender] tick: 2",
            "[mysender] tac: 2",
        ]
        assert sender.lines[0] == "sender mysender registered with events ['tick', 'tac']"
    finally:
        listener.kill()


def test_sender_example_refuses_a_taken_name(gateway: Gateway) -> None:
    port = str(gateway.port)
    sender = example("generic_client_sender.py", "--port", port, "--name", "timer")
    try:
        assert sender.wait(T) == 1
        assert "refused" in sender.stderr_text()
    finally:
        sender.kill()


def test_interactive_listener_none_none_is_router_broadcast(gateway: Gateway) -> None:
    listener = example("generic_client_listener.py", "--port", str(gateway.port), "--count",
                       "2", stdin=True)  # fmt: skip
    try:
        assert listener.popen.stdin is not None
        listener.popen.stdin.write("None\nNone\n")
        listener.popen.stdin.flush()
        assert listener.wait(T) == 0, listener.stderr_text()
        assert "listening to (None, None)" in listener.lines[0]
        assert all("[timer] tick: " in x for x in listener.lines[1:3])
    finally:
        listener.kill()


def test_article_client(gateway: Gateway) -> None:
    port = str(gateway.port)
    watch = Proc([sys.executable, "-m", "sig", "listen", "--port", port,
                  "--sender", "mysender", "--count", "5"])  # fmt: skip
    try:
        # sig listen prints nothing until an event: wait for its registration instead.
        def listening() -> bool:
            links = run_sig("links", "--port", port, "--json")
            return any(
                x["peer"] == "sig-listen" and x["listeners"] for x in json.loads(links.stdout)
            )

        wait_until(listening, what="sig listen registered")
        article = example("article_client.py", "--port", port, "--interval", "0.1",
                          "--cycles", "2")  # fmt: skip
        try:
            assert article.wait(T) == 0, article.stderr_text()
        finally:
            article.kill()
        log = article.stderr_text()
        assert "[timer] Event tick received with data" in log
        assert "Traceback" not in log
        assert watch.wait(T) == 0, watch.stderr_text()
        got = [json.loads(x) for x in watch.lines]
        assert plain([(e["event"], e["data"]) for e in got]) == [
            ("#connect", {"events": ["tick", "tac"], "requests": []}),
            ("tick", 1),
            ("tac", None),
            ("tick", 2),
            ("tac", None),
        ]
    finally:
        watch.kill()


def test_the_locked_down_config_of_security_md_is_valid(tmp_path: Path) -> None:
    """SECURITY.md's example config loads as it is printed (TLS, users, ACLs, a keyed port)."""
    from sig.tools.cli import load_config

    text = (EXAMPLES.parent / "SECURITY.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    conf_path = tmp_path / "sig.toml"
    conf_path.write_text(block)
    conf = load_config(str(conf_path))
    assert conf["host"] == "0.0.0.0" and conf["users"] == "/etc/sig/users"
    assert conf["allow_anonymous"] is False and conf["tls_cert"] == "/etc/sig/gateway.crt"
    assert conf["serial"][0]["key_file"] == "/etc/sig/pump.key"
