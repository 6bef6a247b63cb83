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


COUNTERS = ("retransmits", "duplicates", "out_of_order", "bad_acks", "reliable_failures")


def reliable_rows(rv: dict, codes: dict[str, int], rows: list[str]) -> None:
    """PROTOCOL.md section 5, reliable UART mode: sequenced bodies, ACKs, the
    handshake, a signed sequenced session, refused bodies and the exchanges."""
    hs = rv["handshake"]
    for name in ("hello_body", "hello_frame", "welcome_body", "welcome_frame"):
        rows.append(f"static const sig_bytes_t VEC_REL_{name.upper()} = {c_bytes(bytes.fromhex(hs[name]))};")
    rows.append(f"#define VEC_REL_WINDOW {rv['window']}u")
    rows.append(f"#define VEC_REL_RTO_MS {rv['rto_ms']}u")
    rows.append(f"#define VEC_REL_MAX_RTO_MS {rv['max_rto_ms']}u")
    rows.append(f"#define VEC_REL_MAX_RETRIES {rv['max_retries']}u")
    rows.append("static const struct vec_rel_seq { const char *name; uint32_t seq; sig_bytes_t plain, body, frame; } "
                "VEC_REL_SEQ[] = {")
    for e in rv["sequenced"]:
        rows.append(f"  {{\"{e['name']}\", {e['seq']}u, {c_bytes(bytes.fromhex(e['plain']))}, "
                    f"{c_bytes(bytes.fromhex(e['body']))}, {c_bytes(bytes.fromhex(e['frame']))}}},")
    rows.append("};")
    rows.append("static const struct vec_rel_ack { uint32_t seq; sig_bytes_t body, frame; } VEC_REL_ACK[] = {")
    for e in rv["acks"]:
        rows.append(f"  {{{e['seq']}u, {c_bytes(bytes.fromhex(e['body']))}, {c_bytes(bytes.fromhex(e['frame']))}}},")
    rows.append("};")
    rows.append(f"static const sig_bytes_t VEC_REL_ACK_WITHOUT_FEATURE = "
                f"{c_bytes(bytes.fromhex(rv['ack_without_feature']['body']))};")
    rows.append("static const struct vec_rel_bad { const char *name; sig_bytes_t body; uint8_t reliable; uint32_t code; "
                "uint32_t ref; } VEC_REL_BAD[] = {")
    for e in rv["bad"]:
        rows.append(f"  {{\"{e['name']}\", {c_bytes(bytes.fromhex(e['body']))}, {1 if e['reliable'] else 0}u, "
                    f"{codes[e['error']]}u, {e['ref']}u}},")
    rows.append("};")
    sg = rv["signed"]
    rows.append(f"#define VEC_REL_SIGN_FEATURES {sg['features']}u")
    for name in ("key", "device_nonce", "gateway_nonce"):
        items = ",".join(f"0x{b:02x}" for b in bytes.fromhex(sg[name]))
        rows.append(f"static const uint8_t VEC_REL_SIGN_{name.upper()}[] = {{{items}}};")
    rows.append("static const struct vec_rel_sign { const char *name; uint8_t direction; uint32_t counter, seq; "
                "sig_bytes_t plain, sequenced, body, frame; } VEC_REL_SIGN[] = {")
    for e in sg["frames"]:
        rows.append(f"  {{\"{e['name']}\", {e['direction']}u, {e['counter']}u, {e['seq']}u, "
                    + ", ".join(c_bytes(bytes.fromhex(e[k])) for k in ("plain", "sequenced", "body", "frame"))
                    + "},")
    rows.append("};")
    # exchanges: one side's view, step by step
    rows.append("#define VEC_REL_MAX_OUT 4")
    rows.append("#define VEC_REL_MAX_KEPT 4")
    rows.append("struct vec_rel_step { uint32_t t_ms; char op; uint8_t sequenced; sig_bytes_t body, frame; "
                "uint8_t has_accepted; sig_bytes_t accepted; uint8_t ends_session; size_t n_out; "
                "sig_bytes_t out[VEC_REL_MAX_OUT], out_frames[VEC_REL_MAX_OUT]; uint32_t counters[5]; "
                "uint32_t expected, next_seq; size_t n_kept; uint32_t kept[VEC_REL_MAX_KEPT]; uint32_t rto_ms, retries; "
                "uint8_t has_deadline; uint32_t deadline_ms; };")
    ex_rows = []
    for i, ex in enumerate(rv["exchanges"]):
        rows.append(f"static const struct vec_rel_step vec_rel_steps_{i}[] = {{")
        for st in ex["steps"]:
            if len(st["out"]) > 4 or len(st["state"]["kept"]) > 4:
                raise SystemExit("raise VEC_REL_MAX_OUT / VEC_REL_MAX_KEPT")
            unknown = set(st["counters"]) - set(COUNTERS)
            if unknown:
                raise SystemExit(f"unknown counters {unknown}")
            acc = st.get("accepted")
            outs = [bytes.fromhex(b) for b in st["out"]]
            ofr = [bytes.fromhex(b) for b in st["out_frames"]]
            state = st["state"]
            kept = state["kept"]
            dl = state["deadline_ms"]
            rows.append(
                f"  {{{st['t_ms']}u, '{st['do'][0]}', {1 if st.get('sequenced') else 0}u, "
                f"{c_bytes(bytes.fromhex(st.get('body', '')))}, {c_bytes(bytes.fromhex(st.get('frame', '')))}, "
                f"{0 if acc is None else 1}u, {c_bytes(bytes.fromhex(acc or ''))}, "
                f"{1 if st.get('ends_session') else 0}u, {len(outs)}u, "
                f"{{{', '.join(c_bytes(b) for b in outs) or '{NULL, 0}'}}}, "
                f"{{{', '.join(c_bytes(b) for b in ofr) or '{NULL, 0}'}}}, "
                f"{{{', '.join(str(st['counters'].get(k, 0)) + 'u' for k in COUNTERS)}}}, "
                f"{state['expected']}u, {state['next_seq']}u, {len(kept)}u, "
                f"{{{', '.join(f'{k}u' for k in kept) or '0'}}}, {state['rto_ms']}u, {state['retries']}u, "
                f"{0 if dl is None else 1}u, {0 if dl is None else dl}u}},")
        rows.append("};")
        ex_rows.append(f"  {{\"{ex['name']}\", {1 if ex.get('optional_for_device') else 0}u, "
                       f"vec_rel_steps_{i}, {len(ex['steps'])}u}},")
    rows.append("static const struct vec_rel_exchange { const char *name; uint8_t optional_for_device; "
                "const struct vec_rel_step *steps; size_t n; } VEC_REL_EXCHANGES[] = {")
    rows += ex_rows
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
    reliable_rows(v["reliable"], codes, rows)

    rows.append("#define VEC_N(a) (sizeof(a) / sizeof((a)[0]))")
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out + pre + rows) + "\n")


if __name__ == "__main__":
    main()
