/* Session tests: a scripted fake gateway (bytes in, bytes out) with a fake
 * clock. Expected frames come from tests/vectors.json wherever the device's
 * message equals a vector; others are built with the (vector-tested) codec. */
#include <stdlib.h>
#include <string.h>

#include "sig_device.h"
#include "test_util.h"
#include "gw_codec.h"
#include "unittest.h"
#include "vectors.h"

/* ---- fake platform ---- */

typedef struct {
    uint8_t out[8192];
    size_t out_len;
    size_t budget; /* bytes write() accepts before it fails; SIZE_MAX = no limit */
    uint32_t now;
    int writes_failed;
    int writes; /* write() calls */
} fake_t;

static bool fake_write(void *ctx, const uint8_t *buf, size_t len)
{
    fake_t *f = ctx;
    size_t n = len;
    f->writes++;
    if (n > f->budget) {
        n = f->budget;
    }
    if (n > sizeof f->out - f->out_len) {
        n = sizeof f->out - f->out_len;
    }
    memcpy(f->out + f->out_len, buf, n);
    f->out_len += n;
    f->budget -= n;
    if (n < len) {
        f->writes_failed++;
        return false;
    }
    return true;
}

static uint32_t fake_millis(void *ctx)
{
    return ((fake_t *)ctx)->now;
}

/* ---- what the application sees ---- */

typedef struct {
    int status[16];
    uint32_t status_ref[16];
    int n_status;
    uint32_t err_code, err_about, err_ref;
    char err_msg[64];
    int n_errors;
    int events[8];       /* calls per listener */
    uint8_t last_data[16];
    size_t last_data_n;
    uint8_t last_flags;  /* sig_event_t.flags of the last event */
    int requests, default_requests;
    char last_method[32];
    int responses;
    sig_err_t respond_err;
    sig_response_t last_resp;
    uint8_t resp_data[16];
} app_t;

static app_t app;
static fake_t fake;
static sig_device_t dev;

static void on_status(sig_device_t *d, void *user, sig_status_t st, uint32_t ref)
{
    (void)d;
    (void)user;
    if (app.n_status < 16) {
        app.status[app.n_status] = (int)st;
        app.status_ref[app.n_status] = ref;
    }
    app.n_status++;
}

static void on_error(sig_device_t *d, void *user, uint32_t code, uint32_t about, uint32_t ref,
                     sig_bytes_t msg)
{
    (void)d;
    (void)user;
    app.err_code = code;
    app.err_about = about;
    app.err_ref = ref;
    if (msg.len > 0) {
        memcpy(app.err_msg, msg.ptr, msg.len < 63 ? msg.len : 63);
    }
    app.err_msg[msg.len < 63 ? msg.len : 63] = 0;
    app.n_errors++;
}

static void on_event(sig_device_t *d, void *user, const sig_event_t *ev)
{
    int idx = (int)(size_t)user;
    (void)d;
    app.events[idx]++;
    app.last_flags = ev->flags;
    app.last_data_n = ev->data.len < 16 ? ev->data.len : 16;
    if (app.last_data_n > 0) {
        memcpy(app.last_data, ev->data.ptr, app.last_data_n);
    }
}

static const uint8_t TEMP[] = {0xfa, 0x41, 0xb8, 0xcc, 0xcd}; /* PROTOCOL.md section 6: 23.1f */

static void on_get_temp(sig_device_t *d, void *user, const sig_request_t *req)
{
    (void)user;
    app.requests++;
    app.respond_err = sig_device_respond(d, req->request_id, SIG_CODE_OK, NULL, TEMP, sizeof TEMP);
}

static void on_default(sig_device_t *d, void *user, const sig_request_t *req)
{
    (void)user;
    app.default_requests++;
    memcpy(app.last_method, req->method.ptr, req->method.len < 31 ? req->method.len : 31);
    app.last_method[req->method.len < 31 ? req->method.len : 31] = 0;
    app.respond_err = sig_device_respond(d, req->request_id, SIG_CODE_HANDLER_ERROR, "nope", NULL, 0);
}

static void on_response(sig_device_t *d, void *user, const sig_response_t *resp)
{
    (void)d;
    (void)user;
    app.responses++;
    app.last_resp = *resp;
    if (resp->data.len > 0) {
        memcpy(app.resp_data, resp->data.ptr, resp->data.len < 16 ? resp->data.len : 16);
    }
}

static const char *const EVENTS[] = {"temperature", "#alarm"};
static const sig_method_t METHODS[] = {{"get_temp", on_get_temp}};
static const sig_sender_desc_t SENSOR = {"sensor1", EVENTS, 2, METHODS, 1, on_default, NULL, NULL, 0, 0};

/* ---- the fake gateway's side ---- */

static const struct vec_msg *V(const char *name)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_MSG); i++) {
        if (strcmp(VEC_MSG[i].name, name) == 0) {
            return &VEC_MSG[i];
        }
    }
    printf("no vector %s\n", name);
    abort();
}

/* Feed a vector's frame to the device. */
static sig_err_t gw_send_vec(const char *name)
{
    const struct vec_msg *v = V(name);
    return sig_device_feed(&dev, v->frame, v->frame_n);
}

static sig_err_t gw_send(const sig_msg_t *m)
{
    uint8_t body[300], frame[320];
    size_t bn, fn;
    CHECK(gw_msg_encode(m, body, sizeof body, &bn) == SIG_OK);
    CHECK(sig_frame_encode(frame, sizeof frame, body, bn, &fn) == SIG_OK);
    return sig_device_feed(&dev, frame, fn);
}

/* Expect the device's output to be exactly these frames (a leading 0x00
 * before each HELLO), then clear it. */
static size_t out_pos;
static int expect_bytes(const uint8_t *p, size_t n)
{
    int ok = out_pos + n <= fake.out_len && memcmp(fake.out + out_pos, p, n) == 0;
    out_pos += n;
    return ok;
}
static int expect_vec(const char *name)
{
    const struct vec_msg *v = V(name);
    return expect_bytes(v->frame, v->frame_n);
}
static int expect_msg(const sig_msg_t *m)
{
    uint8_t body[300], frame[320];
    size_t bn, fn;
    if (gw_msg_encode(m, body, sizeof body, &bn) != SIG_OK ||
        sig_frame_encode(frame, sizeof frame, body, bn, &fn) != SIG_OK) {
        return 0;
    }
    return expect_bytes(frame, fn);
}
/* The device's HELLO: the vector "hello" (max_body 256) with this
 * profile's SIG_CONFIG_MAX_BODY; byte for byte the vector in the host profile. */
static int expect_hello(void)
{
    sig_msg_t m = V("hello")->msg;
    m.u.hello.max_body = SIG_CONFIG_MAX_BODY;
    m.u.hello.features = SIG_CONFIG_RELIABLE ? SIG_FEATURE_RELIABLE : 0u; /* asks for it when compiled in */
    return expect_msg(&m);
}
static int expect_end(void)
{
    int ok = out_pos == fake.out_len;
    out_pos = 0;
    fake.out_len = 0;
    return ok;
}
static const uint8_t ZERO = 0;

