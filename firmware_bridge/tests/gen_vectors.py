#!/usr/bin/env python3
"""Turn tests/vectors.json and the error-code table of PROTOCOL.md into a C
header for the C tests (standard library only). Usage:

    gen_vectors.py VECTORS_JSON PROTOCOL_MD OUT_H
"""

from __future__ import annotations

import json
import re
import sys

FIELDS_BY_TYPE = {
    "HELLO": "hello",
    "WELCOME": "welcome",
    "PING": "ping",
    "PONG": "ping",
    "INVITE": None,
    "ERROR": "error",
    "ACK": "ack",
    "REGISTER_SENDER": "register_sender",
    "SENDER_REGISTERED": "ref",
    "UNREGISTER_SENDER": "ref",
    "LISTEN": "listen",
    "LISTENING": "ref",
    "UNLISTEN": "ref",
    "TRIGGER": "trigger",
    "EVENT": "event",
    "REQUEST": "request",
    "RESPONSE": "response",
    "RETAINED": "retained",
}


def c_bytes(raw: bytes) -> str:
    """A sig_bytes_t initializer; static storage via a compound literal."""
    if not raw:
        return "{NULL, 0}"
    items = ",".join(f"0x{b:02x}" for b in raw)
    return f"{{(const uint8_t[]){{{items}}}, {len(raw)}u}}"


def c_arr(raw: bytes) -> str:
    if not raw:
        return "NULL, 0"
    items = ",".join(f"0x{b:02x}" for b in raw)
    return f"(const uint8_t[]){{{items}}}, {len(raw)}u"


def s(text: str | None) -> str:
    return c_bytes(b"" if text is None else text.encode("utf-8"))


def msg_init(kind: str, f: dict, idx: int, pre: list[str]) -> str:
    member = FIELDS_BY_TYPE[kind]
    t = f"SIG_MSG_{kind}"
    if member is None:
        return f"{{.type = {t}}}"
    if kind == "HELLO":
        body = (f".version = {f['version']}u, .name = {s(f['name'])}, .max_body = {f['max_body']}u, "
                f".keepalive_ms = {f['keepalive_ms']}u, .features = {f['features']}u, "
                f".credentials = {c_bytes(bytes.fromhex(f['credentials']))}")
    elif kind == "WELCOME":
        body = (f".version = {f['version']}u, .name = {s(f['name'])}, .max_body = {f['max_body']}u, "
                f".keepalive_ms = {f['keepalive_ms']}u, .features = {f['features']}u")
    elif kind in ("PING", "PONG"):
        body = f".token = {f['token']}u"
    elif kind == "ERROR":
        body = (f".code = {f['code']}u, .ref = {f['ref']}u, .message = {s(f['message'])}, "
                f".about = {f['about']}u")
    elif kind == "ACK":
        body = f".seq = {f['seq']}u"
    elif kind == "REGISTER_SENDER":
        evs = f["events"]
        ms = f["methods"]
        ev_name = f"vec_events_{idx}"
        me_name = f"vec_methods_{idx}"
        if evs:
            pre.append(f"static const sig_event_decl_t {ev_name}[] = {{"
                       + ", ".join(f"{{{r}u, {s(n)}}}" for r, n in evs) + "};")
        if ms:
            pre.append(f"static const sig_bytes_t {me_name}[] = {{" + ", ".join(s(m) for m in ms) + "};")
        body = (f".sender_ref = {f['sender_ref']}u, .name = {s(f['name'])}, "
                f".flags = {1 if f['default_handler'] else 0}u, .n_events = {len(evs)}u, "
                f".n_methods = {len(ms)}u, .events = {ev_name if evs else 'NULL'}, "
                f".methods = {me_name if ms else 'NULL'}, "
                f".meta = {c_bytes(bytes.fromhex(f.get('meta', '')))}")
    elif kind in ("SENDER_REGISTERED", "UNREGISTER_SENDER"):
        body = f".ref = {f['sender_ref']}u"
    elif kind in ("LISTENING", "UNLISTEN"):
        body = f".ref = {f['listener_id']}u"
    elif kind == "LISTEN":
        body = (f".listener_id = {f['listener_id']}u, .sender = {s(f['sender'])}, .event = {s(f['event'])}, "
                f".options = {f.get('options', 0)}u")
    elif kind == "TRIGGER":
        body = f".event_ref = {f['event_ref']}u, .data = {c_bytes(bytes.fromhex(f['data']))}"
    elif kind == "EVENT":
        body = (f".sender = {s(f['sender'])}, .event = {s(f['event'])}, "
                f".data = {c_bytes(bytes.fromhex(f['data']))}")
    elif kind == "REQUEST":
        body = (f".request_id = {f['request_id']}u, .sender = {s(f['sender'])}, "
                f".method = {s(f['method'])}, .data = {c_bytes(bytes.fromhex(f['data']))}")
    elif kind == "RESPONSE":
        body = (f".request_id = {f['request_id']}u, .status = {f['status']}u, "
                f".message = {s(f['message'])}, .data = {c_bytes(bytes.fromhex(f['data']))}")
    elif kind == "RETAINED":
        body = (f".sender = {s(f['sender'])}, .event = {s(f['event'])}, "
                f".data = {c_bytes(bytes.fromhex(f['data']))}, .flags = {1 if f['stale'] else 0}u")
    else:  # pragma: no cover
        raise SystemExit(f"unknown message type {kind}")
    return f"{{.type = {t}, .u.{member} = {{{body}}}}}"


