/* Codec tests: every entry of tests/vectors.json (via build/vectors.h), CBOR
 * against RFC 8949 Appendix A, and seeded random input. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sig_device.h"
#include "sig_internal.h"
#include "ref_cbor.h"
#include "ref_rx.h"
#include "test_util.h"
#include "gw_codec.h"
#include "unittest.h"
#include "vectors.h"

static const struct vec_msg *vec_msg(const char *name)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        if (strcmp(VEC_MSG[i].name, name) == 0) {
            return &VEC_MSG[i];
        }
    }
    return NULL;
}

static const struct vec_data *vec_data(const char *name)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_DATA); i++) {
        if (strcmp(VEC_DATA[i].name, name) == 0) {
            return &VEC_DATA[i];
        }
    }
    return NULL;
}

TEST(crc_vectors)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_CRC); i++) {
        CHECK(sig_crc16(VEC_CRC[i].in, VEC_CRC[i].n) == VEC_CRC[i].crc);
        if (VEC_CRC[i].n > 1) { /* incremental = one shot */
            uint16_t c = sig_crc16_update(SIG_CRC16_INIT, VEC_CRC[i].in, 1);
            CHECK(sig_crc16_update(c, VEC_CRC[i].in + 1, VEC_CRC[i].n - 1) == VEC_CRC[i].crc);
        }
    }
}

TEST(cobs_vectors)
{
    uint8_t buf[600];
    size_t i, n;
    for (i = 0; i < VEC_N(VEC_COBS); i++) {
        const struct vec_cobs *v = &VEC_COBS[i];
        CHECK(sig_cobs_encode(buf, sizeof buf, v->dec, v->dec_n, &n) == SIG_OK);
        CHECK(bytes_equal(buf, n, v->enc, v->enc_n));
        CHECK(n <= SIG_COBS_ENCODED_MAX(v->dec_n));
        CHECK(sig_cobs_encode(buf, v->enc_n, v->dec, v->dec_n, &n) == SIG_OK); /* exact fit */
        CHECK(sig_cobs_encode(buf, v->enc_n - 1, v->dec, v->dec_n, &n) == SIG_ERR_NO_SPACE);
        CHECK(sig_cobs_decode(buf, sizeof buf, v->enc, v->enc_n, &n) == SIG_OK);
        CHECK(bytes_equal(buf, n, v->dec, v->dec_n));
        CHECK(sig_cobs_decode(buf, v->dec_n, v->enc, v->enc_n, &n) == SIG_OK);
        if (v->dec_n > 0) {
            CHECK(sig_cobs_decode(buf, v->dec_n - 1, v->enc, v->enc_n, &n) == SIG_ERR_NO_SPACE);
        }
    }
}

TEST(cobs_bounds)
{
    /* Spec section 1: n bytes become at most n + ceil(n/254) and at least
     * n + 1 bytes, with no zero byte; decoding gives the input back. */
    static uint8_t src[1200], enc[1300], dec[1200];
    int iter;
    rnd_seed(1);
    for (iter = 0; iter < (int)UT_N(3000u); iter++) {
        size_t n = rnd() % 1100 + 1, i, en, dn;
        uint32_t zero_rate = rnd() % 4; /* 0: no zeros at all, to hit 254-byte blocks */
        for (i = 0; i < n; i++) {
            src[i] = (uint8_t)(zero_rate == 0 ? (rnd() % 255 + 1) : (rnd() % (zero_rate * 40) == 0 ? 0 : rnd()));
        }
        CHECK(sig_cobs_encode(enc, sizeof enc, src, n, &en) == SIG_OK);
        CHECK(en <= SIG_COBS_ENCODED_MAX(n) && en >= n + 1);
        CHECK(memchr(enc, 0, en) == NULL);
        CHECK(sig_cobs_decode(dec, sizeof dec, enc, en, &dn) == SIG_OK);
        CHECK(bytes_equal(dec, dn, src, n));
    }
}

TEST(varint_vectors)
{
    uint8_t buf[8];
    size_t i, n, used;
    uint32_t v;
    for (i = 0; i < VEC_N(VEC_VARINT); i++) {
        CHECK(sig_varint_encode(VEC_VARINT[i].value, buf, sizeof buf, &n) == SIG_OK);
        CHECK(bytes_equal(buf, n, VEC_VARINT[i].enc, VEC_VARINT[i].n));
        CHECK(sig_varint_decode(VEC_VARINT[i].enc, VEC_VARINT[i].n, &v, &used) == SIG_OK);
        CHECK(v == VEC_VARINT[i].value && used == VEC_VARINT[i].n);
        CHECK(sig_varint_decode(VEC_VARINT[i].enc, VEC_VARINT[i].n - 1, &v, &used) == SIG_ERR_MALFORMED);
    }
}

static void check_rx_parse(const uint8_t *body, size_t n, sig_err_t e, const sig_msg_t *m);

TEST(message_vectors_decode)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        const struct vec_msg *v = &VEC_MSG[i];
        sig_msg_t m;
        CHECKN(gw_msg_decode(v->body, v->body_n, &m) == SIG_OK && msg_eq(&m, &v->msg), v->name);
        if (!lib_decodes(v->body[0])) { /* a device profile: compiled out */
            CHECKN(sig_msg_decode(v->body, v->body_n, &m) == SIG_ERR_UNSUPPORTED, v->name);
            continue;
        }
        CHECKN(sig_msg_decode(v->body, v->body_n, &m) == SIG_OK, v->name);
        CHECKN(msg_eq(&m, &v->msg), v->name);
        check_rx_parse(v->body, v->body_n, SIG_OK, &m); /* the device's receive path */
    }
}

TEST(message_vectors_encode)
{
    uint8_t buf[300];
    size_t i, n;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        const struct vec_msg *v = &VEC_MSG[i];
        CHECKN(gw_msg_encode(&v->msg, buf, sizeof buf, &n) == SIG_OK && bytes_equal(buf, n, v->body, v->body_n),
               v->name);
        if (!lib_encodes(v->msg.type)) { /* a device profile: compiled out */
            CHECKN(sig_msg_encode(&v->msg, buf, sizeof buf, &n) == SIG_ERR_UNSUPPORTED, v->name);
            continue;
        }
        CHECKN(sig_msg_encode(&v->msg, buf, sizeof buf, &n) == SIG_OK, v->name);
        CHECKN(bytes_equal(buf, n, v->body, v->body_n), v->name);
    }
}

