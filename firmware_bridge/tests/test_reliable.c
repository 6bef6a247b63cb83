/* The reliable UART mode (PROTOCOL.md section 5) against the `reliable`
 * section of tests/vectors.json: the sequence header, ACKs, a signed
 * sequenced body, the bodies a receiver refuses, the three scripted exchanges
 * step by step (state machine, src/sig_reliable.c), and a device session with
 * a scripted gateway: accept, duplicate, gap, lost ACK, retransmission,
 * window full, the end after SIG_CONFIG_RELIABLE_MAX_RETRIES. Built with
 * SIG_CONFIG_RELIABLE = 1 (the "reliable" and "reliable_auth" profiles);
 * without it each test checks that the library never sequences anything. */
#include <stdlib.h>
#include <string.h>

#include "sig_device.h"
#include "sig_internal.h"
#include "gw_codec.h"
#include "test_util.h"
#include "unittest.h"
#include "vectors.h"

/* ---- a scripted gateway: bytes in, bytes out, a fake clock ---- */

static struct {
    uint8_t out[512]; /* what the device wrote since the last expect_end: a few frames */
    size_t out_len, pos;
    uint32_t now;
} gw;
static sig_device_t dev;
static struct {
    int status[24];
    int n_status;
    int requests;
    uint32_t last_request_id;
    int responses;
    uint32_t last_status;
} app;

static bool gw_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    if (len > sizeof gw.out - gw.out_len) {
        return false;
    }
    memcpy(gw.out + gw.out_len, buf, len);
    gw.out_len += len;
    return true;
}

static uint32_t gw_millis(void *ctx)
{
    (void)ctx;
    return gw.now;
}

static void on_status(sig_device_t *d, void *user, sig_status_t st, uint32_t ref)
{
    (void)d;
    (void)user;
    (void)ref;
    if (app.n_status < 24) {
        app.status[app.n_status] = (int)st;
    }
    app.n_status++;
}

/* A handler that answers later (the test calls sig_device_respond). */
static void on_request(sig_device_t *d, void *user, const sig_request_t *req)
{
    (void)d;
    (void)user;
    app.requests++;
    app.last_request_id = req->request_id;
}

#if SIG_CONFIG_RELIABLE
static void on_response(sig_device_t *d, void *user, const sig_response_t *resp)
{
    (void)d;
    (void)user;
    app.responses++;
    app.last_status = resp->status;
}
#endif

static int expect_bytes(const uint8_t *p, size_t n)
{
    int ok = gw.pos + n <= gw.out_len && memcmp(gw.out + gw.pos, p, n) == 0;
    gw.pos += n;
    return ok;
}

#if SIG_CONFIG_RELIABLE
static int expect_slice(sig_bytes_t b)
{
    return expect_bytes(b.ptr, b.len);
}
#endif

static int expect_end(void)
{
    int ok = gw.pos == gw.out_len;
    gw.pos = 0;
    gw.out_len = 0;
    return ok;
}

/* sig_device_start: a lone 0x00 and a HELLO (plain), then the output cleared. */
static int start_device(void)
{
    int ok = sig_device_start(&dev) == SIG_OK && gw.out_len > 3 && gw.out[0] == 0u && gw.out[2] == SIG_MSG_HELLO;
    gw.pos = 0;
    gw.out_len = 0;
    return ok;
}

/* The sequenced body of a plain one, as PROTOCOL.md section 5 writes it
 * (this test's own encoder: header | 0x80, the seq varint, the fields). */
static size_t add_seq(const uint8_t *plain, size_t n, uint32_t seq, uint8_t *out)
{
    size_t k = 0;
    out[k++] = (uint8_t)(plain[0] | 0x80u);
    while (seq >= 0x80u) {
        out[k++] = (uint8_t)((seq & 0x7Fu) | 0x80u);
        seq >>= 7;
    }
    out[k++] = (uint8_t)seq;
    memcpy(out + k, plain + 1, n - 1u);
    return k + n - 1u;
}

/* Expect the frame of message m, sequenced with seq (0: plain). */
static int expect_msg_seq(const sig_msg_t *m, uint32_t seq)
{
    uint8_t plain[200], body[210], frame[230];
    size_t pn, bn, fn;
    if (gw_msg_encode(m, plain, sizeof plain, &pn) != SIG_OK) {
        return 0;
    }
    bn = seq != 0u ? add_seq(plain, pn, seq, body) : pn;
    if (seq == 0u) {
        memcpy(body, plain, pn);
    }
    return sig_frame_encode(frame, sizeof frame, body, bn, &fn) == SIG_OK && expect_bytes(frame, fn);
}

#if SIG_CONFIG_RELIABLE
static int expect_ack(uint32_t seq)
{
    sig_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_ACK;
    m.u.ack.seq = seq;
    return expect_msg_seq(&m, 0);
}
#endif

/* Feed message m from the gateway, sequenced with seq (0: plain). */
static sig_err_t gw_send_seq(const sig_msg_t *m, uint32_t seq)
{
    uint8_t plain[200], body[210], frame[230];
    size_t pn, bn, fn;
    CHECK(gw_msg_encode(m, plain, sizeof plain, &pn) == SIG_OK);
    bn = seq != 0u ? add_seq(plain, pn, seq, body) : pn;
    if (seq == 0u) {
        memcpy(body, plain, pn);
    }
    CHECK(sig_frame_encode(frame, sizeof frame, body, bn, &fn) == SIG_OK);
    return sig_device_feed(&dev, frame, fn);
}

