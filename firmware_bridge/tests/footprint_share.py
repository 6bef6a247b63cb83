#!/usr/bin/env python3
"""The library's own share of a linked Cortex-M0 image.

usage: footprint_share.py NM APP.elf APP.map BASE.map LIB.o...

APP.map and BASE.map are GNU ld maps written with -Map and --cref.

Counted as the library:
  * every input section the final link kept from one of LIB.o (functions,
    constant tables, unnamed string literals, .data, .bss), found in the
    memory map of APP.map, so a static function of the app with the same
    name as one of the library's is never mixed up with it;
  * every libgcc/libc archive member the link kept that the library needs
    (a LIB.o references one of its symbols, directly or through another such
    member, by the cross reference table) and that the empty program
    (BASE.map) does not already contain: __aeabi_* division, shifts, float
    conversions, switch-table helpers, memcpy, ...  A member the app's own
    code also uses still counts toward the library: the library needs it.
Printed: per symbol from `nm --size-sort -S` of APP.elf (assigned to an
input section by address), helpers, and the flash (.text + .rodata + .data)
and RAM (.data + .bss) totals.
"""

import re
import subprocess
import sys

FLASH = (".text", ".rodata", ".data", ".init_array", ".fini_array", ".ARM.exidx")
RAM = (".data", ".bss")


def memory_map(path: str) -> list[tuple[str, int, int, str]]:
    """(output section, address, size, file) of every kept allocated input section."""
    lines = open(path).read().split("\n")
    start = next(i for i, s in enumerate(lines) if s.startswith("Linker script and memory map"))
    end = next((i for i, s in enumerate(lines) if s.startswith("Cross Reference Table")), len(lines))
    out, pending, result = "", None, []
    entry = re.compile(r"^\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S.*)$")
    for s in lines[start:end]:
        m = re.match(r"^(\.\S+)", s)
        if m:
            out = m.group(1)
            continue
        m = re.match(r"^ (\.\S+|COMMON)(.*)$", s)
        if m:
            pending = m.group(1)
            rest = m.group(2)
            if not rest.strip():
                continue
            s = rest
        if pending is None:
            continue
        m = entry.match(s)
        if m and not m.group(3).startswith(("0x", "(")):
            addr, size = int(m.group(1), 16), int(m.group(2), 16)
            if addr and size and out.startswith(FLASH + RAM):
                result.append((out, addr, size, m.group(3).strip()))
        pending = None
    return result


def cross_refs(path: str) -> dict[str, tuple[str, list[str]]]:
    """symbol -> (defining file, referencing files)"""
    lines = open(path).read().split("\n")
    start = next(i for i, s in enumerate(lines) if s.startswith("Cross Reference Table"))
    table: dict[str, tuple[str, list[str]]] = {}
    sym = None
    for s in lines[start + 3:]:
        if not s.strip():
            continue
        if s[0] != " ":
            parts = s.split(None, 1)
            if len(parts) < 2:
                continue
            sym = parts[0]
            table[sym] = (parts[1].strip(), [])
        elif sym is not None:
            table[sym][1].append(s.strip())
    return table


def main() -> None:
    nm, elf, app_map, base_map = sys.argv[1:5]
    lib = set(sys.argv[5:])
    secs = memory_map(app_map)
    kept_files = {f for _, _, _, f in secs}
    base_files = {f for _, _, _, f in memory_map(base_map)}

    # archive members the library needs, transitively
    refs = cross_refs(app_map)
    needed: set[str] = set()
    frontier = set(lib)
    while frontier:
        new = set()
        for definer, users in refs.values():
            if "(" in definer and definer not in needed and frontier.intersection(users):
                new.add(definer)
        needed |= new
        frontier = new
    helpers = {f for f in needed if f in kept_files and f not in base_files}
    counted = lib | helpers

    def owner(addr: int) -> str | None:
        for _, a, n, f in secs:
            if a <= addr < a + n:
                return f
        return None

    syms = []
    out = subprocess.run([nm, "--size-sort", "-S", "-t", "d", elf],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and owner(int(parts[0])) in counted:
            syms.append((int(parts[1]), parts[2], parts[3], owner(int(parts[0]))))

    def short(f: str) -> str:
        return re.sub(r"^.*/([^/]+\.a\([^)]*\))$", r"\1", f).replace("build/arm/", "")

    print("library symbols in the linked image (nm --size-sort -S, bytes):")
    for size, kind, name, f in syms:
        print(f"  {size:5d} {kind} {name:32s} {short(f)}")
    flash = sum(n for o, _, n, f in secs if f in counted and o.startswith(FLASH))
    ram = sum(n for o, _, n, f in secs if f in counted and o.startswith(RAM))
    named = sum(s for s, k, _, _ in syms if k.lower() in "tr")
    text_ro = sum(n for o, _, n, f in secs if f in counted and o.startswith((".text", ".rodata")))
    help_b = sum(n for o, _, n, f in secs if f in helpers and o.startswith(FLASH))
    print("helpers from libgcc/libc that the library pulls in: "
          + (", ".join(f"{short(f)}" for f in sorted(helpers)) or "none")
          + f" ({help_b} B, included)")
    print(f"unnamed library bytes (string literals, alignment inside sections): {text_ro - named} B")
    print(f"LIBRARY SHARE: flash {flash} B (goal < 4096), RAM {ram} B "
          "(RAM: the library's own .data/.bss only; the sig_device_t is the app's)")


if __name__ == "__main__":
    main()
