#!/usr/bin/env python3
"""Print what sig adds to a linked Cortex-M0 program: size(app) - size(baseline)."""

import subprocess
import sys


def sizes(tool: str, elf: str) -> tuple[int, int, int]:
    out = subprocess.run([tool, elf], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(x) for x in out.splitlines()[1].split()[:3])
    return text, data, bss


def main() -> None:
    tool, app, base = sys.argv[1:4]
    a, b = sizes(tool, app), sizes(tool, base)
    text, data, bss = (x - y for x, y in zip(a, b))
    print(f"sig in the linked app: .text {text} .data {data} .bss {bss} "
          f"(flash = text + data = {text + data} B, RAM = data + bss = {data + bss} B, "
          "bss includes the static sig_device_t)")


if __name__ == "__main__":
    main()