TEST(frame_vectors)
{
    uint8_t buf[300], rxbuf[258];
    size_t i, n, k;
    sig_rx_t rx;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        const struct vec_msg *v = &VEC_MSG[i];
        int got = 0;
        CHECKN(sig_frame_encode(buf, sizeof buf, v->body, v->body_n, &n) == SIG_OK, v->name);
        CHECKN(bytes_equal(buf, n, v->frame, v->frame_n), v->name);
        CHECKN(n <= SIG_FRAME_ENCODED_MAX(v->body_n), v->name);
        CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, 256) == SIG_OK);
        for (k = 0; k < v->frame_n; k++) {
            if (sig_rx_feed(&rx, v->frame[k])) {
                sig_bytes_t b = sig_rx_body(&rx);
                got++;
                CHECKN(k == v->frame_n - 1 && bytes_equal(b.ptr, b.len, v->body, v->body_n), v->name);
            }
        }
        CHECKN(got == 1 && rx.stats.frames == 1, v->name);
    }
}

TEST(frame_vectors_every_split)
{
    /* A frame torn at every offset, then the intact frame: the decoder counts
     * the torn part (empty when nothing came) and returns the next frame. */
    uint8_t rxbuf[258];
    size_t i, cut, k;
    sig_rx_t rx;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        const struct vec_msg *v = &VEC_MSG[i];
        for (cut = 0; cut < v->frame_n - 1; cut++) {
            int got = 0;
            uint32_t errs;
            CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, 256) == SIG_OK);
            for (k = 0; k < cut; k++) {
                got += sig_rx_feed(&rx, v->frame[k]);
            }
            got += sig_rx_feed(&rx, 0);
            for (k = 0; k < v->frame_n; k++) {
                if (sig_rx_feed(&rx, v->frame[k])) {
                    sig_bytes_t b = sig_rx_body(&rx);
                    got++;
                    CHECKN(bytes_equal(b.ptr, b.len, v->body, v->body_n), v->name);
                }
            }
            errs = rx.stats.empty + rx.stats.crc_errors + rx.stats.framing_errors + rx.stats.oversize;
            CHECKN(got == 1 && rx.stats.frames == 1 && errs == 1, v->name);
            CHECKN((cut == 0) == (rx.stats.empty == 1), v->name);
        }
    }
}

TEST(bad_bodies)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_BAD); i++) {
        sig_msg_t m;
        sig_err_t e = sig_msg_decode(VEC_BAD[i].body, VEC_BAD[i].n, &m);
        uint32_t code = VEC_BAD[i].code;
        if (!SIG_CONFIG_CHECK_UTF8 && strstr(VEC_BAD[i].name, "utf8") != NULL) {
            code = 0; /* the lean profile does not check UTF-8 */
        }
        if (VEC_BAD[i].n > 0 && !lib_decodes(VEC_BAD[i].body[0]) &&
            (VEC_BAD[i].body[0] & (SIG_HEADER_FLAG_AUTH | SIG_HEADER_FLAG_SEQ)) == 0) {
            CHECKN(e == SIG_ERR_UNSUPPORTED, VEC_BAD[i].name); /* compiled out in a device profile */
            CHECKN(sig_err_wire_code(gw_msg_decode(VEC_BAD[i].body, VEC_BAD[i].n, &m)) == code, VEC_BAD[i].name);
            check_rx_parse(VEC_BAD[i].body, VEC_BAD[i].n, e, &m);
            continue;
        }
        CHECKN((e != SIG_OK) == (code != 0), VEC_BAD[i].name);
        CHECKN(sig_err_wire_code(e) == code, VEC_BAD[i].name);
        check_rx_parse(VEC_BAD[i].body, VEC_BAD[i].n, e, &m); /* the device's receive path */
    }
}

/* max_body of a stream vector without one: 256 (as tests/test_firmware_bridge.py) */
#define VEC_STREAM_MAX_BODY 256u

TEST(streams)
{
    static uint8_t rxbuf[VEC_STREAM_MAX_BODY + 2];
    size_t i, k;
    for (i = 0; i < VEC_N(VEC_STREAM); i++) {
        const struct vec_stream *v = &VEC_STREAM[i];
        sig_rx_t rx;
        size_t got = 0;
        uint16_t mb = v->max_body ? v->max_body : VEC_STREAM_MAX_BODY;
        CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, mb) == SIG_OK);
        for (k = 0; k < v->n; k++) {
            if (sig_rx_feed(&rx, v->stream[k])) {
                sig_bytes_t b = sig_rx_body(&rx);
                CHECKN(got < v->n_bodies && slice_eq(b, v->bodies[got]), v->name);
                got++;
            }
        }
        CHECKN(got == v->n_bodies, v->name);
        CHECKN(rx.stats.frames == v->stats.frames, v->name);
        CHECKN(rx.stats.empty == v->stats.empty, v->name);
        CHECKN(rx.stats.crc_errors == v->stats.crc_errors, v->name);
        CHECKN(rx.stats.framing_errors == v->stats.framing_errors, v->name);
        CHECKN(rx.stats.oversize == v->stats.oversize, v->name);
    }
}

TEST(streams_byte_by_byte)
{
    /* The same streams through a device context: its counters must match. */
    size_t i;
    for (i = 0; i < VEC_N(VEC_STREAM); i++) {
        const struct vec_stream *v = &VEC_STREAM[i];
        static uint8_t rxbuf[VEC_STREAM_MAX_BODY + 2];
        sig_rx_t rx;
        size_t k;
        uint16_t mb = v->max_body ? v->max_body : VEC_STREAM_MAX_BODY;
        CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, mb) == SIG_OK);
        /* interleave a lone delimiter before every stream byte that follows a delimiter:
         * it is counted as empty and changes nothing else */
        for (k = 0; k < v->n; k++) {
            (void)sig_rx_feed(&rx, v->stream[k]);
            if (v->stream[k] == 0) {
                (void)sig_rx_feed(&rx, 0);
            }
        }
        CHECKN(rx.stats.frames == v->stats.frames, v->name);
        CHECKN(rx.stats.crc_errors == v->stats.crc_errors, v->name);
        CHECKN(rx.stats.framing_errors == v->stats.framing_errors, v->name);
        CHECKN(rx.stats.oversize == v->stats.oversize, v->name);
    }
}

TEST(rx_max_body_boundaries)
{
    /* A body of max_body bytes is accepted, one more is oversize. */
    static uint8_t body[600], frame[700], rxbuf[600];
    uint16_t mb;
    rnd_seed(7);
    for (mb = 1; mb <= 520; mb++) {
        int extra;
        for (extra = 0; extra <= 1; extra++) {
            size_t n = (size_t)mb + (size_t)extra, fn, k;
            sig_rx_t rx;
            int got = 0;
            for (k = 0; k < n; k++) {
                body[k] = (uint8_t)((mb & 1) ? (rnd() % 255 + 1) : rnd());
            }
            CHECK(sig_frame_encode(frame, sizeof frame, body, n, &fn) == SIG_OK);
            CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, mb) == SIG_OK);
            for (k = 0; k < fn; k++) {
                got += sig_rx_feed(&rx, frame[k]);
            }
            CHECK(got == !extra);
            CHECK(rx.stats.oversize == (uint32_t)extra);
        }
    }
    CHECK(sig_rx_init(NULL, rxbuf, sizeof rxbuf, 10) == SIG_ERR_ARG);
    {
        sig_rx_t rx;
        CHECK(sig_rx_init(&rx, rxbuf, 11, 10) == SIG_ERR_ARG); /* needs max_body + 2 */
        CHECK(sig_rx_init(&rx, rxbuf, 12, 10) == SIG_OK);
        CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, 0) == SIG_ERR_ARG);
    }
}

