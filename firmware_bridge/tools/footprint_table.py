#!/usr/bin/env python3
"""One footprint table of the sig device library: per target and per profile.

usage: footprint_table.py [--build DIR] [--only TARGET[,TARGET...]]

For every target (Cortex-M0, Cortex-M4F, AVR ATmega328P) and every profile
(PROFILES below: a name and the -D flags it adds) this builds the same probe
as `make footprint` (tests/footprint_app.c: a sensor app using the session
API, and the same program without sig), links both with --gc-sections and a
map, and counts the library's share of the linked app the same way
tests/footprint_share.py does (its map parsers are imported, not copied):
every input section the link kept from a library object, plus every
libgcc/libc member the library needs that the empty program does not have.
sizeof(sig_device_t) is read from the probe's `sig_device_size_probe` array.
Prints a Markdown table (firmware_bridge/README.md, "Footprint table").

Adding a profile is one line in PROFILES.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent  # firmware_bridge/
sys.path.insert(0, str(HERE / "tests"))
import footprint_share  # noqa: E402  (tests/footprint_share.py: map parsers)

#: profile name -> extra compiler flags (sig_config.h macros of that profile)
PROFILES: dict[str, list[str]] = {
    "base": [],
    "auth": ["-DSIG_CONFIG_AUTH=1"],  # signed frames (PROTOCOL.md section 5), with a key
    "reliable": ["-DSIG_CONFIG_RELIABLE=1"],  # the reliable UART mode (section 5), window 2
    "auth_reliable": ["-DSIG_CONFIG_AUTH=1", "-DSIG_CONFIG_RELIABLE=1"],
}

COMMON = ["-std=c99", "-Os", "-ffunction-sections", "-fdata-sections", "-fno-common",
          "-Wall", "-Wextra", "-pedantic"]


@dataclass(frozen=True)
class Target:
    """A compiler and the flags of one MCU; `link` is added when linking."""

    name: str
    cc: str
    nm: str
    flags: tuple[str, ...]
    link: tuple[str, ...]


TARGETS = {
    "m0": Target("Cortex-M0", os.environ.get("ARM_CC", "arm-none-eabi-gcc"),
                 os.environ.get("ARM_NM", "arm-none-eabi-nm"),
                 ("-mcpu=cortex-m0", "-mthumb"),
                 ("-specs=nano.specs", "-specs=nosys.specs")),
    "m4f": Target("Cortex-M4F", os.environ.get("ARM_CC", "arm-none-eabi-gcc"),
                  os.environ.get("ARM_NM", "arm-none-eabi-nm"),
                  ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                  ("-specs=nano.specs", "-specs=nosys.specs")),
    "avr": Target("AVR ATmega328P", os.environ.get("AVR_CC", "avr-gcc"),
                  os.environ.get("AVR_NM", "avr-nm"),
                  ("-mmcu=atmega328p",), ()),
}

#: output sections of each kind (ARM: .rodata is in flash; AVR: constants
#: without PROGMEM are in .data, i.e. flash *and* RAM)
TEXT = (".text", ".rodata", ".ARM.exidx", ".init_array", ".fini_array")


@dataclass
class Row:
    target: str
    profile: str
    text: int
    data: int
    bss: int
    device: int


def run(cmd: list[str]) -> str:
    """Run a tool; on failure show its command and output, then stop."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"footprint_table: failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    if p.stderr.strip():
        sys.stderr.write(p.stderr)
    return p.stdout


def compiler_version(cc: str) -> str:
    """First line of `cc --version`, e.g. 'arm-none-eabi-gcc ... 12.2.1 ...'."""
    return run([cc, "--version"]).splitlines()[0]


