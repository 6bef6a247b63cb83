/* libFuzzer: a live device session fed arbitrary bytes; some bytes also act:
 * 0x5A advances the clock to the next timer (at most 700 ms) and polls, 0x5F
 * sends a REQUEST, 0x5E makes write() fail or work again, 0x5B removes or
 * re-adds the sender, 0x5C the listener; 0x5D as the last byte deinits. `make fuzz` (clang), seeded by tests/fuzz_seeds.py. */
#include <stdlib.h>
#include <string.h>

#include "sig_device.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t clock_ms;
static bool write_fails;

static bool fz_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    return !write_fails && len % 97u != 13u; /* fails while 0x5E says so, and sometimes */
}

static void fz_status(sig_device_t *d, void *u, sig_status_t st, uint32_t ref)
{
    (void)u;
    if (st == SIG_STATUS_WELCOME && ref == 0u) {
        (void)sig_device_trigger(d, 2, NULL, 0); /* a callback may send */
    }
}

static void fz_error(sig_device_t *d, void *u, uint32_t code, uint32_t ref, sig_bytes_t msg)
{
    (void)d;
    (void)u;
    if (msg.len > 0u && (msg.ptr[0] == 0u || code + ref == 0u)) {
        write_fails = false; /* touch the message: it must be readable */
    }
}

static uint32_t fz_millis(void *ctx)
{
    (void)ctx;
    return clock_ms;
}

static void fz_event(sig_device_t *d, void *u, const sig_event_t *ev)
{
    (void)u;
    (void)sig_device_trigger(d, 1, ev->data.ptr, ev->data.len);
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
    static const sig_sender_desc_t desc = {"sensor1", events, 2, methods, 1, fz_req, NULL, NULL, 0, 0x01u}; /* event 0 reliable */
    static sig_device_t dev;
    sig_device_config_t cfg = {"dev", 0, 500, {NULL, fz_write, fz_millis}, fz_status, fz_error, NULL};
    size_t i;
    clock_ms = 0;
    write_fails = false;
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_add_sender(&dev, &desc, NULL) != SIG_OK ||
        sig_device_listen(&dev, NULL, NULL, fz_event, NULL, NULL) != SIG_OK) {
        abort();
    }
    (void)!sig_device_start(&dev);
    {
        /* a WELCOME first so most input reaches the online session */
        static const uint8_t welcome[] = {0x10, 0x02, 0x01, 0x07, 0x67, 0x61, 0x74, 0x65, 0x77, 0x61,
                                          0x79, 0xff, 0xff, 0x03, 0xd0, 0x0f, 0x03, 0xfa, 0x21, 0x00};
        (void)sig_device_feed(&dev, welcome, sizeof welcome);
    }
    for (i = 0; i < size; i++) {
        (void)sig_device_feed_byte(&dev, data[i]);
        if (data[i] == 0x5A) {
            uint32_t d = sig_device_next_deadline(&dev);
            clock_ms += d != SIG_NO_DEADLINE && d < 700u ? d : 700u; /* to the next timer, at most 700 ms */
            (void)sig_device_poll(&dev);
        } else if (data[i] == 0x5F) {
            (void)!sig_device_request(&dev, "timer", "get", NULL, 0, 1000, fz_resp, NULL, NULL);
        } else if (data[i] == 0x5E) {
            write_fails = !write_fails;
        } else if (data[i] == 0x5B) { /* the sender goes and comes back */
            if (sig_device_remove_sender(&dev, 0) == SIG_ERR_NOT_FOUND) {
                (void)!sig_device_add_sender(&dev, &desc, NULL);
            }
        } else if (data[i] == 0x5C) { /* the listener too */
            if (sig_device_unlisten(&dev, 0) == SIG_ERR_NOT_FOUND) {
                (void)!sig_device_listen(&dev, NULL, NULL, fz_event, NULL, NULL);
            }
        } else if (data[i] == 0x5D && i + 1u == size) {
            (void)!sig_device_deinit(&dev);
        }
    }
    return 0;
}