TEST(encode_capacity_checks)
{
    /* Every encoder stops at its capacity: no byte written past it. */
    uint8_t buf[320];
    size_t i, cap, n;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        const struct vec_msg *v = &VEC_MSG[i];
        for (cap = 0; cap < v->body_n; cap++) {
            memset(buf, 0xA5, sizeof buf);
            CHECKN(sig_msg_encode(&v->msg, buf, cap, &n) == (lib_encodes(v->msg.type) ? SIG_ERR_NO_SPACE : SIG_ERR_UNSUPPORTED),
                   v->name);
            CHECKN(buf[cap] == 0xA5, v->name);
        }
        for (cap = 0; cap < v->frame_n; cap++) {
            memset(buf, 0xA5, sizeof buf);
            CHECKN(sig_frame_encode(buf, cap, v->body, v->body_n, &n) == SIG_ERR_NO_SPACE, v->name);
            CHECKN(buf[cap] == 0xA5, v->name);
        }
    }
    {
        sig_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = SIG_MSG_REQUEST; /* empty names are INVALID_NAME when encoding too */
        CHECK(sig_msg_encode(&m, buf, sizeof buf, &n) == SIG_ERR_INVALID_NAME);
        m.type = SIG_MSG_EVENT;
        CHECK(gw_msg_encode(&m, buf, sizeof buf, &n) == SIG_ERR_INVALID_NAME);
        CHECK(sig_frame_encode(buf, sizeof buf, buf, 0, &n) == SIG_ERR_TOO_LARGE);
    }
}

/* ---- CBOR ---- */

static void check_cbor_out(sig_cbor_writer_t *w, const uint8_t *want, size_t n, const char *label)
{
    size_t len = 0;
    CHECKN(sig_cbor_finish(w, &len) == SIG_OK, label);
    CHECKN(bytes_equal(w->buf, len, want, n), label);
}

TEST(cbor_vector_data)
{
    uint8_t buf[64];
    sig_cbor_writer_t w;
    size_t i;
    const struct vec_data *d;
    for (i = 0; i < VEC_N(VEC_DATA); i++) {
        sig_cbor_reader_t r;
        d = &VEC_DATA[i];
        CHECKN(sig_cbor_check_data(d->data, d->n) == SIG_OK, d->name);
        sig_cbor_reader_init(&r, d->data, d->n);
        if (d->kind == 'f') {
            double v;
            float f;
            CHECKN(sig_cbor_get_double(&r, &v) == SIG_OK && v == d->f, d->name);
            sig_cbor_writer_init(&w, buf, sizeof buf);
            sig_cbor_put_float64(&w, d->f);
            check_cbor_out(&w, d->data, d->n, d->name);
            sig_cbor_reader_init(&r, d->data, d->n);
            CHECKN(sig_cbor_get_float(&r, &f) == SIG_OK && (double)f == d->f, d->name);
            sig_cbor_writer_init(&w, buf, sizeof buf);
            sig_cbor_put_float32(&w, f);
            check_cbor_out(&w, d->data, d->n, d->name);
        } else if (d->kind == 'i') {
            int64_t v;
            CHECKN(sig_cbor_get_int(&r, &v) == SIG_OK && v == d->i, d->name);
            sig_cbor_writer_init(&w, buf, sizeof buf);
            sig_cbor_put_int(&w, d->i);
            check_cbor_out(&w, d->data, d->n, d->name);
        }
    }
    /* trigger_map: {"t": 21.5, "ok": true} */
    d = vec_data("trigger_map");
    CHECK(d != NULL);
    if (d != NULL) {
        sig_cbor_reader_t r;
        uint32_t n;
        sig_bytes_t k;
        double t;
        float tf;
        bool ok;
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_map(&w, 2);
        sig_cbor_put_text(&w, "t", 1);
        sig_cbor_put_float32(&w, 21.5f);
        sig_cbor_put_text(&w, "ok", 2);
        sig_cbor_put_bool(&w, true);
        check_cbor_out(&w, d->data, d->n, d->name);
        sig_cbor_reader_init(&r, d->data, d->n);
        CHECK(sig_cbor_get_map(&r, &n) == SIG_OK && n == 2);
        CHECK(sig_cbor_get_text(&r, &k) == SIG_OK && sig_bytes_eq(k, "t"));
        CHECK(sig_cbor_get_double(&r, &t) == SIG_OK && t == 21.5);
        CHECK(sig_cbor_get_text(&r, &k) == SIG_OK && sig_bytes_eq(k, "ok"));
        CHECK(sig_cbor_get_bool(&r, &ok) == SIG_OK && ok);
        CHECK(sig_cbor_at_end(&r));
        sig_cbor_reader_init(&r, d->data + 3, 3); /* the half 21.5 as float */
        CHECK(sig_cbor_get_float(&r, &tf) == SIG_OK && tf == 21.5f);
    }
    /* request_params: [1, "a"] */
    d = vec_data("request_params");
    CHECK(d != NULL);
    if (d != NULL) {
        sig_cbor_reader_t r;
        uint32_t n;
        int64_t one;
        sig_bytes_t a;
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_array(&w, 2);
        sig_cbor_put_int(&w, 1);
        sig_cbor_put_text(&w, "a", 1);
        check_cbor_out(&w, d->data, d->n, d->name);
        sig_cbor_reader_init(&r, d->data, d->n);
        CHECK(sig_cbor_get_array(&r, &n) == SIG_OK && n == 2);
        CHECK(sig_cbor_get_int(&r, &one) == SIG_OK && one == 1);
        CHECK(sig_cbor_get_text(&r, &a) == SIG_OK && sig_bytes_eq(a, "a"));
        CHECK(sig_cbor_at_end(&r));
    }
    /* event_connect: {"events": ["e"], "requests": []} */
    d = vec_data("event_connect");
    CHECK(d != NULL);
    if (d != NULL) {
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_map(&w, 2);
        sig_cbor_put_text(&w, "events", 6);
        sig_cbor_put_array(&w, 1);
        sig_cbor_put_text(&w, "e", 1);
        sig_cbor_put_text(&w, "requests", 8);
        sig_cbor_put_array(&w, 0);
        check_cbor_out(&w, d->data, d->n, d->name);
    }
    CHECK(vec_msg("trigger_map") != NULL);
}

