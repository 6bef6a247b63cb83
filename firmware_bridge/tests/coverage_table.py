"""Line coverage of the library files by the fuzzers: one markdown table.

    python3 tests/coverage_table.py LLVM_COV OUT_DIR

OUT_DIR holds <target>_<seeded|empty>.profdata and the coverage binaries
fuzz_<target> (make coverage). Prints one row per run with the line
coverage of sig_device.c, sig_cbor.c, sig_wire.c and sig_frame.c, as
`llvm-cov export -summary-only` counts them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FILES = ("sig_device.c", "sig_cbor.c", "sig_wire.c", "sig_frame.c")


def line_cover(llvm_cov: str, binary: Path, profdata: Path) -> dict[str, tuple[int, int]]:
    """Covered and total lines per library file for one run."""
    out = subprocess.run(
        [llvm_cov, "export", "-summary-only", str(binary), f"-instr-profile={profdata}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, tuple[int, int]] = {}
    for f in json.loads(out)["data"][0]["files"]:
        name = Path(f["filename"]).name
        if name in FILES and Path(f["filename"]).parent.name == "src":
            lines = f["summary"]["lines"]
            found[name] = (lines["covered"], lines["count"])
    return found


def main(llvm_cov: str, out_dir: str) -> None:
    """Print the table for every run found in out_dir."""
    d = Path(out_dir)
    print("| fuzzer | corpus | " + " | ".join(FILES) + " |")
    print("|---|---|" + "---|" * len(FILES))
    for target in ("codec", "session"):
        for start in ("empty", "seeded"):
            prof = d / f"{target}_{start}.profdata"
            if not prof.exists():
                continue
            cov = line_cover(llvm_cov, d / f"fuzz_{target}", prof)
            cells = []
            for name in FILES:
                c, n = cov.get(name, (0, 0))
                cells.append(f"{100.0 * c / n:.0f}% ({c}/{n})" if n else "-")
            print(f"| {target} | {start} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