static sig_bytes_t B(const char *s)
{
    sig_bytes_t b;
    b.ptr = (const uint8_t *)s;
    b.len = s ? strlen(s) : 0;
    return b;
}

static void setup(uint16_t max_body, uint16_t keepalive)
{
    sig_device_config_t cfg;
    memset(&app, 0, sizeof app);
    memset(&fake, 0, sizeof fake);
    fake.budget = (size_t)-1;
    fake.now = 1000;
    out_pos = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "sensor1";
    cfg.max_body = max_body;
    cfg.keepalive_ms = keepalive;
    cfg.platform.ctx = &fake;
    cfg.platform.write = fake_write;
    cfg.platform.millis = fake_millis;
    cfg.on_status = on_status;
    cfg.on_error = on_error;
    CHECK(sig_device_init(&dev, &cfg) == SIG_OK);
}

/* Device of the vectors: HELLO "hello", REGISTER_SENDER "register_sender",
 * LISTENs "listen_targeted", "listen_channel", "listen_router_broadcast",
 * plus a 4th LISTEN (none, "tick") that matches nothing. */
static void setup_vector_device(void)
{
    sig_sender_t s;
    uint8_t l;
    setup(0, 2000); /* max_body 0: SIG_CONFIG_MAX_BODY */
    CHECK(sig_device_add_sender(&dev, &SENSOR, &s) == SIG_OK && s == 0);
    CHECK(sig_device_listen(&dev, "timer", "tick", on_event, (void *)0, &l) == SIG_OK && l == 0);
    CHECK(sig_device_listen(&dev, NULL, "#alarm", on_event, (void *)1, &l) == SIG_OK && l == 1);
    CHECK(sig_device_listen(&dev, NULL, NULL, on_event, (void *)2, &l) == SIG_OK && l == 2);
    CHECK(sig_device_listen(&dev, NULL, "tick", on_event, (void *)3, &l) == SIG_OK && l == 3);
}

static sig_msg_t listen4(void)
{
    sig_msg_t m;
    memset(&m, 0, sizeof m); /* options 0 */
    m.type = SIG_MSG_LISTEN;
    m.u.listen.listener_id = 4;
    m.u.listen.sender = B(NULL);
    m.u.listen.event = B("tick");
    return m;
}

static void go_online(void)
{
    sig_msg_t l4 = listen4();
    CHECK(sig_device_start(&dev) == SIG_OK);
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    CHECK(!sig_device_online(&dev));
    CHECK(gw_send_vec("welcome") == SIG_OK);
    CHECK(sig_device_online(&dev));
    CHECK(expect_vec("register_sender") && expect_vec("listen_targeted") && expect_vec("listen_channel") &&
          expect_vec("listen_router_broadcast") && expect_msg(&l4) && expect_end());
}

TEST(session_hello_register_vectors)
{
    sig_event_ref_t temp, alarm;
    sig_msg_t m;
    setup_vector_device();
    CHECK(sig_device_event(&dev, 0, 0, &temp) == SIG_OK && temp == 1);
    CHECK(sig_device_event(&dev, 0, 1, &alarm) == SIG_OK && alarm == 2);
    CHECK(sig_device_event(&dev, 0, 2, &alarm) == SIG_ERR_NOT_FOUND);
    CHECK(sig_device_trigger(&dev, temp, TEMP, sizeof TEMP) == SIG_ERR_STATE); /* before WELCOME */
    CHECK(sig_device_event(&dev, 0, 1, &alarm) == SIG_OK);
    go_online();
    CHECK(sig_device_keepalive_ms(&dev) == 2000);
    CHECK(app.n_status == 2 && app.status[0] == SIG_STATUS_HELLO && app.status[1] == SIG_STATUS_WELCOME);
    CHECK(gw_send_vec("sender_registered") == SIG_OK);
    CHECK(gw_send_vec("listening") == SIG_OK);
    CHECK(app.n_status == 4 && app.status[2] == SIG_STATUS_REGISTERED && app.status_ref[2] == 0 &&
          app.status[3] == SIG_STATUS_LISTENING && app.status_ref[3] == 0);
    /* TRIGGER = type + event_ref + CBOR data: vectors trigger_float32, trigger_no_data */
    CHECK(sig_device_trigger(&dev, temp, TEMP, sizeof TEMP) == SIG_OK);
    CHECK(sig_device_trigger(&dev, alarm, NULL, 0) == SIG_OK);
    CHECK(expect_vec("trigger_float32") && expect_vec("trigger_no_data") && expect_end());
    CHECK(sig_device_trigger(&dev, 99, NULL, 0) == SIG_ERR_NOT_FOUND);
    /* PING -> PONG with the same token (vectors ping, pong) */
    CHECK(gw_send_vec("ping") == SIG_OK);
    CHECK(expect_vec("pong") && expect_end());
    /* ERROR(DUPLICATE_SENDER) reaches the error callback with its message */
    CHECK(gw_send_vec("error") == SIG_OK);
    CHECK(app.n_errors == 1 && app.err_code == V("error")->msg.u.error.code &&
          app.err_ref == V("error")->msg.u.error.ref && app.err_about == SIG_MSG_REGISTER_SENDER &&
          sig_bytes_eq(V("error")->msg.u.error.message, app.err_msg));
    CHECK(expect_end()); /* an ERROR is never answered */
    /* a sender added while online is registered at once */
    {
        static const sig_sender_desc_t T = {"t", NULL, 0, NULL, 0, NULL, NULL, NULL, 0, 0};
        sig_sender_t s;
        sig_msg_t want = V("register_sender_minimal")->msg;
        want.u.register_sender.sender_ref = 2; /* second sender of this device */
        CHECK(sig_device_add_sender(&dev, &T, &s) == SIG_OK && s == 1);
        CHECK(expect_msg(&want) && expect_end());
    }
    (void)m;
}