static sig_err_t gw_send_body(sig_bytes_t body)
{
    uint8_t frame[330];
    size_t fn;
    CHECK(sig_frame_encode(frame, sizeof frame, body.ptr, body.len, &fn) == SIG_OK);
    return sig_device_feed(&dev, frame, fn);
}

static sig_msg_t msg_ref(sig_msg_type_t t, uint32_t ref)
{
    sig_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = t;
    m.u.ref.ref = ref;
    return m;
}

/* A message with one ref field (SENDER_REGISTERED, LISTENING, UNLISTEN, ...) or ACK's seq. */
static sig_err_t gw_send_ref(sig_msg_type_t t, uint32_t ref, uint32_t seq)
{
    sig_msg_t m = msg_ref(t, ref);
    return gw_send_seq(&m, seq);
}

#if SIG_CONFIG_RELIABLE
static int expect_ref(sig_msg_type_t t, uint32_t ref, uint32_t seq)
{
    sig_msg_t m = msg_ref(t, ref);
    return expect_msg_seq(&m, seq);
}
#endif

static sig_bytes_t B(const char *s)
{
    sig_bytes_t b;
    b.ptr = (const uint8_t *)s;
    b.len = s ? strlen(s) : 0;
    return b;
}

static const uint8_t TEMP[] = {0xfa, 0x41, 0xb8, 0xcc, 0xcd}; /* 23.1f */
static const char *const EVENTS[] = {"temperature", "#alarm"};
static const sig_method_t METHODS[] = {{"get_temp", on_request}};
/* event 0 (temperature) reliable, event 1 (#alarm) best effort */
static const sig_sender_desc_t SENSOR = {"sensor1", EVENTS, 2, METHODS, 1, NULL, NULL, NULL, 0, 0x01u};

/* A device "sensor1" (max_body SIG_CONFIG_MAX_BODY, keepalive 2000) with SENSOR and two listeners. */
static void setup(void)
{
    sig_device_config_t cfg;
    sig_sender_t s;
    memset(&gw, 0, sizeof gw);
    memset(&app, 0, sizeof app);
    gw.now = 1000;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "sensor1";
    cfg.keepalive_ms = 2000;
    cfg.platform.write = gw_write;
    cfg.platform.millis = gw_millis;
    cfg.on_status = on_status;
    CHECK(sig_device_init(&dev, &cfg) == SIG_OK);
    CHECK(sig_device_add_sender(&dev, &SENSOR, &s) == SIG_OK && s == 0);
}

#if SIG_CONFIG_RELIABLE
static void on_event(sig_device_t *d, void *user, const sig_event_t *ev)
{
    (void)d;
    (void)user;
    (void)ev;
}
#endif

#if SIG_CONFIG_RELIABLE
static void add_listeners(void)
{
    uint8_t l;
    CHECK(sig_device_listen(&dev, "timer", "tick", on_event, NULL, &l) == SIG_OK && l == 0);
    CHECK(sig_device_listen(&dev, NULL, "#alarm", on_event, NULL, &l) == SIG_OK && l == 1);
}
#endif

/* The device's REGISTER_SENDER of SENSOR and its LISTENs, plain. */
static sig_msg_t register_msg(sig_event_decl_t ev[2], sig_bytes_t me[1])
{
    sig_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_REGISTER_SENDER;
    m.u.register_sender.sender_ref = 1;
    m.u.register_sender.name = B("sensor1");
    m.u.register_sender.n_events = 2;
    ev[0].ref = 1;
    ev[0].name = B("temperature");
    ev[1].ref = 2;
    ev[1].name = B("#alarm");
    m.u.register_sender.events = ev;
    m.u.register_sender.n_methods = 1;
    me[0] = B("get_temp");
    m.u.register_sender.methods = me;
    return m;
}

#if SIG_CONFIG_RELIABLE
static sig_msg_t listen_msg(uint32_t id, const char *sender, const char *event)
{
    sig_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_LISTEN;
    m.u.listen.listener_id = id;
    m.u.listen.sender = B(sender);
    m.u.listen.event = B(event);
    return m;
}
#endif

static sig_msg_t trigger_msg(uint32_t ref, const uint8_t *data, size_t n)
{
    sig_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_TRIGGER;
    m.u.trigger.event_ref = ref;
    m.u.trigger.data.ptr = data;
    m.u.trigger.data.len = n;
    return m;
}

/* WELCOME as the handshake vector (features 1), or with other features / keepalive. */
static sig_err_t gw_welcome(uint32_t features, uint32_t keepalive)
{
    sig_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_WELCOME;
    m.u.welcome.version = 1;
    m.u.welcome.name = B("sig-gateway");
    m.u.welcome.max_body = 65535;
    m.u.welcome.keepalive_ms = keepalive;
    m.u.welcome.features = features;
    return gw_send_seq(&m, 0);
}

#if SIG_CONFIG_RELIABLE

