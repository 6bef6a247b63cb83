/* Signed frames (PROTOCOL.md section 5): BLAKE2s and the tags against
 * tests/vectors.json, and a keyed device session that sends the vectors'
 * frames byte for byte and drops what it must. Built with SIG_CONFIG_AUTH = 1
 * (the "auth" profile); without it each test checks that nothing is signed. */
#include <stdlib.h>
#include <string.h>

#include "sig_device.h"
#include "unittest.h"
#include "vectors.h"

#if SIG_CONFIG_AUTH

static const struct vec_sign *S(const char *name)
{
    size_t i;
    for (i = 0; i < VEC_N(VEC_SIGN); i++) {
        if (strcmp(VEC_SIGN[i].name, name) == 0) {
            return &VEC_SIGN[i];
        }
    }
    printf("no signing vector %s\n", name);
    abort();
}

TEST(auth_blake2s_vectors)
{
    size_t i, cut;
    for (i = 0; i < VEC_N(VEC_BLAKE2S); i++) {
        const struct vec_blake2s *v = &VEC_BLAKE2S[i];
        uint8_t out[32];
        sig_blake2s_t s;
        for (cut = 0; cut <= v->n; cut += v->n / 3u + 1u) { /* any split of the input */
            sig_blake2s_init(&s, v->outlen, v->key, (uint8_t)v->key_n);
            sig_blake2s_update(&s, v->in, cut);
            sig_blake2s_update(&s, v->n > 0u ? v->in + cut : v->in, v->n - cut);
            sig_blake2s_final(&s, out);
            CHECK(bytes_equal(out, v->outlen, v->digest, v->digest_n));
        }
    }
}

TEST(auth_tag_vectors)
{
    size_t i;
    static const uint8_t zero[SIG_AUTH_NONCE_LEN] = {0};
    for (i = 0; i < VEC_N(VEC_SIGN); i++) {
        const struct vec_sign *v = &VEC_SIGN[i];
        uint8_t tag[SIG_AUTH_TAG_LEN];
        const uint8_t *ng = strcmp(v->name, "hello") == 0 ? zero : VEC_SIGN_GATEWAY_NONCE;
        sig_auth_tag(VEC_SIGN_KEY, v->direction, VEC_SIGN_DEVICE_NONCE, ng, v->body,
                     v->body_n - SIG_AUTH_TAG_LEN, tag);
        CHECKN(memcmp(tag, v->body + v->body_n - SIG_AUTH_TAG_LEN, SIG_AUTH_TAG_LEN) == 0, v->name);
    }
}

/* ---- a keyed device against a scripted gateway ---- */

static struct {
    uint8_t out[2048];
    size_t len;
    uint32_t now;
    int events;
    int nonces;
} k;
static sig_device_t kdev;

static bool k_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    if (len > sizeof k.out - k.len) {
        return false;
    }
    memcpy(k.out + k.len, buf, len);
    k.len += len;
    return true;
}

static uint32_t k_millis(void *ctx)
{
    (void)ctx;
    return k.now;
}

/* The vectors' device nonce first, then others (a device reset, a new HELLO). */
static void k_nonce(void *user, uint8_t *nonce)
{
    (void)user;
    memcpy(nonce, VEC_SIGN_DEVICE_NONCE, SIG_AUTH_NONCE_LEN);
    nonce[0] = (uint8_t)(nonce[0] + k.nonces++);
}

static void k_event(sig_device_t *d, void *user, const sig_event_t *ev)
{
    (void)d;
    (void)user;
    (void)ev;
    k.events++;
}

static int k_expect(const uint8_t *p, size_t n)
{
    int ok = k.len == n && memcmp(k.out, p, n) == 0;
    k.len = 0;
    return ok;
}

static sig_err_t k_feed_body(const uint8_t *body, size_t n)
{
    uint8_t frame[300];
    size_t fn;
    CHECK(sig_frame_encode(frame, sizeof frame, body, n, &fn) == SIG_OK);
    return sig_device_feed(&kdev, frame, fn);
}

static const char *const TEMP_EVENTS[] = {"temp"};
static const sig_sender_desc_t TEMP_SENSOR = {"sensor1", TEMP_EVENTS, 1, NULL, 0, NULL, NULL, NULL, 0, 0};
static const uint8_t F23_1[] = {0xfa, 0x41, 0xb8, 0xcc, 0xcd};

static void k_setup(const uint8_t *key)
{
    sig_device_config_t cfg;
    sig_sender_t s;
    memset(&k, 0, sizeof k);
    k.now = 1000;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "sensor1";
    cfg.max_body = 128;
    cfg.keepalive_ms = 2000;
    cfg.platform.write = k_write;
    cfg.platform.millis = k_millis;
    cfg.auth_key = key;
    cfg.auth_nonce = k_nonce;
    CHECK(sig_device_init(&kdev, &cfg) == SIG_OK);
    CHECK(sig_device_add_sender(&kdev, &TEMP_SENSOR, &s) == SIG_OK && s == 0);
}