/* RFC 8949 Appendix A examples (the CBOR spec PROTOCOL.md refers to). */
static const struct { double v; const char *hex; } RFC_FLOATS[] = {
    {0.0, "f90000"}, {-0.0, "f98000"}, {1.0, "f93c00"}, {1.1, "fb3ff199999999999a"},
    {1.5, "f93e00"}, {65504.0, "f97bff"}, {100000.0, "fa47c35000"},
    {3.4028234663852886e+38, "fa7f7fffff"}, {1.0e+300, "fb7e37e43c8800759c"},
    {5.960464477539063e-8, "f90001"}, {0.00006103515625, "f90400"}, {-4.0, "f9c400"},
    {-4.1, "fbc010666666666666"},
};
static const struct { long long v; const char *hex; } RFC_INTS[] = {
    {0, "00"}, {1, "01"}, {10, "0a"}, {23, "17"}, {24, "1818"}, {25, "1819"}, {100, "1864"},
    {1000, "1903e8"}, {1000000, "1a000f4240"}, {1000000000000LL, "1b000000e8d4a51000"},
    {-1, "20"}, {-10, "29"}, {-100, "3863"}, {-1000, "3903e7"},
};
/* well-formed items (RFC 8949 Appendix A), for sig_cbor_skip */
static const char *RFC_ITEMS[] = {
    "f4", "f5", "f6", "f7", "f0", "f8ff", "c074323031332d30332d32315432303a30343a30305a",
    "c11a514b67b0", "d74401020304", "d818456449455446", "40", "4401020304", "60", "6161",
    "62c3bc", "63e6b0b4", "80", "83010203", "8301820203820405", "a0", "a201020304",
    "a26161016162820203", "826161a161626163", "5f42010243030405ff", "7f657374726561646d696e67ff",
    "9fff", "9f018202039f0405ffff", "9f01820203820405ff", "83018202039f0405ff",
    "bf61610161629f0203ffff", "826161bf61626163ff", "bf6346756ef563416d7421ff",
    "fb7ff0000000000000", "fa7fc00000", "f97c00", "1bffffffffffffffff", "3bffffffffffffffff",
};
/* not well-formed (RFC 8949 Appendix F examples) */
static const char *BAD_ITEMS[] = {
    "18", "19", "1a", "1b", "1901", "1a0102", "1b01020304050607", "38", "58", "78", "98",
    "9a01ff00", "b8", "d8", "f8", "f900", "fa0000", "fb000000", "41", "61", "5affffffff00",
    "5bffffffffffffffff010203", "7affffffff00", "7b7fffffffffffffff010203", "8118", "818118",
    "81818118", "828181818118", "8218", "a118", "a10218", "a1", "a20102", "c0", "1c", "1d",
    "1e", "3c", "5c", "7c", "9c", "bc", "dc", "fc", "ff", "5f41", "5f4100", "5f00ff",
    "5f21ff", "5f6100ff", "5f80ff", "5fa0ff", "5fc000ff", "5fe0ff", "7f4100ff", "5f5f4100ffff",
    "7f7f6100ffff", "9f", "9f0102", "bf", "bf01020102", "819f", "9f8000", "9f9f9f9f9fffffffff",
    "9f819f819f9fffffff", "bf00ff", "bf000000ff", "f800", "f801", "f818", "f81f",
};

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && h[1] && n < cap) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

TEST(cbor_rfc8949_examples)
{
    uint8_t buf[64], want[64];
    sig_cbor_writer_t w;
    sig_cbor_reader_t r;
    size_t i, n;
    for (i = 0; i < sizeof RFC_FLOATS / sizeof RFC_FLOATS[0]; i++) {
        double v;
        n = unhex(RFC_FLOATS[i].hex, want, sizeof want);
        if (n < 9 || DBL_MANT_DIG >= 53) { /* a float64 item is written only from a 64-bit double (not avr-gcc's) */
            sig_cbor_writer_init(&w, buf, sizeof buf);
            sig_cbor_put_float64(&w, RFC_FLOATS[i].v);
            check_cbor_out(&w, want, n, RFC_FLOATS[i].hex);
        }
        sig_cbor_reader_init(&r, want, n);
        CHECKN(sig_cbor_get_double(&r, &v) == SIG_OK && v == RFC_FLOATS[i].v &&
                   signbit(v) == signbit(RFC_FLOATS[i].v),
               RFC_FLOATS[i].hex);
        if (n <= 5) { /* representable as float: float32 path gives the same bytes */
            sig_cbor_writer_init(&w, buf, sizeof buf);
            sig_cbor_put_float32(&w, (float)RFC_FLOATS[i].v);
            check_cbor_out(&w, want, n, RFC_FLOATS[i].hex);
        }
    }
    {
        /* Infinity, -Infinity, NaN (RFC 8949 A: f97c00, f9fc00, f97e00) */
        double v;
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_float64(&w, INFINITY);
        sig_cbor_put_float64(&w, -INFINITY);
        sig_cbor_put_float32(&w, NAN);
        n = unhex("f97c00f9fc00f97e00", want, sizeof want);
        check_cbor_out(&w, want, n, "inf/nan");
        sig_cbor_reader_init(&r, want, n);
        CHECK(sig_cbor_get_double(&r, &v) == SIG_OK && isinf(v) && v > 0);
        CHECK(sig_cbor_get_double(&r, &v) == SIG_OK && isinf(v) && v < 0);
        CHECK(sig_cbor_get_double(&r, &v) == SIG_OK && isnan(v));
    }
    for (i = 0; i < sizeof RFC_INTS / sizeof RFC_INTS[0]; i++) {
        int64_t v;
        n = unhex(RFC_INTS[i].hex, want, sizeof want);
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_int(&w, RFC_INTS[i].v);
        check_cbor_out(&w, want, n, RFC_INTS[i].hex);
        sig_cbor_reader_init(&r, want, n);
        CHECKN(sig_cbor_get_int(&r, &v) == SIG_OK && v == RFC_INTS[i].v, RFC_INTS[i].hex);
    }
    {
        /* 18446744073709551615 and -18446744073709551616 do not fit int64 */
        int64_t v;
        n = unhex("1bffffffffffffffff", want, sizeof want);
        sig_cbor_reader_init(&r, want, n);
        CHECK(sig_cbor_get_int(&r, &v) == SIG_ERR_CBOR_RANGE && r.pos == 0);
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_int(&w, INT64_MIN);
        sig_cbor_put_int(&w, INT64_MAX);
        n = unhex("3b7fffffffffffffff1b7fffffffffffffff", want, sizeof want);
        check_cbor_out(&w, want, n, "int64 limits");
        sig_cbor_reader_init(&r, want, n);
        CHECK(sig_cbor_get_int(&r, &v) == SIG_OK && v == INT64_MIN);
        CHECK(sig_cbor_get_int(&r, &v) == SIG_OK && v == INT64_MAX);
    }
    for (i = 0; i < sizeof RFC_ITEMS / sizeof RFC_ITEMS[0]; i++) {
        n = unhex(RFC_ITEMS[i], want, sizeof want);
        CHECKN(sig_cbor_check_data(want, n) == SIG_OK, RFC_ITEMS[i]);
        CHECKN(sig_cbor_check_data(want, n - 1) != SIG_OK || n == 1, RFC_ITEMS[i]);
        want[n] = 0x00; /* two items are not one item */
        CHECKN(sig_cbor_check_data(want, n + 1) == SIG_ERR_CBOR, RFC_ITEMS[i]);
    }
    for (i = 0; i < sizeof BAD_ITEMS / sizeof BAD_ITEMS[0]; i++) {
        n = unhex(BAD_ITEMS[i], want, sizeof want);
        CHECKN(sig_cbor_check_data(want, n) != SIG_OK, BAD_ITEMS[i]);
    }
    {
        /* half-precision subnormals and text/bytes */
        sig_bytes_t s;
        float f;
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_float32(&w, 5.9604644775390625e-8f * 3.0f);
        sig_cbor_put_text(&w, "IETF", 4);
        sig_cbor_put_bytes(&w, (const uint8_t *)"\x01\x02\x03\x04", 4);
        sig_cbor_put_null(&w);
        n = unhex("f9000364494554464401020304f6", want, sizeof want);
        check_cbor_out(&w, want, n, "subnormal/text/bytes/null");
        sig_cbor_reader_init(&r, want, n);
        CHECK(sig_cbor_get_float(&r, &f) == SIG_OK && f == 5.9604644775390625e-8f * 3.0f);
        CHECK(sig_cbor_get_text(&r, &s) == SIG_OK && sig_bytes_eq(s, "IETF"));
        CHECK(sig_cbor_get_bytes(&r, &s) == SIG_OK && s.len == 4 && s.ptr[3] == 4);
        CHECK(sig_cbor_get_null(&r) == SIG_OK && sig_cbor_at_end(&r));
    }
}