/* ---- the state machine against the vectors ---- */

/* the largest body of the reliable vectors is 32 bytes (a signed REQUEST):
 * small scratch, so that the suite fits a Cortex-M0's 32 KB */
#define VEC_REL_BODY_MAX 64u

/* the state machine works on `dev` itself (its reliable and signing fields
 * only): a second sig_device_t would not fit a small target's RAM */
#define rdev dev

static void rel_fresh(void)
{
    memset(&rdev, 0, sizeof rdev);
    sig__rel_start(&rdev, true);
}

TEST(reliable_sequence_header)
{
    size_t i;
    static uint8_t buf[VEC_REL_BODY_MAX], frame[VEC_REL_BODY_MAX + 8];
    size_t n, fn;
    CHECK(VEC_REL_WINDOW == SIG_CONFIG_RELIABLE_WINDOW && VEC_REL_RTO_MS == SIG_CONFIG_RELIABLE_RTO_MS &&
          VEC_REL_MAX_RTO_MS == 8u * SIG_CONFIG_RELIABLE_RTO_MS && VEC_REL_MAX_RETRIES == SIG_CONFIG_RELIABLE_MAX_RETRIES);
    for (i = 0; i < VEC_N(VEC_REL_SEQ); i++) {
        const struct vec_rel_seq *v = &VEC_REL_SEQ[i];
        uint8_t *p = buf;
        uint32_t ack = 0;
        if (v->body.len + 12u > VEC_REL_BODY_MAX) {
            CHECKN(0, v->name); /* raise VEC_REL_BODY_MAX */
            continue;
        }
        /* sending: the header added after the type byte, the frame kept */
        rel_fresh();
        rdev.rel_next = v->seq;
        memcpy(buf, v->plain.ptr, v->plain.len);
        n = v->plain.len;
        CHECKN(sig__rel_send(&rdev, buf, &n, true, 5) == SIG_OK && bytes_equal(buf, n, v->body.ptr, v->body.len),
               v->name);
        CHECKN(rdev.rel_kept == 1 && rdev.rel_next == v->seq + 1u && rdev.rel_deadline == 5u + VEC_REL_RTO_MS, v->name);
        CHECKN(sig_frame_encode(frame, sizeof frame, buf, n, &fn) == SIG_OK &&
                   bytes_equal(frame, fn, v->frame.ptr, v->frame.len), v->name);
        CHECKN(sig__rel_copy(&rdev, 0, frame) == v->body.len && bytes_equal(frame, v->body.len, v->body.ptr, v->body.len),
               v->name);
        /* receiving: accepted when expected, the header stripped in place */
        rel_fresh();
        rdev.rel_expected = v->seq;
        memcpy(buf, v->body.ptr, v->body.len);
        n = v->body.len;
        CHECKN(sig__rel_receive(&rdev, &p, &n, &ack) == 0 && ack == v->seq && rdev.rel_expected == v->seq + 1u,
               v->name);
        CHECKN(bytes_equal(p, n, v->plain.ptr, v->plain.len), v->name);
    }
    for (i = 0; i < VEC_N(VEC_REL_ACK); i++) {
        const struct vec_rel_ack *v = &VEC_REL_ACK[i];
        sig_msg_t m = msg_ref(SIG_MSG_ACK, 0), d;
        m.u.ack.seq = v->seq;
        CHECK(gw_msg_encode(&m, buf, sizeof buf, &n) == SIG_OK && bytes_equal(buf, n, v->body.ptr, v->body.len));
        CHECK(sig_frame_encode(frame, sizeof frame, buf, n, &fn) == SIG_OK &&
              bytes_equal(frame, fn, v->frame.ptr, v->frame.len));
        CHECK(sig_msg_decode(v->body.ptr, v->body.len, &d) == SIG_OK && d.type == SIG_MSG_ACK && d.u.ack.seq == v->seq);
    }
    /* the types a device never sequences stay plain; a TRIGGER only when asked */
    rel_fresh();
    buf[0] = SIG_MSG_PING;
    buf[1] = 7;
    n = 2;
    CHECK(sig__rel_send(&rdev, buf, &n, true, 0) == SIG_OK && n == 2 && buf[0] == SIG_MSG_PING && rdev.rel_kept == 0);
    buf[0] = SIG_MSG_TRIGGER;
    CHECK(sig__rel_send(&rdev, buf, &n, false, 0) == SIG_OK && n == 2 && buf[0] == SIG_MSG_TRIGGER && rdev.rel_kept == 0);
    buf[0] = SIG_MSG_ACK;
    CHECK(sig__rel_send(&rdev, buf, &n, true, 0) == SIG_OK && n == 2 && rdev.rel_kept == 0);
    /* the window: W frames, then BUSY (counted), nothing changed */
    for (i = 0; i < SIG_CONFIG_RELIABLE_WINDOW; i++) {
        buf[0] = SIG_MSG_REQUEST;
        n = 2;
        CHECK(sig__rel_send(&rdev, buf, &n, false, 0) == SIG_OK && n == 3);
    }
    buf[0] = SIG_MSG_REQUEST;
    n = 2;
    CHECK(sig__rel_send(&rdev, buf, &n, false, 0) == SIG_ERR_BUSY && n == 2 && buf[0] == SIG_MSG_REQUEST);
    CHECK(rdev.rel_stats.busy == 1 && !sig__rel_room(&rdev));
    /* a used-up seq ends the session */
    rel_fresh();
    rdev.rel_next = 0;
    n = 2;
    CHECK(sig__rel_send(&rdev, buf, &n, false, 0) == SIG__REL_END);
    /* without a reliable session: nothing is sequenced, every ACK is bad */
    sig__rel_start(&rdev, false);
    CHECK(sig__rel_send(&rdev, buf, &n, true, 0) == SIG_OK && n == 2 && buf[0] == SIG_MSG_REQUEST && sig__rel_room(&rdev));
    CHECK(!sig__rel_ack(&rdev, 0, 0) && rdev.rel_stats.bad_acks == 1);
#if SIG_CONFIG_AUTH
    /* signed and sequenced: the seq after the counter, inside the signature */
    for (i = 0; i < VEC_N(VEC_REL_SIGN); i++) {
        const struct vec_rel_sign *v = &VEC_REL_SIGN[i];
        if (v->body.len + 12u > VEC_REL_BODY_MAX) {
            CHECKN(0, v->name); /* raise VEC_REL_BODY_MAX */
            continue;
        }
        rel_fresh();
        rdev.state = SIG__DEV_ONLINE;
        rdev.auth_key = VEC_REL_SIGN_KEY;
        memcpy(rdev.auth_nd, VEC_REL_SIGN_DEVICE_NONCE, SIG_AUTH_NONCE_LEN);
        memcpy(rdev.auth_ng, VEC_REL_SIGN_GATEWAY_NONCE, SIG_AUTH_NONCE_LEN);
        if (v->direction == SIG_AUTH_TO_GATEWAY) { /* as tx_send: plain with the counter's room, sequenced, sealed */
            rdev.rel_next = v->seq;
            rdev.auth_tx = v->counter - 1u;
            buf[0] = v->plain.ptr[0];
            memset(buf + 1, 0, 4);
            memcpy(buf + 5, v->plain.ptr + 1, v->plain.len - 1u);
            n = v->plain.len + 4u;
            CHECKN(sig__rel_send(&rdev, buf, &n, true, 0) == SIG_OK, v->name);
            n = sig__auth_seal(&rdev, buf, n);
            CHECKN(bytes_equal(buf, n, v->body.ptr, v->body.len), v->name);
            CHECKN(sig_frame_encode(frame, sizeof frame, buf, n, &fn) == SIG_OK &&
                       bytes_equal(frame, fn, v->frame.ptr, v->frame.len), v->name);
        } else { /* as feed: checked, then the seq stripped */
            uint8_t *p = buf;
            uint32_t ack = 0;
            rdev.rel_expected = v->seq;
            rdev.auth_rx = v->counter - 1u;
            memcpy(buf, v->body.ptr, v->body.len);
            n = sig__auth_open(&rdev, &p, v->body.len);
            CHECKN(n == v->sequenced.len && bytes_equal(p, n, v->sequenced.ptr, v->sequenced.len), v->name);
            CHECKN(sig__rel_receive(&rdev, &p, &n, &ack) == 0 && ack == v->seq, v->name);
            CHECKN(bytes_equal(p, n, v->plain.ptr, v->plain.len), v->name);
        }
    }
#endif
}

