"""The benchmark scripts still run (tiny counts: seconds, not minutes).

Not timed tests: they check that each script completes, loses nothing on an
unloaded run, and prints its table. The router benchmark runs both sides, so
mosquitto and paho-mqtt are part of the test setup (run-tests installs them).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(script: str, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "machine:" in proc.stdout and "method:" in proc.stdout
    return proc.stdout


def test_router_benchmark_runs_sig_and_mosquitto() -> None:
    out = run(
        "router.py",
        *("--runs", "1", "--count", "2000", "--senders", "4", "--sender-procs", "2"),
        *("--requests", "100", "--require-mosquitto"),
    )
    assert "| fan-in 1->1, events/s" in out
    assert "| request p50, us" in out
    ratio_rows = [line for line in out.splitlines() if line.startswith("| fan-out")]
    assert ratio_rows and ratio_rows[0].rstrip(" |").split("|")[-1].strip() not in ("", "-")
    assert "lost=0" in out  # 2,000 events on an idle loopback: nothing may go missing


def test_uart_benchmark_runs() -> None:
    out = run("uart.py", "--runs", "1", "--count", "500", "--latency-count", "50")
    assert "added latency p50, us" in out
    assert "'lost': 0" in out


def test_scale_benchmark_runs() -> None:
    out = run(
        "scale.py",
        *("--runs", "1", "--clients", "20", "--per-client", "5", "--triggers", "1000"),
        *("--idle", "0.2", "--core-n", "1000"),
    )
    assert re.search(r"connected / subscriptions\s*\|\s*20 / 100 ", out), out


def test_soak_benchmark_runs_every_scenario(tmp_path: Path) -> None:
    """bench/soak.py --smoke: each scenario at a tiny scale finishes and reports its figures.

    No figure is judged (the soak table shows them before and after the fixes
    of issue 9): the run must end by itself, print every row, and each
    scenario must have measured something (the flood wrote, the probe was
    answered, every registration was made and torn down, the idle connections
    were opened, the second requester got answers).
    """
    report = tmp_path / "soak.json"
    # The teardown scenario registers more senders on one link than the
    # per-link limit (256 by default) allows: lift it for the run.
    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nsenders_per_link = 100000\nlisteners_per_link = 100000\n")
    serve = ("--serve-arg=--config", f"--serve-arg={limits}")
    out = run("soak.py", "--smoke", "--json", str(report), *serve, timeout=180)
    for figure in (
        "| rss      | gateway RSS max, MiB",
        "| rss      | side client: answered / sent",
        "| lag      | max gap between probe PONGs (rss run), ms",
        "| lag      | max_loop_lag_ms in $gateway stats",
        "| teardown | 600 senders: event-loop stall, ms",
        "| teardown | 600 listeners: event-loop stall, ms",
        "| fd       | served with RLIMIT_NOFILE 128 + 150 idle connections",
        "| busy     | second requester got BUSY",
    ):
        assert figure in out, out
    results = json.loads(report.read_text())["results"]
    rss = results["rss"]
    assert rss["flood"]["frames"] > 0 and rss["flood_connected"] == 4
    assert rss["lag"]["probe_pongs"] >= 20 and rss["side"]["sent"] > 0
    assert rss["rss_max_mib"] >= rss["rss_start_mib"] > 0
    runs = results["teardown"]["runs"]
    assert [(r["kind"], r["n"]) for r in runs] == [
        ("senders", 300),
        ("senders", 600),
        ("listeners", 300),
        ("listeners", 600),
    ]
    for r in runs:
        assert r["accepted"] == r["registered_seen"] == r["n"] and r["done"], r
    assert results["fd"]["opened"] == 150 and results["fd"]["gateway_fds"] > 0
    busy = results["busy"]["second"]
    assert busy["ok"] + busy["busy"] + busy["other"] > 0


def test_teardown_benchmark_runs() -> None:
    out = run("teardown.py", "1000")
    assert re.search(r"\| 1000 \| [\d.]+ \([\d.]+-[\d.]+\) \| [\d.]+ ", out), out
    out = run("teardown.py", "--tcp", "500")
    assert re.search(r"\| 500 \| [\d.]+ \(", out), out


def test_http_side_benchmark_runs() -> None:
    out = run("http_side.py", "--runs", "1", "--count", "500", "--links", "3")
    assert "| HTTP side on, no page open, us per event |" in out
    assert "| GET /metrics, ms per scrape |" in out


def test_login_benchmark_runs_sig_and_mosquitto() -> None:
    out = run("login.py", "--runs", "1", "--logins", "3", "--seconds", "0.3")
    for row in ("| sig ", "| sig-inline ", "| sig-anonymous ", "| mqtt ", "| mqtt-anonymous "):
        assert row in out, out


def test_tls_benchmark_runs_plain_and_tls() -> None:
    out = run("tls.py", "--runs", "1", "--count", "2000", "--requests", "50", "--connects", "5")
    assert "| fan-in 1->1, events/s" in out and "| connect to session p50, us" in out
    assert "lost: plain=0 tls=0" in out


def test_acl_benchmark_runs() -> None:
    out = run("acl.py", "--count", "2000", "--links", "3")
    for row in ("no [acl]", "[acl], 1 principal", "[acl], 3 principals"):
        assert re.search(rf"\| {re.escape(row)} +\| [\d.]+ +\| [\d.]+ +\| [\d.]+ ", out), out


def test_reliable_benchmark_runs() -> None:
    """bench/reliable.py: a clean and a noisy cell, every event delivered once and in order."""
    out = run(
        "reliable.py",
        *("--runs", "1", "--seconds", "0.5", "--noise", "0,0.01", "--payloads", "4"),
        *("--rto-ms", "50"),
        timeout=180,
    )
    rows = [line for line in out.splitlines() if re.match(r"\| (0|1)% ", line)]
    assert len(rows) == 2, out
    assert all("| yes " in row and "| 100 % " in row for row in rows), out