#if SIZE_MAX > 0xFFFFu /* the table of all halves is 256 KB: not on a 16-bit target */
static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

TEST(cbor_float32_shortest)
{
    /* every half (65,536) as a float32 comes out as that half (NaNs as
     * F9 7E00); 2 million other float32 bit patterns come out as FA + the same
     * bits exactly when no half holds them */
    static uint32_t halves[65536];
    uint8_t buf[8];
    sig_cbor_writer_t w;
    sig_cbor_reader_t r;
    size_t n;
    uint32_t i, h;
    for (h = 0; h < 65536u; h++) {
        uint8_t in[3] = {0xF9, (uint8_t)(h >> 8), (uint8_t)h};
        float f;
        sig_cbor_reader_init(&r, in, 3);
        CHECK(sig_cbor_get_float(&r, &f) == SIG_OK);
        memcpy(&halves[h], &f, 4);
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_float32(&w, f);
        CHECK(sig_cbor_finish(&w, &n) == SIG_OK && n == 3 && buf[0] == 0xF9);
        if (isnan(f)) {
            CHECK(buf[1] == 0x7E && buf[2] == 0x00);
        } else {
            CHECK(buf[1] == in[1] && buf[2] == in[2]);
        }
    }
    qsort(halves, 65536, sizeof halves[0], cmp_u32);
    rnd_seed(7);
    for (i = 0; i < 2000000u; i++) {
        uint32_t bits = rnd();
        float f;
        int is_half;
        if (i & 1u) {
            bits &= 0x8FFFE000u | (rnd() & 0x7FF00000u); /* near the half range */
        }
        memcpy(&f, &bits, 4);
        is_half = bsearch(&bits, halves, 65536, sizeof halves[0], cmp_u32) != NULL;
        sig_cbor_writer_init(&w, buf, sizeof buf);
        sig_cbor_put_float32(&w, f);
        CHECK(sig_cbor_finish(&w, &n) == SIG_OK);
        if (isnan(f)) {
            CHECK(n == 3 && buf[0] == 0xF9 && buf[1] == 0x7E && buf[2] == 0);
        } else if (is_half) {
            float g;
            uint32_t gb;
            sig_cbor_reader_init(&r, buf, n);
            CHECK(n == 3 && sig_cbor_get_float(&r, &g) == SIG_OK);
            memcpy(&gb, &g, 4);
            CHECK(gb == bits);
        } else {
            CHECK(n == 5 && buf[0] == 0xFA && buf[1] == (uint8_t)(bits >> 24) && buf[2] == (uint8_t)(bits >> 16) &&
                  buf[3] == (uint8_t)(bits >> 8) && buf[4] == (uint8_t)bits);
        }
    }
}
#endif

/* sig__f64_to_f32 (sig_cbor_get_float of a double everywhere, and
 * sig_cbor_get_double where double is a float32, as on AVR) rounds like the
 * host's cast: every exponent around the float32 range, ties, subnormals,
 * overflow, NaN payloads, 3 million random patterns. */
TEST(cbor_f64_to_f32_rounding)
{
    static const uint64_t EDGES[] = {
        0, 0x8000000000000000ull, 0x7FF0000000000000ull, 0xFFF0000000000000ull, 0x7FF8000000000000ull,
        0x7FF0000000000001ull, 0xFFFFFFFFFFFFFFFFull, 0x0000000000000001ull, 0x000FFFFFFFFFFFFFull,
        0x47EFFFFFE0000000ull, /* FLT_MAX + half an ulp: ties to even -> infinity */
        0x47EFFFFFDFFFFFFFull, 0x47EFFFFFF0000000ull, 0x3690000000000000ull, /* 2^-150: tie -> 0 */
        0x3690000000000001ull, 0x36A0000000000000ull, 0x3810000000000000ull, 0x380FFFFFF0000000ull,
        0x3FF0000010000000ull, 0x3FF0000030000000ull, 0x3FF199999999999Aull,
    };
    uint32_t i, diffs = 0;
    for (i = 0; i < UT_N(3000000u) + sizeof EDGES / sizeof EDGES[0]; i++) {
        uint64_t d;
        double v;
        float f;
        uint32_t want, got;
        if (i < sizeof EDGES / sizeof EDGES[0]) {
            d = EDGES[i];
        } else {
            d = (uint64_t)rnd() << 32 | rnd();
            if (i & 1u) { /* exponents near the float32 range (2^-160 .. 2^130) */
                d = (d & 0x800FFFFFFFFFFFFFull) | (uint64_t)(0x35Fu + rnd() % 0x125u) << 52;
            }
            if ((i & 6u) == 2u) { /* ties and near-ties: low mantissa bits around half */
                d = (d & ~0x3FFFFFFFull) | (rnd() & 1u ? 0x10000000ull : 0x0FFFFFFFull);
            }
        }
        memcpy(&v, &d, sizeof v);
        f = (float)v;
        memcpy(&want, &f, sizeof want);
        got = sig__f64_to_f32(d);
        if (got != want) {
            if (diffs < 5) {
                printf("  f64 %016llx: want %08x got %08x\n", (unsigned long long)d, (unsigned)want, (unsigned)got);
            }
            diffs++;
        }
    }
    CHECK(diffs == 0);
    {
        /* through the reader: a CBOR double read as float */
        static const uint8_t dbl[] = {0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a}; /* 1.1 */
        sig_cbor_reader_t r;
        float f;
        sig_cbor_reader_init(&r, dbl, sizeof dbl);
        CHECK(sig_cbor_get_float(&r, &f) == SIG_OK && f == 1.1f && r.pos == sizeof dbl);
    }
}

