"""Seed corpora for the libFuzzer targets, from tests/vectors.json.

    python3 tests/fuzz_seeds.py ../tests/vectors.json build/seeds

writes build/seeds/codec/* (every message body and frame, every bad body,
every stream, every CBOR data item of the vectors: inputs of
tests/fuzz_codec.c) and build/seeds/session/* (inputs of tests/fuzz_session.c:
the frames a gateway sends, one per file, and scripts of several frames with
0x5A bytes between them, which advance the fuzzer's clock and poll).
Standard library only; the file name is the SHA-1 of the content, as
libFuzzer names corpus files.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

# Types a gateway sends to a device (PROTOCOL.md "Message types").
TO_DEVICE = {
    "WELCOME",
    "PING",
    "PONG",
    "INVITE",
    "ERROR",
    "ACK",
    "SENDER_REGISTERED",
    "LISTENING",
    "EVENT",
    "REQUEST",
    "RESPONSE",
    "RETAINED",
}
TICK = b"\x5a"  # tests/fuzz_session.c: advances the clock to the next timer and polls
REQUEST = b"\x5f"  # tests/fuzz_session.c: the device sends a REQUEST


def write_all(out: Path, items: list[bytes]) -> int:
    """Write each distinct non-empty item as out/<sha1>; return how many."""
    out.mkdir(parents=True, exist_ok=True)
    seen = set()
    for item in items:
        if item and item not in seen:
            seen.add(item)
            (out / hashlib.sha1(item).hexdigest()).write_bytes(item)
    return len(seen)


def main(vectors_path: str, out_dir: str) -> None:
    """Build both corpora from the vectors file."""
    vec = json.loads(Path(vectors_path).read_text(encoding="utf-8"))
    msgs = vec["messages"]
    codec: list[bytes] = []
    for m in msgs:
        codec += [bytes.fromhex(m["body"]), bytes.fromhex(m["frame"])]
        for key in ("data",):
            if key in m["fields"] and m["fields"][key]:
                codec.append(bytes.fromhex(m["fields"][key]))
    codec += [bytes.fromhex(b["body"]) for b in vec["bad_bodies"]]
    codec += [bytes.fromhex(s["stream"]) for s in vec["streams"]]
    frames = [bytes.fromhex(m["frame"]) for m in msgs if m["type"] in TO_DEVICE]
    session = list(frames)
    session.append(TICK.join(frames))  # every gateway message, time passing in between
    session.append(b"".join(frames) + TICK * 12)  # then silence: PINGs, link timeout, HELLO again
    # requests, some answered in time
    session.append(REQUEST + TICK.join(frames) + REQUEST + TICK * 4)
    by_name = {m["name"]: bytes.fromhex(m["frame"]) for m in msgs}
    for script in (
        ["request", "request_params", "event", "event_connect", "ping"],
        ["response_ok", "response_error", "response_none", "invite", "welcome"],
        ["error", "sender_registered", "listening", "ack", "pong"],
    ):
        session.append(TICK.join(by_name[n] for n in script if n in by_name))
    # the reliable mode: its handshake, sequenced frames to a device, ACKs, refused bodies
    rel = vec["reliable"]
    welcome = bytes.fromhex(rel["handshake"]["welcome_frame"])
    to_device = [bytes.fromhex(st["frame"]) for ex in rel["exchanges"] for st in ex["steps"] if "frame" in st]
    seq_frames = [bytes.fromhex(e["frame"]) for e in rel["sequenced"] + rel["acks"]]
    session.append(welcome + TICK.join(to_device) + TICK * 20)  # retransmissions, then giving up
    session.append(welcome + b"".join(seq_frames) + REQUEST + REQUEST + TICK * 3)
    codec += [bytes.fromhex(e["body"]) for e in rel["sequenced"] + rel["acks"] + rel["bad"]]
    n_codec = write_all(Path(out_dir) / "codec", codec)
    n_session = write_all(Path(out_dir) / "session", session)
    print(f"seeds: {n_codec} codec, {n_session} session in {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