/* One side's view of an exchange, step by step: the vectors' frames in and
 * out, counters and state (expected, next_seq, kept, rto, retries, deadline). */
static void run_exchange(const struct vec_rel_exchange *ex)
{
    const uint32_t T0 = 0xFFFFF000u; /* near the wrap of millis(): the timers must not care */
    size_t i, k;
    rel_fresh();
    for (i = 0; i < ex->n; i++) {
        const struct vec_rel_step *st = &ex->steps[i];
        const sig_reliable_stats_t *c = &rdev.rel_stats;
        uint32_t now = T0 + st->t_ms, got[5];
        static uint8_t buf[VEC_REL_BODY_MAX], out[VEC_REL_MAX_OUT][VEC_REL_BODY_MAX];
        size_t n = st->body.len, outn[VEC_REL_MAX_OUT], n_out = 0, fn;
        int accepted = 0;
        sig_bytes_t acc = {NULL, 0};
        static uint8_t frame[VEC_REL_BODY_MAX + 8];
        CHECKN(st->body.len + SIG__SEQ_ROOM <= VEC_REL_BODY_MAX, ex->name);
        if (st->body.len > 0) {
            memcpy(buf, st->body.ptr, n);
        }
        if (st->op == 's') {
            CHECKN(sig__rel_send(&rdev, buf, &n, st->sequenced != 0u, now) == SIG_OK, ex->name);
            memcpy(out[0], buf, n);
            outn[n_out++] = n;
        } else if (st->op == 'r') {
            CHECKN(sig_frame_encode(frame, sizeof frame, st->body.ptr, st->body.len, &fn) == SIG_OK &&
                       bytes_equal(frame, fn, st->frame.ptr, st->frame.len), ex->name);
            if (buf[0] == SIG_MSG_ACK) {
                uint32_t a = 0;
                size_t used;
                CHECK(sig_varint_decode(buf + 1, n - 1u, &a, &used) == SIG_OK);
                if (sig__rel_ack(&rdev, a, now)) {
                    for (k = 0; k < rdev.rel_kept && n_out < VEC_REL_MAX_OUT; k++) {
                        outn[n_out] = sig__rel_copy(&rdev, (unsigned)k, out[n_out]);
                        n_out++;
                    }
                }
            } else if (buf[0] & SIG_HEADER_FLAG_SEQ) {
                uint8_t *p = buf;
                uint32_t ack = 0;
                int r = sig__rel_receive(&rdev, &p, &n, &ack);
                CHECKN(r >= 0, ex->name);
                out[0][0] = SIG_MSG_ACK;
                CHECK(sig_varint_encode(ack, out[0] + 1, 8, &outn[0]) == SIG_OK);
                outn[0]++;
                n_out = 1;
                if (r == 0) {
                    accepted = 1;
                    acc.ptr = p;
                    acc.len = n;
                }
            } else { /* best effort: handled as it is */
                accepted = 1;
                acc.ptr = buf;
                acc.len = n;
            }
        } else {
            int r = sig__rel_timer(&rdev, now);
            CHECKN(r == (st->ends_session ? 2 : st->n_out > 0 ? 1 : 0), ex->name);
            for (k = 0; r == 1 && k < rdev.rel_kept && n_out < VEC_REL_MAX_OUT; k++) {
                outn[n_out] = sig__rel_copy(&rdev, (unsigned)k, out[n_out]);
                n_out++;
            }
        }
        CHECKN(n_out == st->n_out, ex->name);
        for (k = 0; k < n_out && k < st->n_out; k++) {
            CHECKN(bytes_equal(out[k], outn[k], st->out[k].ptr, st->out[k].len), ex->name);
            CHECKN(sig_frame_encode(frame, sizeof frame, out[k], outn[k], &fn) == SIG_OK &&
                       bytes_equal(frame, fn, st->out_frames[k].ptr, st->out_frames[k].len), ex->name);
        }
        CHECKN(accepted == st->has_accepted && (!accepted || slice_eq(acc, st->accepted)), ex->name);
        got[0] = c->retransmits;
        got[1] = c->duplicates;
        got[2] = c->out_of_order;
        got[3] = c->bad_acks;
        got[4] = c->reliable_failures;
        CHECKN(memcmp(got, st->counters, sizeof got) == 0, ex->name);
        if (st->ends_session) {
            break; /* the device starts over with HELLO (the session test checks it) */
        }
        CHECKN(rdev.rel_expected == st->expected && rdev.rel_next == st->next_seq && rdev.rel_kept == st->n_kept, ex->name);
        for (k = 0; k < st->n_kept && k < rdev.rel_kept; k++) {
            CHECKN(rdev.rel_next - rdev.rel_kept + k == st->kept[k], ex->name);
        }
        CHECKN(rdev.rel_rto == st->rto_ms && rdev.rel_retries == st->retries, ex->name);
        CHECKN(st->has_deadline ? rdev.rel_deadline == T0 + st->deadline_ms && sig__rel_deadline(&rdev, now) ==
                                                                                      st->deadline_ms - st->t_ms
                                : sig__rel_deadline(&rdev, now) == SIG_NO_DEADLINE, ex->name);
    }
}

