#!/usr/bin/env python3
"""What signing costs on the Cortex-M0, from an instruction trace of QEMU.

usage: auth_cycles.py QEMU ELF OBJDUMP

Runs tests/auth_bench.c (built by ``make target-auth-bench``) under QEMU -M
microbit, one instruction per translation block, with every executed
instruction logged (``-d exec,nochain``), and splits the trace at the calls
of ``bench_mark``. For each stretch it prints the instructions executed and
the cycles they take on a Cortex-M0 by the timing table of the ARM Cortex-M0
TRM (DDI 0432C, 3.3): 1 cycle, loads and stores 2, LDM/STM/PUSH/POP 1+N
(POP with PC 3+N), taken branches 3, BL 4, BX/BLX 3, MULS 1 (the nRF51 has
the single-cycle multiplier), flash with no wait states (the nRF51 at
16 MHz). QEMU is not cycle-accurate; the instruction count is exact, and the
cycles are the TRM's for that exact instruction stream. Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

STRETCHES = {
    1: "signed TRIGGER, float32 (sig_device_trigger: encode, sign, COBS, write)",
    2: "its tag alone (sig_auth_tag: key block + one data block)",
    3: "signed EVENT received (sig_device_feed: decode, verify, dispatch)",
    5: "the same TRIGGER unsigned (no key)",
}


def disassembly(objdump: str, elf: str) -> tuple[dict[int, tuple[str, str]], int]:
    """PC -> (mnemonic, operands), and the address of bench_mark."""
    out = subprocess.run([objdump, "-d", elf], check=True, capture_output=True, text=True).stdout
    insns: dict[int, tuple[str, str]] = {}
    mark = -1
    for line in out.splitlines():
        m = re.match(r"^([0-9a-f]+) <bench_mark>:", line)
        if m:
            mark = int(m.group(1), 16)
        m = re.match(r"^\s+([0-9a-f]+):\s+(?:[0-9a-f]{4}\s?){1,2}\s+(\S+)\s*(.*)$", line)
        if m:
            insns[int(m.group(1), 16)] = (m.group(2), m.group(3))
    return insns, mark


def cycles(mnemonic: str, operands: str, taken: bool) -> int:
    """Cortex-M0 cycles of one instruction (TRM table 3-1)."""
    op = mnemonic.split(".")[0]
    regs = len(re.findall(r"r\d+|lr|pc|sp", operands.split("{")[-1])) if "{" in operands else 0
    if op in ("push", "stmia", "stm", "ldmia", "ldm"):
        return 1 + regs
    if op == "pop":
        return 3 + regs if "pc" in operands else 1 + regs
    if op.startswith("ldr") or op.startswith("str"):
        return 2
    if op == "bl":
        return 4
    if op in ("bx", "blx"):
        return 3
    if op == "b" or (op.startswith("b") and len(op) == 3 and op not in ("bic",)):
        return 3 if taken else 1
    if "pc" in operands.split(",")[0] and op in ("mov", "add"):
        return 3
    return 1


def main() -> None:
    qemu, elf, objdump = sys.argv[1:4]
    insns, mark = disassembly(objdump, elf)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "exec.log"
        run = subprocess.run(
            [qemu, "-M", "microbit", "-display", "none", "-monitor", "none", "-serial", "stdio",
             "-semihosting-config", "enable=on,target=native", "-singlestep",
             "-global", "nrf51-soc.sram-size=32768",
             "-d", "exec,nochain", "-D", str(log), "-kernel", elf],
            capture_output=True, text=True, timeout=600,
        )
        print(run.stdout.strip())
        if run.returncode != 0 or "auth bench: ok" not in run.stdout:
            sys.exit(f"auth_cycles: the bench failed ({run.returncode}): {run.stderr[-500:]}")
        trace = log.read_text()
        pcs = [int(m.group(1), 16) for m in re.finditer(r"^Trace \S+ \S+ \[[0-9a-f]+/([0-9a-f]+)/", trace, re.M)]
    counts: dict[int, list[int]] = {}
    stretch = -1
    for i, pc in enumerate(pcs):
        if pc == mark:
            stretch += 1
            continue
        if stretch < 0 or pc not in insns:
            continue
        mnem, ops = insns[pc]
        nxt = pcs[i + 1] if i + 1 < len(pcs) else pc
        width = 4 if mnem in ("bl",) else 2
        c = counts.setdefault(stretch, [0, 0])
        c[0] += 1
        c[1] += cycles(mnem, ops, nxt != pc + width)
    print("| measured stretch | instructions | Cortex-M0 cycles | at 16 MHz |")
    print("|---|---:|---:|---:|")
    for n, what in STRETCHES.items():
        ins, cyc = counts.get(n - 1, [0, 0])
        print(f"| {what} | {ins:,} | {cyc:,} | {cyc / 16:,.0f} µs |")


if __name__ == "__main__":
    main()