TEST(cbor_writer_capacity)
{
    uint8_t buf[16];
    size_t cap, n;
    const size_t total = DBL_MANT_DIG >= 53 ? 12u : 8u; /* 1.1 is a float32 where double is one (AVR) */
    for (cap = 0; cap < total; cap++) {
        sig_cbor_writer_t w;
        memset(buf, 0xA5, sizeof buf);
        sig_cbor_writer_init(&w, buf, cap);
        sig_cbor_put_map(&w, 1);
        sig_cbor_put_text(&w, "t", 1);
        sig_cbor_put_float64(&w, 1.1); /* 9 bytes (5 as a float32): total 12 (8) */
        CHECK(sig_cbor_finish(&w, &n) == SIG_ERR_NO_SPACE);
        CHECK(buf[cap] == 0xA5);
    }
}

TEST(cbor_reader_errors)
{
    uint8_t b[] = {0x61, 0x61};
    sig_cbor_reader_t r;
    int64_t i;
    bool v;
    double d;
    uint32_t n;
    sig_cbor_reader_init(&r, b, sizeof b);
    CHECK(sig_cbor_get_int(&r, &i) == SIG_ERR_CBOR_TYPE && r.pos == 0);
    CHECK(sig_cbor_get_bool(&r, &v) == SIG_ERR_CBOR_TYPE);
    CHECK(sig_cbor_get_double(&r, &d) == SIG_ERR_CBOR_TYPE);
    CHECK(sig_cbor_get_array(&r, &n) == SIG_ERR_CBOR_TYPE);
    CHECK(sig_cbor_get_null(&r) == SIG_ERR_CBOR_TYPE);
    sig_cbor_reader_init(&r, b, 1); /* text runs past the end */
    {
        sig_bytes_t s;
        CHECK(sig_cbor_get_text(&r, &s) == SIG_ERR_CBOR && r.pos == 0);
    }
    {
        /* nesting deeper than SIG_CONFIG_CBOR_MAX_DEPTH */
        uint8_t deep[SIG_CONFIG_CBOR_MAX_DEPTH + 2];
        size_t k;
        for (k = 0; k < sizeof deep - 1; k++) {
            deep[k] = 0x81;
        }
        deep[sizeof deep - 1] = 0x01;
        CHECK(sig_cbor_check_data(deep, sizeof deep) == SIG_ERR_CBOR_DEPTH);
        CHECK(sig_cbor_check_data(deep + 2, sizeof deep - 2) == SIG_OK);
    }
}

/* ---- random input ---- */

TEST(random_frame_decoder)
{
    /* Invariants for any input: no crash, bodies of 1..max_body bytes with a
     * good CRC, and every delimiter accounted for by exactly one counter
     * (plus one oversize for a frame still being skipped at the end). */
    static uint8_t rxbuf[SIG_CONFIG_MAX_BODY + 2];
    sig_rx_t rx;
    uint32_t zeros = 0, bodies = 0, i, total;
    uint16_t mb = 40;
    rnd_seed(0xC0FFEEu);
    CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, mb) == SIG_OK);
    for (i = 0; i < UT_N(3000000u); i++) {
        uint32_t r = rnd();
        /* mostly noise with a zero every ~30 bytes; sometimes a valid frame */
        uint8_t byte = (r % 31 == 0) ? 0 : (uint8_t)(r >> 8);
        if (r % 5000 == 1) {
            uint8_t body[60], frame[70];
            size_t n = (r >> 12) % 55 + 1, fn, k;
            for (k = 0; k < n; k++) {
                body[k] = (uint8_t)rnd();
            }
            if (sig_frame_encode(frame, sizeof frame, body, n, &fn) == SIG_OK) {
                zeros++;
                (void)sig_rx_feed(&rx, 0); /* cut the noise before it */
                for (k = 0; k < fn; k++) {
                    zeros += frame[k] == 0;
                    if (sig_rx_feed(&rx, frame[k])) {
                        sig_bytes_t b = sig_rx_body(&rx);
                        bodies++;
                        CHECK(b.len >= 1 && b.len <= mb);
                    }
                }
            }
            continue;
        }
        zeros += byte == 0;
        if (sig_rx_feed(&rx, byte)) {
            sig_bytes_t b = sig_rx_body(&rx);
            bodies++;
            CHECK(b.len >= 1 && b.len <= mb);
            CHECK(sig_crc16(b.ptr, b.len) == (uint16_t)((rxbuf[b.len] << 8) | rxbuf[b.len + 1]));
        }
    }
    total = rx.stats.frames + rx.stats.empty + rx.stats.crc_errors + rx.stats.framing_errors +
            rx.stats.oversize;
    CHECK(rx.stats.frames == bodies);
    CHECK(total == zeros || total == zeros + 1);
    printf("  random bytes: %u frames, %u empty, %u crc, %u framing, %u oversize\n", (unsigned)rx.stats.frames,
           (unsigned)rx.stats.empty, (unsigned)rx.stats.crc_errors, (unsigned)rx.stats.framing_errors,
           (unsigned)rx.stats.oversize);
    CHECK(bodies > UT_N(100u) && rx.stats.crc_errors > 0 && rx.stats.framing_errors > 0 &&
          rx.stats.oversize > 0 && rx.stats.empty > 0);
}

/* The device's receive path (sig__rx_parse, used by the session) must accept
 * and reject exactly what sig_msg_decode does, with the same error code and
 * the same fields; the types only a gateway receives it leaves unread. */