TEST(session_dispatch_and_requests)
{
    uint32_t rid;
    sig_msg_t m;
    setup_vector_device();
    go_online();
    /* EVENT timer/tick: listeners (timer, tick) and (none, none); not (none, tick) */
    CHECK(gw_send_vec("event") == SIG_OK);
    CHECK(app.events[0] == 1 && app.events[1] == 0 && app.events[2] == 1 && app.events[3] == 0);
    CHECK(slice_eq((sig_bytes_t){app.last_data, app.last_data_n}, V("event")->msg.u.event.data));
    /* EVENT s/#connect: only the router broadcast listener */
    CHECK(gw_send_vec("event_connect") == SIG_OK);
    CHECK(app.events[0] == 1 && app.events[1] == 0 && app.events[2] == 2 && app.events[3] == 0);
    /* a channel event: (none, "#alarm") matches it from any sender */
    m.type = SIG_MSG_EVENT;
    m.u.event.sender = B("other");
    m.u.event.event = B("#alarm");
    m.u.event.data = B(NULL);
    CHECK(gw_send(&m) == SIG_OK);
    CHECK(app.events[1] == 1 && app.events[2] == 3 && app.events[0] == 1 && app.events[3] == 0);
    /* data that is not one CBOR item: dropped and counted */
    m.u.event.data.ptr = (const uint8_t *)"\x18";
    m.u.event.data.len = 1;
    CHECK(gw_send(&m) == SIG_OK);
#if SIG_CONFIG_CHECK_DATA
    CHECK(app.events[1] == 1 && app.events[2] == 3 && dev.data_dropped == 1);
#else
    /* no data check (lean profile): the listeners get the data as it is */
    CHECK(app.events[1] == 2 && app.events[2] == 4 && dev.data_dropped == 0 && app.last_data_n == 1);
#endif
    CHECK(expect_end());
    /* REQUEST get_temp -> handler -> RESPONSE (vectors request, response_ok) */
    CHECK(gw_send_vec("request") == SIG_OK);
    CHECK(app.requests == 1 && app.respond_err == SIG_OK && expect_vec("response_ok") && expect_end());
    /* REQUEST set: no handler, the default handler answers */
    CHECK(gw_send_vec("request_params") == SIG_OK);
    CHECK(app.default_requests == 1 && app.respond_err == SIG_OK && strcmp(app.last_method, "set") == 0);
    m.type = SIG_MSG_RESPONSE;
    m.u.response.request_id = V("request_params")->msg.u.request.request_id;
    m.u.response.status = SIG_CODE_HANDLER_ERROR;
    m.u.response.message = B("nope");
    m.u.response.data = B(NULL);
    CHECK(expect_msg(&m) && expect_end());
    /* REQUEST for a sender this device does not have: NO_SUCH_SENDER */
    m.type = SIG_MSG_REQUEST;
    m.u.request.request_id = 77;
    m.u.request.sender = B("nobody");
    m.u.request.method = B("x");
    m.u.request.data = B(NULL);
    CHECK(gw_send(&m) == SIG_OK);
    m.type = SIG_MSG_RESPONSE;
    m.u.response.request_id = 77;
    m.u.response.status = SIG_CODE_NO_SUCH_SENDER;
    m.u.response.message = B(NULL);
    m.u.response.data = B(NULL);
    CHECK(expect_msg(&m) && expect_end());
    /* the device's own REQUEST, answered */
    CHECK(sig_device_request(&dev, "sensor1", "get_temp", NULL, 0, 500, on_response, NULL, &rid) == SIG_OK);
    m.type = SIG_MSG_REQUEST;
    m.u.request.request_id = rid;
    m.u.request.sender = B("sensor1");
    m.u.request.method = B("get_temp");
    m.u.request.data = B(NULL);
    CHECK(expect_msg(&m) && expect_end());
    m = V("response_ok")->msg;
    m.u.response.request_id = rid;
    CHECK(gw_send(&m) == SIG_OK);
    CHECK(app.responses == 1 && app.last_resp.status == 0 && app.last_resp.request_id == rid &&
          memcmp(app.resp_data, TEMP, sizeof TEMP) == 0);
    CHECK(gw_send(&m) == SIG_OK && app.responses == 1); /* a second RESPONSE is ignored */
    /* PROTOCOL.md section 2: a RESPONSE whose data is not one CBOR item reaches
     * the requester as MALFORMED, without data; a REQUEST whose params are not
     * is answered RESPONSE(MALFORMED) and its handler is not called */
    CHECK(sig_device_request(&dev, "sensor1", "get_temp", NULL, 0, 500, on_response, NULL, &rid) == SIG_OK);
    CHECK(expect_bytes(fake.out, fake.out_len) && expect_end());
    m.u.response.request_id = rid;
    m.u.response.data.ptr = (const uint8_t *)"\x82\x01";
    m.u.response.data.len = 2;
    CHECK(gw_send(&m) == SIG_OK);
#if SIG_CONFIG_CHECK_DATA
    CHECK(app.responses == 2 && app.last_resp.status == SIG_CODE_MALFORMED && app.last_resp.request_id == rid &&
          app.last_resp.data.len == 0 && dev.data_dropped == 2);
#else
    CHECK(app.responses == 2 && app.last_resp.status == SIG_CODE_OK && app.last_resp.request_id == rid &&
          app.last_resp.data.len == 2 && dev.data_dropped == 0);
#endif
    app.responses = 1;
    m.type = SIG_MSG_REQUEST;
    m.u.request.request_id = 78;
    m.u.request.sender = B("sensor1");
    m.u.request.method = B("get_temp");
    m.u.request.data.ptr = (const uint8_t *)"\x01\x02";
    m.u.request.data.len = 2;
#if SIG_CONFIG_CHECK_DATA
    CHECK(gw_send(&m) == SIG_OK && app.requests == 1 && dev.data_dropped == 3);
    m.type = SIG_MSG_RESPONSE;
    m.u.response.request_id = 78;
    m.u.response.status = SIG_CODE_MALFORMED;
    m.u.response.message = B(NULL);
    m.u.response.data = B(NULL);
#else
    CHECK(gw_send(&m) == SIG_OK && app.requests == 2 && dev.data_dropped == 0); /* the handler answers */
    m = V("response_ok")->msg;
    m.u.response.request_id = 78;
#endif
    CHECK(expect_msg(&m) && expect_end());
    /* a REQUEST not answered in time: local TIMEOUT */
    CHECK(sig_device_request(&dev, "timer", "get", NULL, 0, 500, on_response, NULL, &rid) == SIG_OK);
    {
        int k; /* the other slots (SIG_CONFIG_MAX_PENDING) with a later deadline, then full */
        for (k = 1; k < SIG_CONFIG_MAX_PENDING; k++) {
            CHECK(sig_device_request(&dev, "timer", "get", NULL, 0, 900, on_response, NULL, NULL) == SIG_OK);
        }
    }
    CHECK(sig_device_request(&dev, "timer", "get", NULL, 0, 500, on_response, NULL, NULL) == SIG_ERR_FULL);
    fake.now += 499;
    CHECK(sig_device_poll(&dev) == SIG_OK && app.responses == 1);
    fake.now += 1;
    CHECK(sig_device_poll(&dev) == SIG_OK && app.responses == 2 &&
          app.last_resp.status == SIG_CODE_TIMEOUT && app.last_resp.request_id == rid);
    fake.now += 400;
    CHECK(sig_device_poll(&dev) == SIG_OK && app.responses == 1 + SIG_CONFIG_MAX_PENDING);
}

