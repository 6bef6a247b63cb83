/* What signing costs on the Cortex-M0 (tools/auth_cycles.py runs it in QEMU
 * and counts the instructions between the calls of bench_mark): a keyed
 * device of tests/vectors.json, online, sends a float32 TRIGGER and receives
 * an EVENT, and the same device without a key sends the same TRIGGER. */
#include <stdio.h>
#include <string.h>

#include "sig_device.h"
#include "target.h"
#include "vectors.h"

/* Each call ends one measured stretch and starts the next; never inlined. */
__attribute__((noinline)) void bench_mark(int n)
{
    __asm__ volatile("" : : "r"(n) : "memory");
}

static bool discard(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    (void)len;
    return true;
}

static uint32_t millis(void *ctx)
{
    (void)ctx;
    return target_millis();
}

static void nonce(void *user, uint8_t *out)
{
    (void)user;
    memcpy(out, VEC_SIGN_DEVICE_NONCE, SIG_AUTH_NONCE_LEN);
}

static int events;
static void on_event(sig_device_t *d, void *user, const sig_event_t *ev)
{
    (void)d;
    (void)user;
    (void)ev;
    events++;
}

static const char *const EVENTS[] = {"temp"};
static const sig_sender_desc_t SENSOR = {"sensor1", EVENTS, 1, NULL, 0, NULL, NULL, NULL, 0, 0};
static const uint8_t F23_1[] = {0xfa, 0x41, 0xb8, 0xcc, 0xcd};
static sig_device_t dev;

static int online(const uint8_t *key)
{
    sig_device_config_t cfg;
    sig_sender_t s;
    uint8_t l;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "sensor1";
    cfg.max_body = 128;
    cfg.keepalive_ms = 2000;
    cfg.platform.write = discard;
    cfg.platform.millis = millis;
    cfg.auth_key = key;
    cfg.auth_nonce = nonce;
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_add_sender(&dev, &SENSOR, &s) != SIG_OK ||
        sig_device_start(&dev) != SIG_OK) {
        return 0;
    }
    /* the vectors' WELCOME (signed), or a plain one */
    (void)sig_device_feed(&dev, key ? VEC_SIGN[1].frame : VEC_MSG[2].frame,
                          key ? VEC_SIGN[1].frame_n : VEC_MSG[2].frame_n);
    return sig_device_online(&dev) && sig_device_listen(&dev, "timer", "tick", on_event, NULL, &l) == SIG_OK;
}

int main(void)
{
    uint8_t tag[SIG_AUTH_TAG_LEN];
    const struct vec_sign *trig = &VEC_SIGN[3], *ev = &VEC_SIGN[4];
    int ok;
    target_init();
    ok = online(VEC_SIGN_KEY);
    bench_mark(0);
    (void)sig_device_trigger(&dev, 1, F23_1, sizeof F23_1); /* 1: signed TRIGGER, whole */
    bench_mark(1);
    sig_auth_tag(VEC_SIGN_KEY, 0, VEC_SIGN_DEVICE_NONCE, VEC_SIGN_GATEWAY_NONCE, trig->body,
                 trig->body_n - SIG_AUTH_TAG_LEN, tag);     /* 2: its tag alone */
    bench_mark(2);
    (void)sig_device_feed(&dev, ev->frame, ev->frame_n);   /* 3: a signed EVENT received */
    bench_mark(3);
    ok = ok && events == 1 && memcmp(tag, trig->body + trig->body_n - SIG_AUTH_TAG_LEN, 8) == 0;
    ok = ok && online(NULL);
    bench_mark(4);
    (void)sig_device_trigger(&dev, 1, F23_1, sizeof F23_1); /* 5: the TRIGGER unsigned */
    bench_mark(5);
    printf("auth bench: %s\n", ok ? "ok" : "FAILED");
    target_exit(ok ? 0 : 1);
}