TEST(reliable_exchanges)
{
    size_t i;
    CHECK(VEC_N(VEC_REL_EXCHANGES) >= 3);
    for (i = 0; i < VEC_N(VEC_REL_EXCHANGES); i++) {
        run_exchange(&VEC_REL_EXCHANGES[i]); /* fast retransmit too: the library does it */
    }
}

#else /* !SIG_CONFIG_RELIABLE */

TEST(reliable_sequence_header)
{
    /* a library without the mode asks for no feature 0x01 in HELLO and has no counters */
    const sig_reliable_stats_t *c;
    sig_msg_t hello;
    memset(&hello, 0, sizeof hello);
    hello.type = SIG_MSG_HELLO;
    hello.u.hello.version = 1;
    hello.u.hello.name = B("sensor1");
    hello.u.hello.max_body = SIG_CONFIG_MAX_BODY;
    hello.u.hello.keepalive_ms = 2000;
    hello.u.hello.features = SIG_CONFIG_AUTH ? 0u : 0u; /* no key here: neither AUTH nor RELIABLE */
    setup();
    CHECK(sig_device_start(&dev) == SIG_OK);
    CHECK(gw.out_len > 2 && gw.out[0] == 0 && (gw.pos = 1) == 1 && expect_msg_seq(&hello, 0) && expect_end());
    c = sig_device_reliable_stats(&dev);
    CHECK(c->retransmits == 0 && c->duplicates == 0 && c->out_of_order == 0 && c->bad_acks == 0 &&
          c->reliable_failures == 0 && c->reliable_dropped == 0 && c->busy == 0);
    CHECK(SIG__SEQ_ROOM == 0u);
}