TEST(session_keepalive_and_timeout)
{
    sig_msg_t ping, l4 = listen4();
    setup_vector_device();
    go_online();
    /* nothing sent for keepalive_ms -> PING; nothing received for 3 x -> HELLO */
    fake.now += 1999;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_end());
    fake.now += 1;
    CHECK(sig_device_poll(&dev) == SIG_OK);
    ping.type = SIG_MSG_PING;
    ping.u.ping.token = 1;
    CHECK(expect_msg(&ping) && expect_end());
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_end()); /* not again at once */
    /* any valid frame resets the link timer */
    fake.now += 1500;
    CHECK(gw_send_vec("pong") == SIG_OK);
    fake.now += 5999 - 500;
    CHECK(sig_device_poll(&dev) == SIG_OK); /* pings meanwhile */
    fake.out_len = 0;
    out_pos = 0;
    CHECK(sig_device_online(&dev));
    fake.now += 501;
    app.n_status = 0;
    CHECK(sig_device_poll(&dev) == SIG_OK);
    CHECK(!sig_device_online(&dev));
    CHECK(app.n_status == 2 && app.status[0] == SIG_STATUS_LINK_TIMEOUT && app.status[1] == SIG_STATUS_HELLO);
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    /* no WELCOME: HELLO again after keepalive_ms (the HELLO retry period) */
    fake.now += 1999;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_end());
    fake.now += 1;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    /* the session comes back with every registration */
    CHECK(gw_send_vec("welcome") == SIG_OK);
    CHECK(expect_vec("register_sender") && expect_vec("listen_targeted") && expect_vec("listen_channel") &&
          expect_vec("listen_router_broadcast") && expect_msg(&l4) && expect_end());
    /* keepalive 0 in WELCOME: no PING, no link timeout (a new session: the
     * WELCOME of an open one is ignored) */
    {
        sig_msg_t w = V("welcome")->msg;
        w.u.welcome.keepalive_ms = 0;
        CHECK(gw_send_vec("invite") == SIG_OK && expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
        CHECK(gw_send(&w) == SIG_OK);
        fake.out_len = 0;
        out_pos = 0;
        fake.now += 100000;
        CHECK(sig_device_poll(&dev) == SIG_OK && expect_end() && sig_device_online(&dev));
    }
}

TEST(session_invite_and_no_session)
{
    sig_msg_t m, l4 = listen4();
    setup_vector_device();
    go_online();
    app.n_status = 0;
    CHECK(gw_send_vec("invite") == SIG_OK);
    CHECK(app.status[0] == SIG_STATUS_INVITE && !sig_device_online(&dev));
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    CHECK(gw_send_vec("welcome") == SIG_OK);
    CHECK(expect_vec("register_sender") && expect_vec("listen_targeted") && expect_vec("listen_channel") &&
          expect_vec("listen_router_broadcast") && expect_msg(&l4) && expect_end());
    /* ERROR(NO_SESSION): the error callback, then HELLO again */
    m.type = SIG_MSG_ERROR;
    m.u.error.code = SIG_CODE_NO_SESSION;
    m.u.error.about = SIG_MSG_TRIGGER;
    m.u.error.ref = 0;
    m.u.error.message = B("no session");
    app.n_status = 0;
    CHECK(gw_send(&m) == SIG_OK);
    CHECK(app.n_errors == 1 && app.err_code == SIG_CODE_NO_SESSION && strcmp(app.err_msg, "no session") == 0);
    CHECK(app.status[0] == SIG_STATUS_NO_SESSION && !sig_device_online(&dev));
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    /* PONG to every PING, even without a session */
    CHECK(gw_send_vec("ping") == SIG_OK && expect_vec("pong") && expect_end());
}