static void check_rx_parse(const uint8_t *body, size_t n, sig_err_t e, const sig_msg_t *m)
{
    sig__rx_msg_t d;
    uint8_t code = sig__rx_parse(body, n, &d);
    int same = 0;
    if (code == SIG__RX_IGNORE) {
        uint8_t t = body[0];
        CHECK(n > 0 && (t == SIG_MSG_HELLO || t == SIG_MSG_REGISTER_SENDER || t == SIG_MSG_UNREGISTER_SENDER ||
                        t == SIG_MSG_LISTEN || t == SIG_MSG_UNLISTEN || t == SIG_MSG_TRIGGER));
        return;
    }
    CHECK(code == sig_err_wire_code(e));
    if (code != 0 || e != SIG_OK) {
        return;
    }
    switch (m->type) {
    case SIG_MSG_WELCOME:
        same = d.num[0] == m->u.welcome.version && slice_eq(d.str[0], m->u.welcome.name) &&
               d.num[1] == m->u.welcome.max_body && d.num[2] == m->u.welcome.keepalive_ms &&
               d.num[3] == m->u.welcome.features;
        break;
    case SIG_MSG_PING:
    case SIG_MSG_PONG:
        same = d.num[0] == m->u.ping.token;
        break;
    case SIG_MSG_INVITE:
        same = 1;
        break;
    case SIG_MSG_ERROR:
        same = d.num[0] == m->u.error.code && d.num[1] == m->u.error.about && d.num[2] == m->u.error.ref &&
               slice_eq(d.str[0], m->u.error.message);
        break;
    case SIG_MSG_ACK:
        same = d.num[0] == m->u.ack.seq;
        break;
    case SIG_MSG_SENDER_REGISTERED:
    case SIG_MSG_LISTENING:
        same = d.num[0] == m->u.ref.ref;
        break;
    case SIG_MSG_EVENT:
        same = slice_eq(d.str[0], m->u.event.sender) && slice_eq(d.str[1], m->u.event.event) &&
               slice_eq(d.str[2], m->u.event.data) && d.str[2].ptr == m->u.event.data.ptr;
        break;
    case SIG_MSG_REQUEST:
        same = d.num[0] == m->u.request.request_id && slice_eq(d.str[0], m->u.request.sender) &&
               slice_eq(d.str[1], m->u.request.method) && slice_eq(d.str[2], m->u.request.data);
        break;
    case SIG_MSG_RESPONSE:
        same = d.num[0] == m->u.response.request_id && d.num[1] == m->u.response.status &&
               slice_eq(d.str[0], m->u.response.message) && slice_eq(d.str[1], m->u.response.data);
        break;
    case SIG_MSG_RETAINED:
        same = slice_eq(d.str[0], m->u.retained.sender) && slice_eq(d.str[1], m->u.retained.event) &&
               d.num[0] == m->u.retained.flags && slice_eq(d.str[2], m->u.retained.data) &&
               d.str[2].ptr == m->u.retained.data.ptr;
        break;
    default:
        break;
    }
    CHECK(same);
}

static void decode_and_roundtrip(const uint8_t *body, size_t n, uint32_t *ok, uint32_t *bad)
{
    sig_msg_t m, m2;
    uint8_t out[600];
    size_t on;
    sig_event_decl_t ev[300];
    sig_bytes_t me[300];
    sig_err_t e = sig_msg_decode(body, n, &m);
    check_rx_parse(body, n, e, &m);
    if (e != SIG_OK) {
        (*bad)++;
        /* a wire error, or a type compiled out of a device profile */
        CHECK(sig_err_wire_code(e) != 0 || (e == SIG_ERR_UNSUPPORTED && n > 0 && !lib_decodes(body[0])));
        return;
    }
    (*ok)++;
    msg_to_encodable(&m, ev, 300, me, 300);
    CHECK(gw_msg_encode(&m, out, sizeof out, &on) == SIG_OK); /* the full codec: a device profile cannot */
    CHECK(sig_msg_decode(out, on, &m2) == SIG_OK);
    CHECK(msg_eq(&m, &m2));
}

TEST(random_message_decoder)
{
    static const uint8_t types[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x12,
                                    0x13, 0x14, 0x15, 0x20, 0x21, 0x22, 0x23, 0x24};
    uint8_t body[300];
    uint32_t ok = 0, bad = 0, i;
    rnd_seed(42);
    for (i = 0; i < UT_N(400000u); i++) {
        size_t n = rnd() % 24, k;
        body[0] = types[rnd() % sizeof types];
        if (i % 8 == 0) {
            body[0] = (uint8_t)rnd(); /* any header: flags, unknown types */
        }
        for (k = 1; k < n; k++) {
            uint32_t r = rnd();
            /* small values make plausible varints, names and counts */
            body[k] = (uint8_t)(r % 3 == 0 ? r % 4 : (r % 3 == 1 ? 0x61 + (r >> 8) % 3 : r >> 16));
        }
        decode_and_roundtrip(body, n, &ok, &bad);
    }
    CHECK(ok > UT_N(1000u) && bad > UT_N(1000u));
}

/* The walker against the previous one (tests/ref_cbor.c): same result, same
 * error, same end position, for every prefix of the data. */
static void cbor_same_as_ref(const uint8_t *data, size_t n)
{
    sig_cbor_reader_t a, b;
    sig_err_t ea, eb;
    sig_cbor_reader_init(&a, data, n);
    sig_cbor_reader_init(&b, data, n);
    do {
        ea = sig_cbor_skip(&a);
        eb = ref_cbor_skip(&b);
        CHECK(ea == eb && a.pos == b.pos && a.pos <= n);
    } while (ea == SIG_OK && !sig_cbor_at_end(&a));
}

TEST(random_cbor)
{
    /* bytes biased to CBOR heads: small arguments, 1-byte arguments,
     * indefinite heads, breaks, tags, arrays and maps (nesting) */
    static const uint8_t heads[] = {0x9f, 0xbf, 0x5f, 0x7f, 0xff, 0xc1, 0xd8, 0x81, 0x82, 0xa1,
                                    0xa2, 0x41, 0x61, 0x18, 0xf8, 0xf9, 0xfb, 0x1b, 0x9b, 0x80};
    uint8_t data[40];
    uint32_t i, good = 0;
    rnd_seed(99);
    for (i = 0; i < UT_N(600000u); i++) {
        size_t n = rnd() % sizeof data, k;
        sig_cbor_reader_t r;
        for (k = 0; k < n; k++) {
            uint32_t x = rnd();
            if (i & 1u) {
                data[k] = (uint8_t)(x % 4 == 0 ? (x >> 8) % 24 : x >> 16);
            } else {
                data[k] = (uint8_t)(x % 3 == 0 ? heads[(x >> 8) % sizeof heads] : (x % 3 == 1 ? (x >> 8) % 24 : x >> 16));
            }
        }
        if (sig_cbor_check_data(data, n) == SIG_OK) {
            good++;
        }
        cbor_same_as_ref(data, n);
        sig_cbor_reader_init(&r, data, n);
        while (!sig_cbor_at_end(&r) && sig_cbor_skip(&r) == SIG_OK) {
        }
        CHECK(r.pos <= n);
    }
    CHECK(good > UT_N(10000u));
    /* every RFC 8949 Appendix A / F item with each byte replaced and every prefix */
    for (i = 0; i < sizeof RFC_ITEMS / sizeof RFC_ITEMS[0] + sizeof BAD_ITEMS / sizeof BAD_ITEMS[0]; i++) {
        static const uint8_t vals[] = {0x00, 0x01, 0x18, 0x1f, 0x20, 0x5f, 0x7f, 0x80, 0x9f, 0xbf, 0xc0, 0xf8, 0xff};
        const char *h = i < sizeof RFC_ITEMS / sizeof RFC_ITEMS[0] ? RFC_ITEMS[i]
                                                                   : BAD_ITEMS[i - sizeof RFC_ITEMS / sizeof RFC_ITEMS[0]];
        uint8_t item[64];
        size_t n = unhex(h, item, sizeof item), pos, k;
        for (pos = 0; pos <= n; pos++) {
            cbor_same_as_ref(item, pos);
            for (k = 0; k < sizeof vals && pos < n; k++) {
                uint8_t keep = item[pos];
                item[pos] = vals[k];
                cbor_same_as_ref(item, n);
                item[pos] = keep;
            }
        }
    }
}

