/* libFuzzer: a live device session fed arbitrary bytes, with the clock
 * advanced by some of them. `make fuzz` (clang). */
#include <stdlib.h>
#include <string.h>

#include "sig_device.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t clock_ms;

static bool fz_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    return len % 97u != 13u; /* sometimes fail */
}

static uint32_t fz_millis(void *ctx)
{
    (void)ctx;
    return clock_ms;
}

static void fz_event(sig_device_t *d, void *u, const sig_event_t *ev)
{
    (void)u;
    (void)!sig_device_trigger(d, 1, ev->data.ptr, ev->data.len);
}

static void fz_req(sig_device_t *d, void *u, const sig_request_t *req)
{
    (void)u;
    (void)!sig_device_respond(d, req->request_id, 0, NULL, req->data.ptr, req->data.len);
}

static void fz_resp(sig_device_t *d, void *u, const sig_response_t *r)
{
    (void)d;
    (void)u;
    (void)r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const events[] = {"temperature", "#alarm"};
    static const sig_method_t methods[] = {{"get_temp", fz_req}};
    static const sig_sender_desc_t desc = {"sensor1", events, 2, methods, 1, fz_req, NULL};
    static sig_device_t dev;
    sig_device_config_t cfg = {"dev", 0, 500, {NULL, fz_write, fz_millis}, NULL, NULL, NULL};
    size_t i;
    clock_ms = 0;
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_add_sender(&dev, &desc, NULL) != SIG_OK ||
        sig_device_listen(&dev, NULL, NULL, fz_event, NULL, NULL) != SIG_OK) {
        abort();
    }
    (void)!sig_device_start(&dev);
    {
        /* a WELCOME first so most input reaches the online session */
        static const uint8_t welcome[] = {0x10, 0x02, 0x01, 0x07, 0x67, 0x61, 0x74, 0x65, 0x77, 0x61,
                                          0x79, 0xff, 0xff, 0x03, 0xd0, 0x0f, 0x03, 0x05, 0xde, 0x00};
        (void)!sig_device_feed(&dev, welcome, sizeof welcome);
    }
    for (i = 0; i < size; i++) {
        (void)!sig_device_feed_byte(&dev, data[i]);
        if (data[i] == 0x5A) {
            clock_ms += 700;
            (void)!sig_device_poll(&dev);
            (void)!sig_device_request(&dev, "timer", "get", NULL, 0, 1000, fz_resp, NULL, NULL);
        }
    }
    return 0;
}