TEST(session_handshake_idempotent)
{
    /* PROTOCOL.md section 3: a cold start gives a stale INVITE beside the
     * device's HELLO. The INVITE (or ERROR(NO_SESSION)) while waiting for
     * WELCOME makes no second HELLO; a second WELCOME registers nothing twice. */
    sig_msg_t m, l4 = listen4();
    setup_vector_device();
    CHECK(sig_device_start(&dev) == SIG_OK);
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    CHECK(gw_send_vec("invite") == SIG_OK && expect_end() && !sig_device_online(&dev));
    m.type = SIG_MSG_ERROR;
    m.u.error.code = SIG_CODE_NO_SESSION;
    m.u.error.about = SIG_MSG_TRIGGER;
    m.u.error.ref = 0;
    m.u.error.message = B(NULL);
    CHECK(gw_send(&m) == SIG_OK && expect_end() && !sig_device_online(&dev));
    CHECK(gw_send_vec("welcome") == SIG_OK && sig_device_online(&dev));
    CHECK(expect_vec("register_sender") && expect_vec("listen_targeted") && expect_vec("listen_channel") &&
          expect_vec("listen_router_broadcast") && expect_msg(&l4) && expect_end());
    CHECK(gw_send_vec("welcome") == SIG_OK && expect_end() && sig_device_online(&dev));
    /* the HELLO retry still covers a HELLO that was lost: INVITE, then no WELCOME */
    CHECK(gw_send_vec("invite") == SIG_OK && expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    fake.now += 2000;
    CHECK(sig_device_poll(&dev) == SIG_OK && expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
}

TEST(session_errors_answered)
{
    /* PROTOCOL.md section 2: unknown type -> ERROR(UNKNOWN_TYPE, ref=type);
     * flags -> UNSUPPORTED_FEATURE; malformed -> MALFORMED; bad bodies of the
     * vectors get the code of the vectors. An ERROR is never answered. */
    size_t i;
    setup_vector_device();
    go_online();
    for (i = 0; i < VEC_N(VEC_BAD); i++) {
        uint8_t frame[320];
        size_t fn;
        sig_msg_t want;
        if (VEC_BAD[i].n == 0 || VEC_BAD[i].n > SIG_CONFIG_MAX_BODY) {
            continue; /* an empty body cannot be framed; a longer one is dropped as oversize */
        }
        CHECK(sig_frame_encode(frame, sizeof frame, VEC_BAD[i].body, VEC_BAD[i].n, &fn) == SIG_OK);
        CHECK(sig_device_feed(&dev, frame, fn) == SIG_OK);
        if (!lib_decodes(VEC_BAD[i].body[0]) && (VEC_BAD[i].body[0] & (SIG_HEADER_FLAG_AUTH | SIG_HEADER_FLAG_SEQ)) == 0) {
            CHECKN(expect_end(), VEC_BAD[i].name); /* a device build ignores gateway-only types unread */
            continue;
        }
        if (!SIG_CONFIG_CHECK_UTF8 && strstr(VEC_BAD[i].name, "utf8") != NULL) {
            continue; /* the lean profile does not check UTF-8: a valid EVENT to it */
        }
        if (VEC_BAD[i].answer == 'N') {
            CHECKN(expect_end(), VEC_BAD[i].name); /* an ERROR is never answered */
            continue;
        }
        if (VEC_BAD[i].answer == 'R') { /* a REQUEST whose request_id parses */
            want.type = SIG_MSG_RESPONSE;
            want.u.response.request_id = VEC_BAD[i].ref;
            want.u.response.status = VEC_BAD[i].code;
            want.u.response.message = B(NULL);
            want.u.response.data = B(NULL);
        } else {
            want.type = SIG_MSG_ERROR;
            want.u.error.code = VEC_BAD[i].code;
            want.u.error.about = VEC_BAD[i].about;
            want.u.error.ref = VEC_BAD[i].ref;
            want.u.error.message = B(NULL);
        }
        CHECKN(expect_msg(&want) && expect_end(), VEC_BAD[i].name);
    }
    {
        const uint8_t bad_error[] = {0x06, 0x01}; /* truncated ERROR: not answered */
        uint8_t frame[16];
        size_t fn;
        CHECK(sig_frame_encode(frame, sizeof frame, bad_error, sizeof bad_error, &fn) == SIG_OK);
        CHECK(sig_device_feed(&dev, frame, fn) == SIG_OK && expect_end());
    }
    CHECK(sig_device_online(&dev));
}

/* With random WELCOMEs (tiny max_body) an answer may not fit: TOO_LARGE is
 * then reported, as it should; nothing else may fail (writes never do here). */
static int random_ok(sig_err_t e)
{
    return e == SIG_OK || e == SIG_ERR_TOO_LARGE;
}

TEST(session_random_input)
{
    /* Random frames (valid framing, random bodies) and raw noise into a live
     * session: no crash, no out-of-bounds (ASan/UBSan), output stays framed. */
    uint32_t i;
    sig_rx_t rx;
    static uint8_t rxbuf[SIG_CONFIG_TX_MAX_BODY + 2];
    uint32_t frames_out = 0;
    setup_vector_device();
    go_online();
    rnd_seed(2024);
    CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, SIG_CONFIG_TX_MAX_BODY) == SIG_OK);
    for (i = 0; i < UT_N(60000u); i++) {
        uint8_t body[64], frame[80];
        size_t n = rnd() % 40 + 1, k, fn;
        static const uint8_t types[] = {0x02, 0x03, 0x05, 0x06, 0x11, 0x14, 0x21, 0x22, 0x23, 0x24, 0x3f};
        body[0] = types[rnd() % sizeof types];
        for (k = 1; k < n; k++) {
            uint32_t r = rnd();
            body[k] = (uint8_t)(r % 3 == 0 ? r % 8 : (r % 3 == 1 ? (uint32_t)(uint8_t)"sensor1timertick#alarmget_temp"[(r >> 8) % 29] : r >> 16));
        }
        if (rnd() % 8 == 0) {
            for (k = 0; k < n; k++) {
                CHECK(random_ok(sig_device_feed_byte(&dev, body[k])));
            }
        } else if (sig_frame_encode(frame, sizeof frame, body, n, &fn) == SIG_OK) {
            CHECK(random_ok(sig_device_feed(&dev, frame, fn)));
        }
        fake.now += rnd() % 50;
        CHECK(random_ok(sig_device_poll(&dev)));
        if (fake.out_len > 4096) {
            for (k = 0; k < fake.out_len; k++) {
                if (sig_rx_feed(&rx, fake.out[k])) {
                    sig_msg_t m;
                    sig_bytes_t b = sig_rx_body(&rx);
                    frames_out++;
                    CHECK(gw_msg_decode(b.ptr, b.len, &m) == SIG_OK);
                }
            }
            fake.out_len = 0;
        }
    }
    CHECK(frames_out > UT_N(100u));
    CHECK(rx.stats.crc_errors == 0 && rx.stats.framing_errors == 0 && rx.stats.oversize == 0);
}

/* Run the scripted session with write() failing after `budget` bytes; return
 * the number of calls that reported SIG_ERR_IO. */
static int faulty_script(size_t budget)
{
    int io_errors = 0;
    sig_err_t e;
    sig_event_ref_t temp;
    setup_vector_device();
    fake.budget = budget;
    if (sig_device_start(&dev) == SIG_ERR_IO) {
        io_errors++;
    }
    e = gw_send_vec("welcome");
    io_errors += e == SIG_ERR_IO;
    CHECK(e == SIG_OK || e == SIG_ERR_IO);
    CHECK(sig_device_event(&dev, 0, 0, &temp) == SIG_OK);
    e = sig_device_trigger(&dev, temp, TEMP, sizeof TEMP);
    io_errors += e == SIG_ERR_IO;
    e = gw_send_vec("request");
    io_errors += e == SIG_ERR_IO;
    /* the RESPONSE is sent by the handler: it gets the error */
    io_errors += app.respond_err == SIG_ERR_IO;
    return io_errors;
}

TEST(session_write_faults)
{
    /* nanopb tests/io_errors style: write fails after every byte count. The
     * failing call reports SIG_ERR_IO; afterwards the device still works and
     * the gateway's decoder sees only whole messages the device meant to send
     * (the torn frame is cut by a lone 0x00 and counted as a frame error). */
    size_t total, budget;
    CHECK(faulty_script((size_t)-1) == 0);
    total = fake.out_len;
    CHECK(total > 100);
    for (budget = 0; budget < total; budget++) {
        int io = faulty_script(budget);
        sig_rx_t rx;
        static uint8_t rxbuf[SIG_CONFIG_TX_MAX_BODY + 2];
        size_t k;
        uint32_t good = 0, triggers = 0;
        CHECK(io >= 1 && fake.writes_failed >= 1);
        /* the link works again: the next trigger arrives intact */
        fake.budget = (size_t)-1;
        if (!sig_device_online(&dev)) {
            CHECK(gw_send_vec("welcome") == SIG_OK);
        }
        {
            sig_event_ref_t temp;
            CHECK(sig_device_event(&dev, 0, 0, &temp) == SIG_OK);
            CHECK(sig_device_trigger(&dev, temp, TEMP, sizeof TEMP) == SIG_OK);
        }
        CHECK(sig_rx_init(&rx, rxbuf, sizeof rxbuf, SIG_CONFIG_TX_MAX_BODY) == SIG_OK);
        for (k = 0; k < fake.out_len; k++) {
            if (sig_rx_feed(&rx, fake.out[k])) {
                sig_msg_t m;
                sig_bytes_t b = sig_rx_body(&rx);
                good++;
                CHECK(gw_msg_decode(b.ptr, b.len, &m) == SIG_OK);
                triggers += m.type == SIG_MSG_TRIGGER;
            }
        }
        CHECK(triggers >= 1);
        CHECK(rx.stats.framing_errors + rx.stats.crc_errors + rx.stats.oversize <= 1);
        CHECK(good >= 1);
    }
}