TEST(mutated_vectors)
{
    /* Every message vector with each byte replaced by several values, and
     * truncated at every length: decode never misbehaves (ASan/UBSan watch). */
    uint8_t body[300];
    uint32_t ok = 0, bad = 0;
    size_t i, pos;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        const struct vec_msg *v = &VEC_MSG[i];
        for (pos = 0; pos < v->body_n; pos++) {
            static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xc3, 0x23};
            size_t k;
            for (k = 0; k < sizeof vals; k++) {
                memcpy(body, v->body, v->body_n);
                body[pos] = vals[k];
                decode_and_roundtrip(body, v->body_n, &ok, &bad);
            }
            decode_and_roundtrip(v->body, pos, &ok, &bad);
        }
    }
    CHECK(ok > 0 && bad > 0);
}

/* The frame decoder against the previous one (tests/ref_rx.c): the same
 * streams (noise with zeros at several rates, valid frames, frames with a
 * flipped byte, long runs and 0xFF blocks for the oversize and 254-byte
 * paths) into both, for max_body from 1 to 256: same init result and limit,
 * same return for every byte, same body, same counters. */
TEST(frame_decoder_vs_previous)
{
    /* sized for the largest max_body below, not SIG_CONFIG_MAX_BODY: with the
     * default 128 the bodies of up to 260 bytes overflowed body[] */
    static uint8_t buf_a[256 + 2], buf_b[256 + 2];
    static const uint16_t MBS[] = {1, 2, 3, 4, 40, 251, 252, 253, 254, 255, 256};
    static const size_t LENS[] = {0, 2, 3, 5, 258, 300};
    sig_rx_t a, b;
    size_t mi, li;
    uint32_t i; /* counts to 300,000: not a size_t on a 16-bit target */
    int diffs = 0;
    sig_rx_stats_t seen; /* every counter, summed over all max_body values */
    memset(&seen, 0, sizeof seen);
    rnd_seed(0xF4A3Eu);
    for (li = 0; li < sizeof LENS / sizeof LENS[0]; li++) {
        for (mi = 0; mi < 3; mi++) {
            uint16_t mb = mi == 0 ? 0 : (mi == 1 ? 65534 : 40);
            CHECK(sig_rx_init(&a, buf_a, LENS[li], mb) == ref_rx_init(&b, buf_b, LENS[li], mb));
        }
    }
    CHECK(sig_rx_init(NULL, buf_a, 10, 5) == SIG_ERR_ARG && sig_rx_init(&a, NULL, 10, 5) == SIG_ERR_ARG);
    for (mi = 0; mi < sizeof MBS / sizeof MBS[0]; mi++) {
        uint16_t mb = MBS[mi];
        uint32_t zero_rate = 3u + (uint32_t)mi * 41u;
        memset(&a, 0x5A, sizeof a); /* init must not depend on what was there */
        CHECK(sig_rx_init(&a, buf_a, sizeof buf_a, mb) == SIG_OK);
        CHECK(ref_rx_init(&b, buf_b, sizeof buf_b, mb) == SIG_OK);
        CHECK(a.limit == b.limit && a.limit == SIG_RX_ENCODED_LIMIT(mb));
        for (i = 0; i < UT_N(300000u); i++) {
            uint32_t r = rnd();
            uint8_t frame[700];
            size_t fn = 1, k;
            frame[0] = (r % zero_rate == 0) ? 0 : (uint8_t)(r >> 8);
            if (r % 97 == 1) { /* a frame around max_body, maybe damaged */
                uint8_t body[256 + 4];
                size_t n = (r >> 10) % ((size_t)mb + 4u) + 1u;
                for (k = 0; k < n; k++) {
                    uint32_t x = rnd();
                    body[k] = (r & 0x100000u) ? (uint8_t)(x | 1u) : (uint8_t)x;
                }
                CHECK(sig_frame_encode(frame, sizeof frame, body, n, &fn) == SIG_OK);
                if (r & 0x200000u) {
                    frame[rnd() % fn] ^= (uint8_t)(1u << (rnd() % 8u));
                }
            } else if (r % 97 == 2) { /* a run of 0xFF blocks or long non-zero noise */
                fn = (r >> 10) % 600u + 1u;
                for (k = 0; k < fn; k++) {
                    frame[k] = (r & 0x400000u) ? 0xFFu : (uint8_t)(rnd() | 1u);
                }
            }
            for (k = 0; k < fn; k++) {
                bool ra = sig_rx_feed(&a, frame[k]), rb = ref_rx_feed(&b, frame[k]);
                sig_bytes_t ba = sig_rx_body(&a), bb = sig_rx_body(&b);
                if (ra != rb || !bytes_equal(ba.ptr, ba.len, bb.ptr, bb.len) ||
                    memcmp(&a.stats, &b.stats, sizeof a.stats) != 0) {
                    diffs++;
                }
            }
        }
        CHECK(diffs == 0);
        seen.frames += a.stats.frames;
        seen.oversize += a.stats.oversize;
        seen.crc_errors += a.stats.crc_errors;
        seen.framing_errors += a.stats.framing_errors;
        seen.empty += a.stats.empty;
#if UT_SCALE == 1 /* with 1/UT_SCALE of the bytes, only the sums reach every counter */
        CHECK(a.stats.frames > 0 && a.stats.oversize > 0 && a.stats.crc_errors > 0 &&
              a.stats.framing_errors > 0 && a.stats.empty > 0);
#endif
    }
    CHECK(seen.frames > 0 && seen.oversize > 0 && seen.crc_errors > 0 && seen.framing_errors > 0 &&
          seen.empty > 0);
}