TEST(reliable_exchanges)
{
    /* granted by mistake (WELCOME features 1), it still sends every frame plain */
    sig_event_decl_t ev[2];
    sig_bytes_t me[1];
    sig_msg_t reg = register_msg(ev, me);
    setup();
    CHECK(start_device());
    CHECK(gw_welcome(SIG_FEATURE_RELIABLE, 2000) == SIG_OK);
    CHECK(expect_msg_seq(&reg, 0) && expect_end());
    CHECK(!sig_device_reliable(&dev) && sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_OK);
    {
        sig_msg_t t = trigger_msg(1, TEMP, sizeof TEMP);
        CHECK(expect_msg_seq(&t, 0) && expect_end());
    }
}

#endif

/* Every refused body of the vectors through a device session: with the mode
 * (a granted session) or without it (not granted, or not compiled in). */
TEST(reliable_refused_bodies)
{
    size_t i;
    uint32_t seq = 0; /* the device's ERRORs are sequenced in a reliable session */
    for (i = 0; i < VEC_N(VEC_REL_BAD); i++) {
        const struct vec_rel_bad *v = &VEC_REL_BAD[i];
        int granted = SIG_CONFIG_RELIABLE && v->reliable;
        sig_msg_t want = msg_ref(SIG_MSG_ERROR, 0);
        setup();
        CHECK(start_device());
        CHECK(gw_welcome(granted ? SIG_FEATURE_RELIABLE : 0u, 2000) == SIG_OK);
        gw.out_len = 0; /* the registration */
        seq = granted ? 2u : 0u;
        want.u.error.code = v->code;
        want.u.error.about = v->body.ptr[0] & SIG_HEADER_TYPE_MASK; /* the type answered */
        want.u.error.ref = v->ref;
        if (!SIG_CONFIG_RELIABLE && v->reliable && (v->body.ptr[0] & SIG_HEADER_FLAG_SEQ)) {
            want.u.error.code = SIG_CODE_UNSUPPORTED_FEATURE; /* the flag of a feature it lacks */
        }
        CHECKN(gw_send_body(v->body) == SIG_OK, v->name);
        CHECKN(sig_device_reliable(&dev) == (granted != 0), v->name);
        CHECKN(expect_msg_seq(&want, seq) && expect_end(), v->name); /* an ERROR, not an ACK */
    }
    /* ACK without the mode: ignored, no answer */
    setup();
    CHECK(start_device());
    CHECK(gw_welcome(0, 2000) == SIG_OK);
    gw.out_len = 0;
    CHECK(gw_send_body(VEC_REL_ACK_WITHOUT_FEATURE) == SIG_OK && expect_end());
    CHECK(sig_device_reliable_stats(&dev)->bad_acks == (SIG_CONFIG_RELIABLE ? 1u : 0u));
}

#if SIG_CONFIG_RELIABLE

