/* libFuzzer: the frame decoder, the message decoder (and re-encoder), the
 * device's receive path (same verdict as the message decoder) and the CBOR
 * walker (same verdict as the previous one, tests/ref_cbor.c) on arbitrary
 * bytes. `make fuzz` (clang), seeded from the vectors (tests/fuzz_seeds.py). */
#include <stdlib.h>
#include <string.h>

#include "gw_codec.h"
#include "ref_cbor.h"
#include "sig_device.h"
#include "sig_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The CBOR reader API on the input; what it reads is written back with the
 * writer and read again: the same value (floats: the same bits, NaN as NaN),
 * never longer than what was read (preferred serialisation). */
static void cbor_api(const uint8_t *data, size_t size)
{
    static uint8_t out[SIG_MAX_BODY_LIMIT];
    sig_cbor_reader_t r, back;
    sig_cbor_writer_t w;
    size_t n = 0;
    int kind;
    for (kind = 0; kind < 8; kind++) {
        int64_t iv, iv2;
        double dv, dv2;
        float fv, fv2;
        bool bv, bv2;
        sig_bytes_t sv, sv2;
        uint32_t nv, nv2;
        sig_err_t e = SIG_ERR_CBOR, e2 = SIG_ERR_CBOR;
        int same = 0;
        sig_cbor_reader_init(&r, data, size);
        sig_cbor_writer_init(&w, out, sizeof out);
        switch (kind) {
        case 0: e = sig_cbor_get_int(&r, &iv); if (e == SIG_OK) sig_cbor_put_int(&w, iv); break;
        case 1: e = sig_cbor_get_double(&r, &dv); if (e == SIG_OK) sig_cbor_put_float64(&w, dv); break;
        case 2: e = sig_cbor_get_float(&r, &fv); if (e == SIG_OK) sig_cbor_put_float32(&w, fv); break;
        case 3: e = sig_cbor_get_bool(&r, &bv); if (e == SIG_OK) sig_cbor_put_bool(&w, bv); break;
        case 4: e = sig_cbor_get_null(&r); if (e == SIG_OK) sig_cbor_put_null(&w); break;
        case 5: e = sig_cbor_get_text(&r, &sv); if (e == SIG_OK) sig_cbor_put_text(&w, (const char *)sv.ptr, sv.len); break;
        case 6: e = sig_cbor_get_bytes(&r, &sv); if (e == SIG_OK) sig_cbor_put_bytes(&w, sv.ptr, sv.len); break;
        default: e = sig_cbor_get_map(&r, &nv);
            if (e == SIG_OK) { sig_cbor_put_map(&w, nv); } else if ((e = sig_cbor_get_array(&r, &nv)) == SIG_OK) { sig_cbor_put_array(&w, nv); kind = 8; }
            break;
        }
        if (e != SIG_OK) {
            if (r.pos != 0) {
                abort(); /* a failed get does not move */
            }
            continue;
        }
        if (sig_cbor_finish(&w, &n) != SIG_OK || n > r.pos || r.pos > size) {
            abort();
        }
        sig_cbor_reader_init(&back, out, n);
        switch (kind) {
        case 0: e2 = sig_cbor_get_int(&back, &iv2); same = iv2 == iv; break;
        case 1: e2 = sig_cbor_get_double(&back, &dv2); same = memcmp(&dv, &dv2, sizeof dv) == 0 || (dv != dv && dv2 != dv2); break;
        case 2: e2 = sig_cbor_get_float(&back, &fv2); same = memcmp(&fv, &fv2, sizeof fv) == 0 || (fv != fv && fv2 != fv2); break;
        case 3: e2 = sig_cbor_get_bool(&back, &bv2); same = bv2 == bv; break;
        case 4: e2 = sig_cbor_get_null(&back); same = 1; break;
        case 5: e2 = sig_cbor_get_text(&back, &sv2); same = sv2.len == sv.len && (sv.len == 0 || memcmp(sv.ptr, sv2.ptr, sv.len) == 0); break;
        case 6: e2 = sig_cbor_get_bytes(&back, &sv2); same = sv2.len == sv.len && (sv.len == 0 || memcmp(sv.ptr, sv2.ptr, sv.len) == 0); break;
        case 7: e2 = sig_cbor_get_map(&back, &nv2); same = nv2 == nv; break;
        default: e2 = sig_cbor_get_array(&back, &nv2); same = nv2 == nv; break;
        }
        if (kind >= 7) {
            same = same || e2 == SIG_ERR_CBOR; /* the items of a container are not written back */
            e2 = SIG_OK;
        }
        if (e2 != SIG_OK || !same) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t rxbuf[66];
    sig_rx_t rx;
    sig_msg_t m;
    size_t i;
    if (sig_rx_init(&rx, rxbuf, sizeof rxbuf, 64) != SIG_OK) {
        abort();
    }
    for (i = 0; i < size; i++) {
        if (sig_rx_feed(&rx, data[i])) {
            sig_bytes_t b = sig_rx_body(&rx);
            if (b.len < 1 || b.len > 64) {
                abort();
            }
        }
    }
    {
        sig__rx_msg_t d;
        uint8_t code = sig__rx_parse(data, size, &d);
        if (code != SIG__RX_IGNORE && code != sig_err_wire_code(sig_msg_decode(data, size, &m))) {
            abort();
        }
    }
    {
        sig_cbor_reader_t a, b;
        sig_cbor_reader_init(&a, data, size);
        sig_cbor_reader_init(&b, data, size);
        if (sig_cbor_skip(&a) != ref_cbor_skip(&b) || a.pos != b.pos) {
            abort();
        }
    }
    if (sig_msg_decode(data, size, &m) == SIG_OK && m.type != SIG_MSG_REGISTER_SENDER) {
        static uint8_t out[SIG_MAX_BODY_LIMIT]; /* the re-encoding is never longer than the input */
        size_t n;
        sig_msg_t m2;
        /* re-encoded by the full codec: a device profile encodes only what a device sends */
        if (gw_msg_encode(&m, out, sizeof out, &n) != SIG_OK || sig_msg_decode(out, n, &m2) != SIG_OK ||
            m2.type != m.type) {
            abort();
        }
    }
    (void)!sig_cbor_check_data(data, size);
    cbor_api(data, size);
    {
        /* COBS and the frame encoder: the input as a body comes back intact */
        static uint8_t enc[SIG_FRAME_ENCODED_MAX(2000)], dec[2002], rxb[2002];
        size_t en = 0, dn = 0, k, got = 0;
        sig_rx_t rx2;
        if (sig_cobs_encode(enc, sizeof enc, data, size, &en) != SIG_OK || memchr(enc, 0, en) != NULL ||
            sig_cobs_decode(dec, sizeof dec, enc, en, &dn) != SIG_OK || dn != size ||
            (size > 0 && memcmp(dec, data, size) != 0)) {
            abort();
        }
        (void)!sig_cobs_decode(dec, sizeof dec, data, size, &dn); /* the input as COBS: any result, in bounds */
        if (size > 0 && size <= 2000) {
            if (sig_frame_encode(enc, sizeof enc, data, size, &en) != SIG_OK ||
                sig_rx_init(&rx2, rxb, sizeof rxb, 2000) != SIG_OK) {
                abort();
            }
            for (k = 0; k < en; k++) {
                got += sig_rx_feed(&rx2, enc[k]);
            }
            if (got != 1 || sig_rx_body(&rx2).len != size || memcmp(sig_rx_body(&rx2).ptr, data, size) != 0) {
                abort();
            }
        }
    }
    return 0;
}