/* Argument checks of the setup API, pinned before add_sender's name checks
 * moved into its dry-run encoding: same error for every bad description,
 * ARG before FULL before TOO_LARGE, and nothing registered on an error. */
#if SIG_CONFIG_TX_MAX_BODY < 32 || SIG_CONFIG_TX_MAX_BODY > 141 || SIG_CONFIG_MAX_SENDERS != 2
#error "session_api_argument_errors assumes a one-byte name length and 2 senders"
#endif
TEST(session_api_argument_errors)
{
    static char long_name[300];
    static const char *const EV_OK[] = {"a", "b"};
    static const char *const EV_EMPTY[] = {"a", ""};
    static const char *const EV_NULL[] = {"a", NULL};
    static const char *EV_LONG[] = {"a", long_name};
    static const sig_method_t M_OK[] = {{"m", on_get_temp}};
    static const sig_method_t M_EMPTY[] = {{"", on_get_temp}};
    static const sig_method_t M_NULLNAME[] = {{NULL, on_get_temp}};
    static const sig_method_t M_NOHANDLER[] = {{"m", NULL}};
    sig_sender_desc_t d = {"s", EV_OK, 2, M_OK, 1, NULL, NULL, NULL, 0, 0};
    sig_sender_desc_t bad;
    sig_sender_t s = 77;
    size_t n;
    /* a name of FIT bytes makes the registration of d exactly fill the transmit
     * buffer: type, ref, name (1 + FIT), flags, 2 events (3 each), 1 method (2) */
    const size_t FIT = SIG_CONFIG_TX_MAX_BODY - 14u;
    memset(long_name, 'x', sizeof long_name - 1u);
    setup(0, 2000);
    CHECK(sig_device_add_sender(NULL, &d, &s) == SIG_ERR_ARG);
    CHECK(sig_device_add_sender(&dev, NULL, &s) == SIG_ERR_ARG);
    for (n = 0; n < 12; n++) {
        bad = d;
        switch (n) {
        case 0: bad.name = NULL; break;
        case 1: bad.name = ""; break;
        case 2: bad.name = long_name; break;
        case 3: bad.events = EV_EMPTY; break;
        case 4: bad.events = EV_NULL; break;
        case 5: bad.events = (const char *const *)EV_LONG; break;
        case 6: bad.events = NULL; break;
        case 7: bad.n_events = SIG_CONFIG_MAX_EVENTS + 1u; break;
        case 8: bad.methods = M_EMPTY; break;
        case 9: bad.methods = M_NULLNAME; break;
        case 10: bad.methods = M_NOHANDLER; break;
        default: bad.methods = NULL; break;
        }
        CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_ARG && s == 77);
    }
    long_name[255] = '\0'; /* 255 bytes: a valid name, but too large for the tx buffer */
    bad = d;
    bad.name = long_name;
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_TOO_LARGE && s == 77);
    long_name[255] = 'x';
    long_name[FIT + 1u] = '\0'; /* one byte too many */
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_TOO_LARGE && s == 77);
    long_name[FIT + 1u] = 'x';
    long_name[FIT] = '\0'; /* fits exactly */
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_OK && s == 0);
    bad.events = (const char *const *)EV_LONG; /* 2 x FIT + more: does not fit */
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_TOO_LARGE && s == 0);
    long_name[FIT] = 'x';
    long_name[256] = '\0'; /* the event name is now too long, after the buffer is full */
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_ARG); /* ARG even when too large */
    bad.events = EV_OK;
    bad.methods = M_NOHANDLER;
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_ARG); /* ARG even when too large */
    bad = d;
    bad.n_events = 0;
    bad.events = NULL;
    bad.n_methods = 0;
    bad.methods = NULL;
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_OK && s == 1);
    CHECK(sig_device_add_sender(&dev, &d, &s) == SIG_ERR_FULL && s == 1);
    bad.name = "";
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_ARG); /* ARG before FULL */
    CHECK(sig_device_add_sender(&dev, &d, NULL) == SIG_ERR_FULL);
    /* listen: NULL means any, an empty or too long name is refused */
    CHECK(sig_device_listen(&dev, "", NULL, on_event, NULL, NULL) == SIG_ERR_ARG);
    CHECK(sig_device_listen(&dev, NULL, long_name, on_event, NULL, NULL) == SIG_ERR_ARG);
    CHECK(sig_device_listen(&dev, NULL, NULL, NULL, NULL, NULL) == SIG_ERR_ARG);
    CHECK(sig_device_listen(&dev, NULL, NULL, on_event, NULL, NULL) == SIG_OK);
    CHECK(fake.out_len == 0); /* offline: nothing sent */
}

/* Application files built with other sig_config.h settings than the library
 * (tests/config_mismatch.c, three builds): init refuses with SIG_ERR_CONFIG
 * and writes nothing; this file, built like the library, is accepted. */
int mismatch_size(size_t *app_size, uint32_t *app_fingerprint);
int mismatch_option(size_t *app_size, uint32_t *app_fingerprint);
int mismatch_header(size_t *app_size, uint32_t *app_fingerprint);

TEST(session_config_mismatch)
{
    size_t n = 0;
    uint32_t fp = 0;
    CHECK(mismatch_size(&n, &fp) == 1 && n < sizeof(sig_device_t) && fp != SIG_CONFIG_FINGERPRINT);
    CHECK(mismatch_option(&n, &fp) == 1 && n == sizeof(sig_device_t) && fp != SIG_CONFIG_FINGERPRINT);
    CHECK(mismatch_header(&n, &fp) == 1 && n != sizeof(sig_device_t) && fp != SIG_CONFIG_FINGERPRINT);
    CHECK(sig_device_init_checked(&dev, NULL, SIG_CONFIG_FINGERPRINT + 1u) == SIG_ERR_CONFIG);
    setup(0, 0); /* same settings: accepted */
    CHECK(sig_device_init_checked(NULL, NULL, SIG_CONFIG_FINGERPRINT) == SIG_ERR_ARG);
}

static sig_msg_t ref_msg(sig_msg_type_t t, uint32_t ref)
{
    sig_msg_t m;
    m.type = t;
    m.u.ref.ref = ref;
    return m;
}

/* remove_sender / unlisten: UNREGISTER_SENDER / UNLISTEN while online (the
 * vectors' bytes), the slot is dead at once (requests NO_SUCH_SENDER,
 * trigger NOT_FOUND, events not delivered), not registered again after
 * WELCOME, and reused with the same handle and refs by the next add. */