def signing_rows(sg: dict, rows: list[str]) -> None:
    """PROTOCOL.md section 5: BLAKE2s digests, one session's signed frames, bad bodies."""
    rows.append("static const struct vec_blake2s { const uint8_t *in; size_t n; const uint8_t *key; size_t key_n; "
                "uint8_t outlen; const uint8_t *digest; size_t digest_n; } VEC_BLAKE2S[] = {")
    for e in sg["blake2s"]:
        rows.append(f"  {{{c_arr(bytes.fromhex(e['input']))}, {c_arr(bytes.fromhex(e['key']))}, "
                    f"{e['outlen']}u, {c_arr(bytes.fromhex(e['digest']))}}},")
    rows.append("};")
    for name in ("key", "device_nonce", "gateway_nonce"):
        items = ",".join(f"0x{b:02x}" for b in bytes.fromhex(sg[name]))
        rows.append(f"static const uint8_t VEC_SIGN_{name.upper()}[] = {{{items}}};")
    rows.append("static const struct vec_sign { const char *name; uint8_t direction; uint32_t counter; "
                "const uint8_t *plain; size_t plain_n; const uint8_t *body; size_t body_n; "
                "const uint8_t *frame; size_t frame_n; } VEC_SIGN[] = {")
    for e in sg["frames"]:
        rows.append(f"  {{\"{e['name']}\", {e['direction']}u, {e['counter']}u, {c_arr(bytes.fromhex(e['plain']))}, "
                    f"{c_arr(bytes.fromhex(e['body']))}, {c_arr(bytes.fromhex(e['frame']))}}},")
    rows.append("};")
    rows.append("static const struct vec_sign_bad { const char *name; uint8_t direction; const uint8_t *body; "
                "size_t n; const char *reason; } VEC_SIGN_BAD[] = {")
    for e in sg["bad"]:
        rows.append(f"  {{\"{e['name']}\", {e['direction']}u, {c_arr(bytes.fromhex(e['body']))}, \"{e['reason']}\"}},")
    rows.append("};")