def library_share(app_map: Path, base_map: Path, lib: set[str]) -> tuple[int, int, int]:
    """(.text+.rodata, .data, .bss) bytes of the library in the linked app.

    Same rule as tests/footprint_share.py: kept input sections of the library
    objects, plus the archive members they need (transitively, by the cross
    reference table) that the empty program does not contain.
    """
    secs = footprint_share.memory_map(str(app_map))
    kept = {f for _, _, _, f in secs}
    base = {f for _, _, _, f in footprint_share.memory_map(str(base_map))}
    refs = footprint_share.cross_refs(str(app_map))
    needed: set[str] = set()
    frontier = set(lib)
    while frontier:
        new = {d for d, users in refs.values()
               if "(" in d and d not in needed and frontier.intersection(users)}
        needed |= new
        frontier = new
    counted = lib | {f for f in needed if f in kept and f not in base}
    text = sum(n for o, _, n, f in secs if f in counted and o.startswith(TEXT))
    data = sum(n for o, _, n, f in secs if f in counted and o.startswith(".data"))
    bss = sum(n for o, _, n, f in secs if f in counted and o.startswith(".bss"))
    return text, data, bss


def device_size(t: Target, obj: Path) -> int:
    """sizeof(sig_device_t): the size nm reports for sig_device_size_probe."""
    for line in run([t.nm, "-S", "-t", "d", str(obj)]).splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == "sig_device_size_probe":
            return int(parts[1])
    sys.exit(f"footprint_table: no sig_device_size_probe in {obj}")


def measure(t: Target, profile: str, defs: list[str], out: Path) -> Row:
    """Build library, app and empty app for one target and profile; count."""
    out.mkdir(parents=True, exist_ok=True)
    cflags = [*COMMON, *t.flags, *defs, f"-I{HERE / 'src'}"]
    lib = []
    for src in sorted((HERE / "src").glob("*.c")):
        obj = out / (src.stem + ".o")
        run([t.cc, *cflags, "-c", str(src), "-o", str(obj)])
        lib.append(obj)
    app_o, base_o = out / "footprint_app.o", out / "footprint_base.o"
    probe = str(HERE / "tests" / "footprint_app.c")
    run([t.cc, *cflags, "-c", probe, "-o", str(app_o)])
    run([t.cc, *cflags, "-DFOOTPRINT_BASELINE", "-c", probe, "-o", str(base_o)])
    link = [t.cc, *t.flags, "-Os", "-Wl,--gc-sections", *t.link, "-Wl,--cref"]
    run([*link, f"-Wl,-Map={out / 'app.map'}", str(app_o), *map(str, lib),
         "-o", str(out / "app.elf")])
    run([*link, f"-Wl,-Map={out / 'base.map'}", str(base_o), "-o", str(out / "base.elf")])
    text, data, bss = library_share(out / "app.map", out / "base.map", {str(o) for o in lib})
    return Row(t.name, profile, text, data, bss, device_size(t, app_o))


def table(rows: list[Row]) -> str:
    """The Markdown table (bytes, thousands separated)."""
    lines = ["| target | profile | .text (+.rodata) | .data | .bss | flash (.text+.data) "
             "| RAM (.data+.bss) | sizeof(sig_device_t) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.target} | {r.profile} | {r.text:,} | {r.data:,} | {r.bss:,} "
                     f"| {r.text + r.data:,} | {r.data + r.bss:,} | {r.device:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=str(HERE / "build" / "footprint"),
                    help="build directory (default: build/footprint)")
    ap.add_argument("--only", default=",".join(TARGETS),
                    help="comma-separated targets, of: " + ", ".join(TARGETS))
    args = ap.parse_args()
    keys = [k for k in args.only.split(",") if k]
    unknown = [k for k in keys if k not in TARGETS]
    if unknown:
        sys.exit(f"footprint_table: unknown target(s) {unknown}; known: {list(TARGETS)}")
    build = Path(args.build)
    for k in keys:
        if shutil.which(TARGETS[k].cc) is None:
            sys.exit(f"footprint_table: {TARGETS[k].cc} not found (target {k})")
    rows = [measure(TARGETS[k], p, d, build / k / p) for k in keys for p, d in PROFILES.items()]
    compilers = sorted({re.sub(r"\s+", " ", compiler_version(TARGETS[k].cc)) for k in keys})
    print("Library share of a linked sensor app (tests/footprint_app.c), -Os, --gc-sections, "
          "default sig_config.h plus the profile's flags; bytes.")
    print("Compilers: " + "; ".join(compilers) + ".")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