TEST(session_remove_and_unlisten)
{
    sig_event_ref_t temp;
    sig_sender_t s = 9;
    uint8_t l = 9;
    sig_msg_t m, l4 = listen4();
    setup_vector_device();
    go_online();
    CHECK(sig_device_event(&dev, 0, 0, &temp) == SIG_OK);
    CHECK(sig_device_remove_sender(&dev, 0) == SIG_OK);
    CHECK(expect_vec("unregister_sender") && expect_end());
    CHECK(sig_device_remove_sender(&dev, 0) == SIG_ERR_NOT_FOUND && sig_device_remove_sender(&dev, 1) == SIG_ERR_NOT_FOUND);
    CHECK(sig_device_remove_sender(&dev, SIG_CONFIG_MAX_SENDERS) == SIG_ERR_NOT_FOUND && expect_end());
    CHECK(sig_device_trigger(&dev, temp, TEMP, sizeof TEMP) == SIG_ERR_NOT_FOUND);
    CHECK(sig_device_event(&dev, 0, 0, &temp) == SIG_ERR_NOT_FOUND);
    CHECK(gw_send_vec("request") == SIG_OK && app.requests == 0);
    m.type = SIG_MSG_RESPONSE;
    m.u.response.request_id = V("request")->msg.u.request.request_id;
    m.u.response.status = SIG_CODE_NO_SUCH_SENDER;
    m.u.response.message = B(NULL);
    m.u.response.data = B(NULL);
    CHECK(expect_msg(&m) && expect_end());
    /* listener 0 (timer, tick) and 2 (none, none) go: EVENT timer/tick reaches nobody */
    CHECK(sig_device_unlisten(&dev, 0) == SIG_OK && expect_vec("unlisten") && expect_end());
    CHECK(sig_device_unlisten(&dev, 2) == SIG_OK);
    m = ref_msg(SIG_MSG_UNLISTEN, 3);
    CHECK(expect_msg(&m) && expect_end());
    CHECK(sig_device_unlisten(&dev, 2) == SIG_ERR_NOT_FOUND && sig_device_unlisten(&dev, SIG_CONFIG_MAX_LISTENERS) == SIG_ERR_NOT_FOUND);
    CHECK(gw_send_vec("event") == SIG_OK && app.events[0] == 0 && app.events[2] == 0);
    CHECK(gw_send_vec("event_connect") == SIG_OK && app.events[2] == 0 && expect_end());
    /* a new session registers only what is left: LISTEN 2 ("#alarm") and 4 */
    CHECK(gw_send_vec("invite") == SIG_OK && expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    CHECK(gw_send_vec("welcome") == SIG_OK);
    CHECK(expect_vec("listen_channel") && expect_msg(&l4) && expect_end());
    /* the slots are reused: same handle, same refs, the vectors' bytes */
    CHECK(sig_device_add_sender(&dev, &SENSOR, &s) == SIG_OK && s == 0);
    CHECK(expect_vec("register_sender") && expect_end());
    CHECK(sig_device_listen(&dev, "timer", "tick", on_event, (void *)0, &l) == SIG_OK && l == 0);
    CHECK(expect_vec("listen_targeted") && expect_end());
    CHECK(sig_device_listen(&dev, NULL, NULL, on_event, (void *)2, &l) == SIG_OK && l == 2);
    CHECK(expect_vec("listen_router_broadcast") && expect_end());
    CHECK(sig_device_listen(&dev, NULL, NULL, on_event, (void *)2, &l) == SIG_ERR_FULL);
    CHECK(gw_send_vec("event") == SIG_OK && app.events[0] == 1 && app.events[2] == 1);
    CHECK(gw_send_vec("request") == SIG_OK && app.requests == 1 && expect_vec("response_ok") && expect_end());
    /* offline: the slot is freed, nothing is sent */
    CHECK(gw_send_vec("invite") == SIG_OK);
    fake.out_len = 0;
    out_pos = 0;
    CHECK(sig_device_remove_sender(&dev, 0) == SIG_OK && sig_device_unlisten(&dev, 1) == SIG_OK && expect_end());
    CHECK(gw_send_vec("welcome") == SIG_OK);
    CHECK(expect_vec("listen_targeted") && expect_vec("listen_router_broadcast") && expect_msg(&l4) && expect_end());
    CHECK(sig_device_remove_sender(NULL, 0) == SIG_ERR_NOT_FOUND && sig_device_unlisten(NULL, 0) == SIG_ERR_NOT_FOUND);
}

/* deinit: UNLISTEN for every listener, then UNREGISTER_SENDER for every
 * sender (the UART way to end a session); no callback afterwards, no timer. */
TEST(session_deinit)
{
    uint32_t i;
    sig_msg_t m;
    setup_vector_device();
    go_online();
    CHECK(sig_device_request(&dev, "timer", "get", NULL, 0, 500, on_response, NULL, NULL) == SIG_OK);
    fake.out_len = 0;
    CHECK(sig_device_deinit(&dev) == SIG_OK);
    for (i = 1; i <= 4; i++) {
        m = ref_msg(SIG_MSG_UNLISTEN, i);
        CHECK(expect_msg(&m));
    }
    CHECK(expect_vec("unregister_sender") && expect_end());
    CHECK(!sig_device_online(&dev) && sig_device_next_deadline(&dev) == SIG_NO_DEADLINE);
    fake.now += 100000;
    CHECK(sig_device_poll(&dev) == SIG_OK && app.responses == 0 && expect_end());
    CHECK(sig_device_deinit(&dev) == SIG_OK && expect_end()); /* idle: nothing to say */
    CHECK(sig_device_deinit(NULL) == SIG_ERR_ARG);
    setup_vector_device(); /* init again: a working device */
    go_online();
    /* a failing write: deinit still empties every table and reports it */
    fake.budget = 0;
    CHECK(sig_device_deinit(&dev) == SIG_ERR_IO);
    fake.budget = (size_t)-1;
    CHECK(sig_device_remove_sender(&dev, 0) == SIG_ERR_NOT_FOUND && sig_device_unlisten(&dev, 3) == SIG_ERR_NOT_FOUND);
}

/* next_deadline: poll has nothing to do one millisecond before it, and
 * something (a frame out, or a TIMEOUT callback) at it. */
TEST(session_next_deadline)
{
    int round;
    setup_vector_device();
    CHECK(sig_device_next_deadline(&dev) == SIG_NO_DEADLINE); /* not started */
    CHECK(sig_device_start(&dev) == SIG_OK);
    CHECK(sig_device_next_deadline(&dev) == 2000); /* HELLO again after keepalive_ms */
    fake.now += 1500;
    CHECK(sig_device_next_deadline(&dev) == 500);
    fake.now += 600;
    CHECK(sig_device_next_deadline(&dev) == 0);
    CHECK(gw_send_vec("welcome") == SIG_OK);
    CHECK(sig_device_next_deadline(&dev) == 2000); /* PING after 2000 without sending */
    CHECK(sig_device_request(&dev, "timer", "get", NULL, 0, 300, on_response, NULL, NULL) == SIG_OK);
    CHECK(sig_device_next_deadline(&dev) == 300);
    rnd_seed(31);
    for (round = 0; round < 200; round++) {
        uint32_t d = sig_device_next_deadline(&dev);
        int before;
        CHECK(d != SIG_NO_DEADLINE && d <= 6000);
        if (rnd() % 3 == 0) {
            sig_err_t e = sig_device_request(&dev, "timer", "get", NULL, 0, rnd() % 3000, on_response, NULL, NULL);
            CHECK(e == SIG_OK || e == SIG_ERR_FULL);
            continue;
        }
        if (rnd() % 4 == 0) {
            CHECK(gw_send_vec("pong") == SIG_OK); /* resets the link timer */
            continue;
        }
        if (d > 0) {
            fake.now += d - 1;
            fake.out_len = 0;
            before = app.responses;
            CHECK(sig_device_poll(&dev) == SIG_OK && fake.out_len == 0 && app.responses == before);
            fake.now += 1;
        }
        fake.out_len = 0;
        before = app.responses;
        CHECK(sig_device_poll(&dev) == SIG_OK && (fake.out_len > 0 || app.responses > before));
        if (!sig_device_online(&dev)) {
            CHECK(gw_send_vec("welcome") == SIG_OK); /* after a link timeout */
        }
    }
    CHECK(sig_device_next_deadline(NULL) == SIG_NO_DEADLINE);
}

/* SIG_CONFIG_TX_IN_PLACE: one write() per frame (the lone 0x00 after a
 * reset is part of the HELLO's); otherwise block by block. */
TEST(session_one_write_per_frame)
{
    setup_vector_device();
    fake.writes = 0;
    CHECK(sig_device_start(&dev) == SIG_OK);
#if SIG__TX_IN_PLACE
    CHECK(fake.writes == 1);
#else
    CHECK(fake.writes > 2);
#endif
    fake.writes = 0;
    CHECK(gw_send_vec("welcome") == SIG_OK); /* 5 frames: REGISTER_SENDER, 4 LISTENs */
#if SIG__TX_IN_PLACE
    CHECK(fake.writes == 5);
#else
    CHECK(fake.writes > 10);
#endif
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_vec("register_sender") && expect_vec("listen_targeted"));
}

