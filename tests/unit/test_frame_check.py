"""How often a frame hit by one dropped, inserted or changed byte gets through.

A serial line loses bytes (receiver overruns), gains them (noise on an idle
line) and changes them. The frame check (PROTOCOL.md section 1) must catch each
of these at least as well as an ideal 16-bit check, which lets 1 in 65,536
wrong frames through. This test measures it over every short body of the
vectors and a fixed set of random bodies, for the CRC the protocol uses
(CRC-16/GENIBUS) and for the one it replaced (CRC-16/CCITT-FALSE, which is the
same CRC without the final xor): the old one must fail the same bound, so the
bound can fail.

``python tests/unit/test_frame_check.py`` prints the figures that PROTOCOL.md
section 1 ("Why this check") quotes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import crcmod.predefined
from cobs import cobs

from sig.protocol.frame import FrameDecoder, crc16, encode_frame

VECTORS = json.loads((Path(__file__).parents[1] / "vectors.json").read_text())
#: The check before this one: CRC-16/GENIBUS without its final xor.
crc16_ccitt_false: Callable[[bytes], int] = crcmod.predefined.mkPredefinedCrcFun("crc-ccitt-false")
CHECKS: dict[str, Callable[[bytes], int]] = {
    "CRC-16/CCITT-FALSE (before)": crc16_ccitt_false,
    "CRC-16/GENIBUS (now)": crc16,
}
KINDS = ("dropped", "inserted", "changed")
SEED = 12
RANDOM_BODIES = 20_000  # bodies of 1..20 bytes; every byte position of each is hit
MAX_SHORT = 20


def bodies() -> list[bytes]:
    """The vectors' bodies of at most 20 bytes, then fixed random ones of 1..20 bytes."""
    out = [bytes.fromhex(m["body"]) for m in VECTORS["messages"]]
    out = [b for b in out if len(b) <= MAX_SHORT]
    rng = random.Random(SEED)
    out += [rng.randbytes(rng.randint(1, MAX_SHORT)) for _ in range(RANDOM_BODIES)]
    return out


def frame(body: bytes, check: Callable[[bytes], int]) -> bytes:
    """``COBS(body || check(body)) || 0x00``, the frame layout with any check."""
    return bytes(cobs.encode(body + check(body).to_bytes(2, "big"))) + b"\x00"


def damaged(wire: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """``wire`` with one byte dropped, inserted or changed, at every position.

    The delimiter stays: losing it joins two frames, which is another case.
    Inserted and changed bytes take any value, 0x00 included (it splits the frame).
    """
    n = len(wire) - 1
    for i in range(n):
        yield "dropped", wire[:i] + wire[i + 1 :]
    for i in range(n + 1):
        yield "inserted", wire[:i] + bytes((rng.randrange(256),)) + wire[i:]
    for i in range(n):
        yield "changed", wire[:i] + bytes((wire[i] ^ rng.randrange(1, 256),)) + wire[i + 1 :]


def accepted(wire: bytes, check: Callable[[bytes], int]) -> list[bytes]:
    """The bodies a section-1 decoder with ``check`` returns from ``wire`` (no size limit)."""
    out = []
    for part in wire.split(b"\x00")[:-1]:
        try:
            raw = cobs.decode(part)
        except cobs.DecodeError:
            continue
        if len(raw) > 2 and check(raw[:-2]) == int.from_bytes(raw[-2:], "big"):
            out.append(bytes(raw[:-2]))
    return out


def measure(check: Callable[[bytes], int]) -> dict[str, tuple[int, int]]:
    """Per kind of damage: (damaged frames that yielded a wrong body, damaged frames)."""
    rng = random.Random(SEED)
    counts = {k: [0, 0] for k in KINDS}
    for body in bodies():
        for kind, wire in damaged(frame(body, check), rng):
            c = counts[kind]
            c[1] += 1
            if any(b != body for b in accepted(wire, check)):
                c[0] += 1
    return {k: (bad, n) for k, (bad, n) in counts.items()}


def bound(trials: int) -> int:
    """Most wrong frames an ideal 16-bit check lets through in ``trials``, with margin.

    The count is about Poisson with mean trials / 65536; mean + 5 sigma + 1
    is exceeded with a probability far below 1e-5.
    """
    mean = trials / 65536
    return int(mean + 5 * mean**0.5 + 1)


def test_the_reference_decoder_is_the_real_one() -> None:
    # accepted() must say what FrameDecoder says, or the figures measure nothing.
    rng = random.Random(SEED)
    for body in bodies()[:1500]:
        for _, wire in damaged(encode_frame(body), rng):
            assert FrameDecoder().feed(wire) == accepted(wire, crc16), wire.hex()


def test_one_damaged_byte_is_caught_at_least_at_the_16_bit_rate() -> None:
    now = measure(crc16)
    before = measure(crc16_ccitt_false)
    for kind in KINDS:
        bad, n = now[kind]
        assert n > 200_000 // 3, kind  # enough trials for the bound to mean something
        assert bad <= bound(n), (kind, bad, n)
    # The old check fails the same bound for lost and for extra bytes: it can fail.
    for kind in ("dropped", "inserted"):
        bad, n = before[kind]
        assert bad > bound(n), (kind, bad, n)


def main() -> None:
    """Print the table of PROTOCOL.md section 1, "Why this check"."""
    print(f"{len(bodies())} bodies of 1..{MAX_SHORT} bytes, seed {SEED}, every byte position")
    print(f"{'check':<28} {'damage':<9} {'wrong bodies':>13} {'of frames':>10}  rate")
    for name, check in CHECKS.items():
        for kind, (bad, n) in measure(check).items():
            rate = f"1 in {n // bad:,}" if bad else "0"
            print(f"{name:<28} {kind:<9} {bad:>13} {n:>10}  {rate}")
    print(f"ideal 16-bit check: 1 in 65,536; the test's bound for ~{n} frames: {bound(n)}")


if __name__ == "__main__":
    main()