/* A whole session with a scripted gateway. */
TEST(reliable_session_scripted)
{
    sig_event_decl_t ev[2];
    sig_bytes_t me[1];
    sig_msg_t reg = register_msg(ev, me), l1 = listen_msg(1, "timer", "tick"), l2 = listen_msg(2, NULL, "#alarm");
    sig_msg_t req, resp, trig = trigger_msg(1, TEMP, sizeof TEMP), alarm = trigger_msg(2, NULL, 0);
    const sig_reliable_stats_t *c;
    uint32_t rid = 0;
    setup();
    add_listeners();
    c = sig_device_reliable_stats(&dev);
    /* HELLO asks for the mode: the handshake vector byte for byte */
    CHECK(sig_device_start(&dev) == SIG_OK);
    CHECK(expect_bytes((const uint8_t *)"", 1) && expect_slice(VEC_REL_HELLO_FRAME) && expect_end());
    CHECK(sig_device_feed(&dev, VEC_REL_WELCOME_FRAME.ptr, VEC_REL_WELCOME_FRAME.len) == SIG_OK);
    CHECK(sig_device_online(&dev) && sig_device_reliable(&dev));
    /* three registrations, a window of two: the third waits for an ACK */
    CHECK(expect_msg_seq(&reg, 1) && expect_msg_seq(&l1, 2) && expect_end());
    CHECK(sig_device_next_deadline(&dev) == SIG_CONFIG_RELIABLE_RTO_MS);
    CHECK(sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_ERR_BUSY && c->busy == 1);
    CHECK(sig_device_trigger(&dev, 2, NULL, 0) == SIG_OK); /* best effort never waits for the window */
    CHECK(expect_msg_seq(&alarm, 0) && expect_end());
    CHECK(sig_device_request(&dev, "timer", "now", NULL, 0, 1000, on_response, NULL, &rid) == SIG_ERR_BUSY);
    gw.now += 10;
    CHECK(gw_send_ref(SIG_MSG_ACK, 1, 0) == SIG_OK); /* room for one: the LISTEN waiting */
    CHECK(expect_msg_seq(&l2, 3) && expect_end());
    CHECK(gw_send_ref(SIG_MSG_ACK, 3, 0) == SIG_OK && expect_end()); /* cumulative: 2 and 3 */
    CHECK(sig_device_next_deadline(&dev) > SIG_CONFIG_RELIABLE_RTO_MS); /* only the keepalive runs */
    CHECK(gw_send_ref(SIG_MSG_ACK, 9, 0) == SIG_OK && c->bad_acks == 1 && expect_end()); /* never sent */
    /* accept, duplicate, gap */
    CHECK(gw_send_ref(SIG_MSG_SENDER_REGISTERED, 1, 1) == SIG_OK && expect_ack(1) && expect_end());
    CHECK(app.n_status == 3 && app.status[2] == SIG_STATUS_REGISTERED);
    CHECK(gw_send_ref(SIG_MSG_SENDER_REGISTERED, 1, 1) == SIG_OK && expect_ack(1) && expect_end());
    CHECK(c->duplicates == 1 && app.n_status == 3); /* dropped: not handled twice */
    memset(&req, 0, sizeof req);
    req.type = SIG_MSG_REQUEST;
    req.u.request.request_id = 77;
    req.u.request.sender = B("sensor1");
    req.u.request.method = B("get_temp");
    CHECK(gw_send_seq(&req, 3) == SIG_OK && expect_ack(1) && expect_end()); /* 2 was lost */
    CHECK(c->out_of_order == 1 && app.requests == 0);
    CHECK(gw_send_ref(SIG_MSG_LISTENING, 1, 2) == SIG_OK && expect_ack(2) && expect_end());
    CHECK(gw_send_seq(&req, 3) == SIG_OK && expect_ack(3) && expect_end()); /* the retransmission */
    CHECK(app.requests == 1 && app.last_request_id == 77);
    /* a plain frame is handled as best effort: no ACK, expected unchanged */
    CHECK(gw_send_ref(SIG_MSG_LISTENING, 2, 0) == SIG_OK && expect_end());
    /* the answer and a reliable trigger fill the window; then BUSY everywhere */
    memset(&resp, 0, sizeof resp);
    resp.type = SIG_MSG_RESPONSE;
    resp.u.response.request_id = 77;
    resp.u.response.data.ptr = TEMP;
    resp.u.response.data.len = sizeof TEMP;
    CHECK(sig_device_respond(&dev, 77, SIG_CODE_OK, NULL, TEMP, sizeof TEMP) == SIG_OK);
    CHECK(sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_OK);
    CHECK(expect_msg_seq(&resp, 4) && expect_msg_seq(&trig, 5) && expect_end());
    CHECK(sig_device_respond(&dev, 77, SIG_CODE_OK, NULL, NULL, 0) == SIG_ERR_BUSY);
    CHECK(sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_ERR_BUSY);
    CHECK(sig_device_request(&dev, "timer", "now", NULL, 0, 1000, on_response, NULL, &rid) == SIG_ERR_BUSY);
    CHECK(sig_device_remove_sender(&dev, 0) == SIG_ERR_BUSY && sig_device_unlisten(&dev, 0) == SIG_ERR_BUSY);
    CHECK(c->busy == 7 && c->reliable_dropped == 0 && expect_end());
    /* an auto-answer is dropped too: the REQUEST is ACKed, its NO_SUCH_METHOD is not sent */
    req.u.request.request_id = 78;
    req.u.request.method = B("nope");
    CHECK(gw_send_seq(&req, 4) == SIG_ERR_BUSY && expect_ack(4) && expect_end() && c->reliable_dropped == 1);
    CHECK(c->busy == 8); /* every refusal; reliable_dropped: those of the library's own answers */
    /* the ACKs are lost: after the RTO both frames go again, the RTO doubles */
    CHECK(sig_device_next_deadline(&dev) == SIG_CONFIG_RELIABLE_RTO_MS);
    gw.now += SIG_CONFIG_RELIABLE_RTO_MS - 1u;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_end());
    gw.now += 1;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_msg_seq(&resp, 4) && expect_msg_seq(&trig, 5) && expect_end());
    CHECK(c->retransmits == 2 && sig_device_next_deadline(&dev) == 2u * SIG_CONFIG_RELIABLE_RTO_MS);
    /* a repeated ACK (the gateway saw a gap): resent at once, once for this oldest frame;
     * the timer, RTO and retries stay as they are */
    gw.now += 5;
    CHECK(gw_send_ref(SIG_MSG_ACK, 3, 0) == SIG_OK && expect_msg_seq(&resp, 4) && expect_msg_seq(&trig, 5) &&
          expect_end() && c->retransmits == 4);
    CHECK(sig_device_next_deadline(&dev) == 2u * SIG_CONFIG_RELIABLE_RTO_MS - 5u && dev.rel_retries == 1);
    CHECK(gw_send_ref(SIG_MSG_ACK, 3, 0) == SIG_OK && expect_end() && c->retransmits == 4); /* not twice */
    /* the ACK comes: the window is empty, the timer stops */
    CHECK(gw_send_ref(SIG_MSG_ACK, 5, 0) == SIG_OK && expect_end());
    CHECK(dev.rel_kept == 0 && dev.rel_retries == 0 && dev.rel_rto == SIG_CONFIG_RELIABLE_RTO_MS);
    /* take back: UNLISTEN and UNREGISTER_SENDER are sequenced */
    CHECK(sig_device_unlisten(&dev, 1) == SIG_OK);
    CHECK(expect_ref(SIG_MSG_UNLISTEN, 2, 6) && expect_end());
    /* INVITE: a new session forgets the window; the registrations start again at seq 1 */
    CHECK(gw_send_ref(SIG_MSG_INVITE, 0, 0) == SIG_OK);
    CHECK(expect_bytes((const uint8_t *)"", 1) && expect_slice(VEC_REL_HELLO_FRAME) && expect_end());
    CHECK(!sig_device_reliable(&dev) && dev.rel_kept == 0);
    CHECK(sig_device_feed(&dev, VEC_REL_WELCOME_FRAME.ptr, VEC_REL_WELCOME_FRAME.len) == SIG_OK);
    CHECK(expect_msg_seq(&reg, 1) && expect_msg_seq(&l1, 2) && expect_end());
    /* not granted: plain frames, no window */
    CHECK(gw_send_ref(SIG_MSG_INVITE, 0, 0) == SIG_OK && gw_welcome(0, 2000) == SIG_OK);
    gw.pos = 0;
    gw.out_len = 0;
    CHECK(!sig_device_reliable(&dev) && sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_OK);
    CHECK(expect_msg_seq(&trig, 0) && expect_end());
}