/* What main added to the wire (vectors register_sender_meta, listen_options_*,
 * retained, retained_stale): a sender's meta and a listener's options go out
 * as given, a RETAINED reaches the matching listeners like an EVENT, marked
 * retained (and stale). */
TEST(session_meta_listen_options_retained)
{
    static const uint8_t META[] = {0xa1, 0x68, 'r', 'e', 't', 'a', 'i', 'n', 'e', 'd', 0x81, 0x65, 'p', 'o', 'w', 'e', 'r'};
    static const char *const EV[] = {"power"};
    const sig_sender_desc_t d = {"meter", EV, 1, NULL, 0, NULL, NULL, META, sizeof META, 0};
    sig_sender_desc_t bad = d;
    sig_event_decl_t decl;
    sig_msg_t want, l1, l2, m;
    sig_sender_t s;
    uint8_t l;
    setup(0, 2000);
    CHECK(slice_eq((sig_bytes_t){META, sizeof META}, V("register_sender_meta")->msg.u.register_sender.meta));
    bad.meta = NULL; /* a length without bytes */
    CHECK(sig_device_add_sender(&dev, &bad, &s) == SIG_ERR_ARG);
    CHECK(sig_device_add_sender(&dev, &d, &s) == SIG_OK && s == 0);
    CHECK(sig_device_listen_opts(&dev, NULL, NULL, SIG_LISTEN_POLICY_MASK, on_event, NULL, &l) == SIG_ERR_ARG);
    CHECK(sig_device_listen_opts(&dev, NULL, NULL, 0x08u, on_event, NULL, &l) == SIG_ERR_ARG);
    CHECK(sig_device_listen_opts(&dev, "meter", NULL, SIG_LISTEN_POLICY_LATEST, on_event, (void *)0, &l) == SIG_OK &&
          l == 0);
    CHECK(sig_device_listen_opts(&dev, NULL, "#cmd", SIG_LISTEN_POLICY_BLOCK | SIG_LISTEN_NO_LOCAL, on_event,
                                 (void *)1, &l) == SIG_OK && l == 1);
    CHECK(sig_device_start(&dev) == SIG_OK);
    CHECK(expect_bytes(&ZERO, 1) && expect_hello() && expect_end());
    CHECK(gw_send_vec("welcome") == SIG_OK);
    /* the vectors with this device's refs (sender handle 0, listeners 0 and 1) */
    want = V("register_sender_meta")->msg;
    decl.ref = 1;
    decl.name = B("power");
    want.u.register_sender.sender_ref = 1;
    want.u.register_sender.events = &decl;
    l1 = V("listen_options_latest")->msg;
    l1.u.listen.listener_id = 1;
    l2 = V("listen_options_block_no_local")->msg;
    l2.u.listen.listener_id = 2;
    CHECK(expect_msg(&want) && expect_msg(&l1) && expect_msg(&l2) && expect_end());
    /* RETAINED meter/power: listener (meter, any), marked retained; (none, #cmd) does not match */
    CHECK(gw_send_vec("retained") == SIG_OK);
    CHECK(app.events[0] == 1 && app.events[1] == 0 && app.last_flags == SIG_EVENT_RETAINED);
    CHECK(slice_eq((sig_bytes_t){app.last_data, app.last_data_n}, V("retained")->msg.u.retained.data));
    CHECK(gw_send_vec("retained_stale") == SIG_OK);
    CHECK(app.events[0] == 2 && app.last_flags == (SIG_EVENT_RETAINED | SIG_EVENT_STALE));
    /* an EVENT of the same sender is not marked */
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_EVENT;
    m.u.event.sender = B("meter");
    m.u.event.event = B("power");
    CHECK(gw_send(&m) == SIG_OK && app.events[0] == 3 && app.last_flags == 0u);
    /* a retained channel value reaches the channel listener */
    memset(&m, 0, sizeof m);
    m.type = SIG_MSG_RETAINED;
    m.u.retained.sender = B("panel");
    m.u.retained.event = B("#cmd");
    m.u.retained.flags = SIG_RETAINED_FLAG_STALE;
    CHECK(gw_send(&m) == SIG_OK && app.events[1] == 1 && app.last_flags == (SIG_EVENT_RETAINED | SIG_EVENT_STALE));
    /* RETAINED data that is not one CBOR item: dropped and counted, as for an EVENT */
    m.u.retained.data.ptr = (const uint8_t *)"\x18";
    m.u.retained.data.len = 1;
    CHECK(gw_send(&m) == SIG_OK);
#if SIG_CONFIG_CHECK_DATA
    CHECK(app.events[1] == 1 && dev.data_dropped == 1);
#else
    CHECK(app.events[1] == 2 && dev.data_dropped == 0);
#endif
    CHECK(expect_end()); /* nothing is answered */
}
