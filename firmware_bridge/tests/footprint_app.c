/* Footprint probe for `make footprint`: a sensor device using the session API
 * (as examples/sig_sensor does) linked with --gc-sections, and the same program
 * without sig (-DFOOTPRINT_BASELINE). The difference is what sig costs. */
#include "sig_device.h"

/* sizeof(sig_device_t), read back with nm -S; never linked (gc'd). */
char sig_device_size_probe[sizeof(sig_device_t)];

volatile uint32_t fp_ticks;
volatile uint8_t fp_uart;

static bool fp_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    while (len--) {
        fp_uart = *buf++;
    }
    return true;
}

static uint32_t fp_millis(void *ctx)
{
    (void)ctx;
    return fp_ticks;
}

#ifndef FOOTPRINT_BASELINE
static sig_device_t dev;
static float last_temp;

static void on_get_temp(sig_device_t *d, void *user, const sig_request_t *req)
{
    uint8_t out[8];
    size_t n = 0;
    sig_cbor_writer_t w;
    (void)user;
    sig_cbor_writer_init(&w, out, sizeof out);
    sig_cbor_put_float32(&w, last_temp);
    if (sig_cbor_finish(&w, &n) == SIG_OK) {
        (void)!sig_device_respond(d, req->request_id, SIG_CODE_OK, NULL, out, n);
    }
}

static void on_tick(sig_device_t *d, void *user, const sig_event_t *ev)
{
    (void)user;
    (void)sig_device_trigger(d, 3, ev->data.ptr, ev->data.len);
}

static const char *const events[] = {"temperature", "#alarm", "echo"};
static const sig_method_t methods[] = {{"get_temp", on_get_temp}};
static const sig_sender_desc_t sensor = {"sensor1", events, 3, methods, 1, NULL, NULL, NULL, 0, 0};

#if SIG_CONFIG_AUTH
/* A signing device (PROTOCOL.md section 5): its key, and a nonce per HELLO
 * (here the tick count; a real device takes its RNG or a boot counter). */
static const uint8_t key[SIG_AUTH_KEY_LEN] = {1, 2, 3};
static void fp_nonce(void *user, uint8_t *nonce)
{
    unsigned i;
    (void)user;
    for (i = 0; i < SIG_AUTH_NONCE_LEN; i++) {
        nonce[i] = (uint8_t)(fp_ticks >> i);
    }
}
#endif
#endif

int main(void)
{
#ifndef FOOTPRINT_BASELINE
    sig_device_config_t cfg = {.name = "sensor1", .keepalive_ms = 2000,
                               .platform = {NULL, fp_write, fp_millis}};
    sig_sender_t s;
    sig_event_ref_t temp;
#if SIG_CONFIG_AUTH
    cfg.auth_key = key;
    cfg.auth_nonce = fp_nonce;
#endif
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_add_sender(&dev, &sensor, &s) != SIG_OK ||
        sig_device_event(&dev, s, 0, &temp) != SIG_OK ||
        sig_device_listen(&dev, "timer", "tick", on_tick, NULL, NULL) != SIG_OK ||
        sig_device_start(&dev) != SIG_OK) {
        return 1;
    }
    for (;;) {
        uint8_t b = fp_uart;
        (void)sig_device_feed_byte(&dev, b);
        (void)sig_device_poll(&dev);
        if ((fp_ticks & 1023u) == 0u) {
            uint8_t out[8];
            size_t n = 0;
            sig_cbor_writer_t w;
            last_temp = (fp_ticks & 2048u) ? 21.5f : 23.1f;
            sig_cbor_writer_init(&w, out, sizeof out);
            sig_cbor_put_float32(&w, last_temp);
            if (sig_cbor_finish(&w, &n) == SIG_OK) {
                (void)sig_device_trigger(&dev, temp, out, n);
            }
        }
    }
#else
    uint8_t b = 0;
    for (;;) {
        (void)fp_write(NULL, &b, 1);
        b = (uint8_t)fp_millis(NULL);
    }
#endif
}