TEST(auth_session_vectors)
{
    sig_event_ref_t temp;
    uint8_t l, frame[64];
    const struct vec_sign *ev = S("event");
    const sig_auth_stats_t *st;
    size_t i;
    k_setup(VEC_SIGN_KEY);
    CHECK(sig_device_start(&kdev) == SIG_OK);
    CHECK(k.len == S("hello")->frame_n + 1u && k.out[0] == 0u); /* a lone 0x00, then HELLO */
#if SIG_CONFIG_RELIABLE
    /* features 0x03 (the vector asks for AUTH alone): the same frame but the features and tag */
    CHECK(k.out[2] == (SIG_MSG_HELLO | SIG_HEADER_FLAG_AUTH) && memcmp(k.out + 1, S("hello")->frame, 24) == 0);
#else
    CHECK(memcmp(k.out + 1, S("hello")->frame, S("hello")->frame_n) == 0);
#endif
    k.len = 0;
    CHECK(sig_device_feed(&kdev, S("welcome")->frame, S("welcome")->frame_n) == SIG_OK);
    CHECK(sig_device_online(&kdev));
    CHECK(k_expect(S("register_sender")->frame, S("register_sender")->frame_n));
    CHECK(sig_device_event(&kdev, 0, 0, &temp) == SIG_OK);
    CHECK(sig_device_trigger(&kdev, temp, F23_1, sizeof F23_1) == SIG_OK);
    CHECK(k_expect(S("trigger_float32")->frame, S("trigger_float32")->frame_n));
    CHECK(sig_device_listen(&kdev, "timer", "tick", k_event, NULL, &l) == SIG_OK);
    CHECK(k.len > 0u && k.out[1] == (SIG_MSG_LISTEN | SIG_HEADER_FLAG_AUTH)); /* signed, counter 3 */
    k.len = 0;
    CHECK(sig_device_feed(&kdev, ev->frame, ev->frame_n) == SIG_OK);
    CHECK(k.events == 1);
    st = sig_device_auth_stats(&kdev);
    CHECK(st->auth_failed == 0u && st->replayed == 0u && st->unsigned_frames == 0u);

    /* the same EVENT again: a replay, dropped and counted */
    CHECK(sig_device_feed(&kdev, ev->frame, ev->frame_n) == SIG_OK);
    CHECK(k.events == 1 && st->replayed == 1u);
    /* its tag flipped (the CRC made right again): auth_failed */
    memcpy(frame, ev->body, ev->body_n);
    frame[ev->body_n - 1u] ^= 0x80u;
    CHECK(k_feed_body(frame, ev->body_n) == SIG_OK);
    CHECK(k.events == 1 && st->auth_failed == 1u);
    /* the bad bodies the vectors send to a device */
    for (i = 0; i < VEC_N(VEC_SIGN_BAD); i++) {
        if (VEC_SIGN_BAD[i].direction == SIG_AUTH_TO_DEVICE) {
            CHECK(k_feed_body(VEC_SIGN_BAD[i].body, VEC_SIGN_BAD[i].n) == SIG_OK);
        }
    }
    CHECK(st->auth_failed == 2u);
    /* a frame the device itself sent, reflected back to it */
    CHECK(k_feed_body(S("trigger_float32")->body, S("trigger_float32")->body_n) == SIG_OK);
    CHECK(st->auth_failed == 3u);
    /* an unsigned PING: dropped, no PONG */
    {
        static const uint8_t ping[] = {0x03, 0x09};
        CHECK(k_feed_body(ping, sizeof ping) == SIG_OK);
        CHECK(st->unsigned_frames == 1u && k.len == 0u);
    }
    /* an unsigned INVITE is obeyed: a new HELLO with a new nonce */
    {
        static const uint8_t invite[] = {0x05};
        CHECK(k_feed_body(invite, sizeof invite) == SIG_OK);
        CHECK(!sig_device_online(&kdev) && k.len > 2u && k.out[2] == (SIG_MSG_HELLO | SIG_HEADER_FLAG_AUTH));
        CHECK(k.nonces == 2);
        k.len = 0;
    }
    /* the old session's WELCOME does not verify for the new HELLO */
    CHECK(sig_device_feed(&kdev, S("welcome")->frame, S("welcome")->frame_n) == SIG_OK);
    CHECK(!sig_device_online(&kdev) && st->auth_failed == 4u);
}

TEST(auth_wrong_key_and_unkeyed)
{
    static const uint8_t other[SIG_AUTH_KEY_LEN] = {1};
    sig_device_config_t cfg;
    k_setup(other);
    CHECK(sig_device_start(&kdev) == SIG_OK);
    k.len = 0;
    CHECK(sig_device_feed(&kdev, S("welcome")->frame, S("welcome")->frame_n) == SIG_OK);
    CHECK(!sig_device_online(&kdev) && sig_device_auth_stats(&kdev)->auth_failed == 1u);
    CHECK(k.len == 0u);
    /* a key needs a nonce source */
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "x";
    cfg.platform.write = k_write;
    cfg.platform.millis = k_millis;
    cfg.auth_key = other;
    CHECK(sig_device_init(&kdev, &cfg) == SIG_ERR_ARG);
    /* no key: plain frames, as without SIG_CONFIG_AUTH */
    k_setup(NULL);
    CHECK(sig_device_start(&kdev) == SIG_OK);
    CHECK(k.len > 2u && k.out[2] == SIG_MSG_HELLO && k.nonces == 0);
}

#else /* SIG_CONFIG_AUTH == 0 */

TEST(auth_blake2s_vectors)
{
    CHECK(SIG__AUTH_ROOM == 0u); /* nothing of signing is compiled in */
}
TEST(auth_tag_vectors)
{
    CHECK(sizeof(sig_auth_stats_t) == 3u * sizeof(uint32_t));
}
TEST(auth_session_vectors)
{
    sig_device_t d;
    memset(&d, 0, sizeof d);
    CHECK(sig_device_auth_stats(&d)->auth_failed == 0u);
}
TEST(auth_wrong_key_and_unkeyed)
{
    CHECK(VEC_N(VEC_SIGN) >= 4u);
}

#endif
