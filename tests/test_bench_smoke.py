"""The benchmark scripts still run (tiny counts: seconds, not minutes).

Not timed tests: they check that each script completes, loses nothing on an
unloaded run, and prints its table. The router benchmark runs both sides, so
mosquitto and paho-mqtt are part of the test setup (run-tests installs them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


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