def main() -> None:
    vec_path, proto_path, out_path = sys.argv[1:4]
    with open(vec_path, encoding="utf-8") as fh:
        v = json.load(fh)
    with open(proto_path, encoding="utf-8") as fh:
        proto = fh.read()
    codes = {name: int(num) for num, name in re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", proto, re.M)}
    if len(codes) < 19:
        raise SystemExit("could not read the error code table of PROTOCOL.md")

    out: list[str] = ["/* generated by tests/gen_vectors.py from tests/vectors.json; do not edit */",
                      "#include \"sig_device.h\"", ""]
    pre: list[str] = []
    rows: list[str] = []

    rows.append("static const struct vec_crc { const uint8_t *in; size_t n; uint16_t crc; } VEC_CRC[] = {")
    for e in v["crc16_genibus"]:
        rows.append(f"  {{{c_arr(bytes.fromhex(e['input']))}, 0x{e['crc']}u}},")
    rows.append("};")

    rows.append("static const struct vec_cobs { const uint8_t *dec; size_t dec_n; const uint8_t *enc; size_t enc_n; } VEC_COBS[] = {")
    for e in v["cobs"]:
        rows.append(f"  {{{c_arr(bytes.fromhex(e['decoded']))}, {c_arr(bytes.fromhex(e['encoded']))}}},")
    rows.append("};")

    rows.append("static const struct vec_varint { uint32_t value; const uint8_t *enc; size_t n; } VEC_VARINT[] = {")
    for e in v["varint"]:
        rows.append(f"  {{{e['value']}u, {c_arr(bytes.fromhex(e['hex']))}}},")
    rows.append("};")

    rows.append("static const struct vec_msg { const char *name; const uint8_t *body; size_t body_n; "
                "const uint8_t *frame; size_t frame_n; sig_msg_t msg; } VEC_MSG[] = {")
    for i, e in enumerate(v["messages"]):
        init = msg_init(e["type"], e["fields"], i, pre)
        rows.append(f"  {{\"{e['name']}\", {c_arr(bytes.fromhex(e['body']))}, "
                    f"{c_arr(bytes.fromhex(e['frame']))}, {init}}},")
    rows.append("};")

    rows.append("static const struct vec_bad { const char *name; const uint8_t *body; size_t n; uint32_t code; "
                "char answer; uint32_t about, ref; } VEC_BAD[] = {")
    for e in v["bad_bodies"]:
        answer = {"ERROR": "E", "RESPONSE": "R", "none": "N"}[e["answer"]]
        rows.append(f"  {{\"{e['name']}\", {c_arr(bytes.fromhex(e['body']))}, {codes[e['error']]}u, "
                    f"'{answer}', {e['about']}u, {e['ref']}u}},")
    rows.append("};")

    rows.append("#define VEC_MAX_BODIES 8")
    rows.append("static const struct vec_stream { const char *name; uint16_t max_body; const uint8_t *stream; size_t n; "
                "size_t n_bodies; sig_bytes_t bodies[VEC_MAX_BODIES]; sig_rx_stats_t stats; } VEC_STREAM[] = {")
    for e in v["streams"]:
        bodies = [bytes.fromhex(b) for b in e["bodies"]]
        if len(bodies) > 8:
            raise SystemExit("raise VEC_MAX_BODIES")
        st = e["stats"]
        unknown = set(st) - {"frames", "empty", "crc_errors", "framing_errors", "oversize"}
        if unknown:
            raise SystemExit(f"unknown counters {unknown}")
        stats = ", ".join(f".{k} = {st.get(k, 0)}u" for k in
                          ("frames", "empty", "crc_errors", "framing_errors", "oversize"))
        rows.append(f"  {{\"{e['name']}\", {e.get('max_body', 0)}u, {c_arr(bytes.fromhex(e['stream']))}, "
                    f"{len(bodies)}u, {{{', '.join(c_bytes(b) for b in bodies) or '{NULL, 0}'}}}, {{{stats}}}}},")
    rows.append("};")

    rows.append("static const struct vec_data { const char *name; const uint8_t *data; size_t n; char kind; "
                "double f; long long i; } VEC_DATA[] = {")
    for e in v["messages"]:
        if "data_value" not in e:
            continue
        dv = e["data_value"]
        raw = bytes.fromhex(e["fields"]["data"])
        if isinstance(dv, bool) or not isinstance(dv, (int, float)):
            kind, fv, iv = "o", "0.0", "0"
        elif isinstance(dv, int):
            kind, fv, iv = "i", "0.0", f"{dv}LL"
        else:
            kind, fv, iv = "f", repr(float(dv)), "0"
        rows.append(f"  {{\"{e['name']}\", {c_arr(raw)}, '{kind}', {fv}, {iv}}},")
    rows.append("};")

    signing_rows(v["signing"], rows)

    rows.append("#define VEC_N(a) (sizeof(a) / sizeof((a)[0]))")
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out + pre + rows) + "\n")


if __name__ == "__main__":
    main()