/* No ACK ever: 16 retransmissions with backoff, then the session starts over. */
TEST(reliable_session_gives_up)
{
    sig_event_decl_t ev[2];
    sig_bytes_t me[1];
    sig_msg_t reg = register_msg(ev, me), trig = trigger_msg(1, TEMP, sizeof TEMP);
    const sig_reliable_stats_t *c;
    uint32_t rto = SIG_CONFIG_RELIABLE_RTO_MS, k;
    setup();
    c = sig_device_reliable_stats(&dev);
    CHECK(start_device());
    CHECK(gw_welcome(SIG_FEATURE_RELIABLE, 0) == SIG_OK); /* no keepalive: only this timer runs */
    CHECK(expect_msg_seq(&reg, 1) && expect_end());
    for (k = 1; k <= SIG_CONFIG_RELIABLE_MAX_RETRIES; k++) {
        CHECK(sig_device_next_deadline(&dev) == rto);
        gw.now += rto;
        CHECK(sig_device_poll(&dev) == SIG_OK && expect_msg_seq(&reg, 1) && expect_end());
        rto = rto < 4u * SIG_CONFIG_RELIABLE_RTO_MS ? 2u * rto : 8u * SIG_CONFIG_RELIABLE_RTO_MS;
    }
    CHECK(c->retransmits == SIG_CONFIG_RELIABLE_MAX_RETRIES && c->reliable_failures == 0);
    gw.now += rto - 1u;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_end());
    gw.now += 1;
    CHECK(sig_device_poll(&dev) == SIG_OK);
    CHECK(expect_bytes((const uint8_t *)"", 1) && expect_slice(VEC_REL_HELLO_FRAME) && expect_end());
    CHECK(c->reliable_failures == 1 && !sig_device_online(&dev));
    CHECK(app.n_status >= 2 && app.status[app.n_status - 2] == SIG_STATUS_RELIABLE_FAILED &&
          app.status[app.n_status - 1] == SIG_STATUS_HELLO);
    /* the seq runs out: the session ends before it would pass 2^32 - 1 */
    CHECK(gw_welcome(SIG_FEATURE_RELIABLE, 0) == SIG_OK && expect_msg_seq(&reg, 1) && expect_end());
    CHECK(gw_send_ref(SIG_MSG_ACK, 1, 0) == SIG_OK);
    dev.rel_next = 0xFFFFFFFFu;
    CHECK(sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_OK && expect_msg_seq(&trig, 0xFFFFFFFFu) && expect_end());
    CHECK(sig_device_trigger(&dev, 1, TEMP, sizeof TEMP) == SIG_OK); /* a HELLO instead */
    CHECK(expect_bytes((const uint8_t *)"", 1) && expect_slice(VEC_REL_HELLO_FRAME) && expect_end());
}

#else

TEST(reliable_session_scripted)
{
    /* sequenced frames from the gateway: the flag of a feature it lacks, never acknowledged */
    sig_msg_t want = msg_ref(SIG_MSG_ERROR, 0);
    setup();
    CHECK(start_device());
    CHECK(gw_welcome(SIG_FEATURE_RELIABLE, 2000) == SIG_OK);
    gw.out_len = 0;
    want.u.error.code = SIG_CODE_UNSUPPORTED_FEATURE;
    want.u.error.about = SIG_MSG_SENDER_REGISTERED;
    CHECK(gw_send_ref(SIG_MSG_SENDER_REGISTERED, 1, 1) == SIG_OK && expect_msg_seq(&want, 0) && expect_end());
    CHECK(app.n_status == 2); /* HELLO, WELCOME: the SENDER_REGISTERED was not handled */
}

TEST(reliable_session_gives_up)
{
    /* no ACK ever: nothing is kept, nothing is sent again */
    sig_event_decl_t ev[2];
    sig_bytes_t me[1];
    sig_msg_t reg = register_msg(ev, me);
    setup();
    CHECK(start_device());
    CHECK(gw_welcome(SIG_FEATURE_RELIABLE, 0) == SIG_OK && expect_msg_seq(&reg, 0) && expect_end());
    CHECK(sig_device_next_deadline(&dev) == SIG_NO_DEADLINE);
    gw.now += 100000u;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_end() && sig_device_online(&dev));
}

#endif
