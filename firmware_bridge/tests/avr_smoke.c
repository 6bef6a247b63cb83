/* AVR (ATmega328P, 16-bit int and size_t, 32-bit double) regression test of
 * the library's width-dependent paths, run in simavr by `make test`
 * (target avr-smoke). Each line goes out on UART0, which simavr prints; the
 * Makefile wants "avr-smoke: all ok" and no FAIL. Before the fix, all four
 * checks failed on this target: the indefinite-length marker was cut to 16
 * bits in sig_cbor_skip, and the double API copied 8 bytes to and from a
 * 4-byte double. Built twice: with SIG_CONFIG_NAMES_IN_FLASH=1 the session's
 * strings are PROGMEM. */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

#include "sig_device.h"
#include "sig_internal.h"

static uint8_t failed;
static void check(bool ok, const char *what);

/* The session's strings: in flash with SIG_CONFIG_NAMES_IN_FLASH (the
 * Makefile runs this file both ways), in RAM otherwise. */
#if SIG_CONFIG_NAMES_IN_FLASH
#define STR(name, lit) static const char name[] PROGMEM = lit
#else
#define STR(name, lit) static const char name[] = lit
#endif
STR(S_SENSOR, "sensor1");
STR(S_TEMP, "temperature");
STR(S_ALARM, "#alarm");
STR(S_GET_TEMP, "get_temp");
STR(S_TIMER, "timer");
STR(S_TICK, "tick");

static uint8_t out_buf[160];
static size_t out_len;
static uint8_t requests, events;

static bool smoke_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    while (len-- > 0u && out_len < sizeof out_buf) {
        out_buf[out_len++] = *buf++;
    }
    return true;
}

static uint32_t smoke_millis(void *ctx)
{
    (void)ctx;
    return 1000;
}

static void on_get_temp(sig_device_t *d, void *user, const sig_request_t *req)
{
    static const uint8_t temp[] = {0xfa, 0x41, 0xb8, 0xcc, 0xcd};
    (void)user;
    requests++;
    if (sig_device_respond(d, req->request_id, SIG_CODE_OK, NULL, temp, sizeof temp) != SIG_OK) {
        requests = 100;
    }
}

static void on_tick(sig_device_t *d, void *user, const sig_event_t *ev)
{
    (void)d;
    (void)user;
    if (ev->data.len == 2u) {
        events++;
    }
}

static bool same(const uint8_t *a, const uint8_t *b, size_t n)
{
    while (n-- > 0u) {
        if (*a++ != *b++) {
            return false;
        }
    }
    return true;
}

/* A session with the vectors' frames: REGISTER_SENDER and LISTEN come out
 * byte for byte as tests/vectors.json, a REQUEST finds its method, an EVENT
 * its listener (names compared where they live). */
static void session(void)
{
    static const uint8_t welcome[] = {0x10, 0x02, 0x01, 0x07, 0x67, 0x61, 0x74, 0x65, 0x77, 0x61,
                                      0x79, 0xff, 0xff, 0x03, 0xd0, 0x0f, 0x03, 0xfa, 0x21, 0x00};
    static const uint8_t reg_listen[] = {
        0x2e, 0x10, 0x01, 0x07, 0x73, 0x65, 0x6e, 0x73, 0x6f, 0x72, 0x31, 0x01, 0x02, 0x01, 0x0b, 0x74,
        0x65, 0x6d, 0x70, 0x65, 0x72, 0x61, 0x74, 0x75, 0x72, 0x65, 0x02, 0x06, 0x23, 0x61, 0x6c, 0x61,
        0x72, 0x6d, 0x01, 0x08, 0x67, 0x65, 0x74, 0x5f, 0x74, 0x65, 0x6d, 0x70, 0x87, 0xfb, 0x00, /* register_sender */
        0x10, 0x13, 0x01, 0x05, 0x74, 0x69, 0x6d, 0x65, 0x72, 0x04, 0x74, 0x69, 0x63, 0x6b, 0x94, 0xa5, 0x00}; /* listen_targeted */
    static const uint8_t request[] = {0x16, 0x22, 0x09, 0x07, 0x73, 0x65, 0x6e, 0x73, 0x6f, 0x72, 0x31, 0x08,
                                      0x67, 0x65, 0x74, 0x5f, 0x74, 0x65, 0x6d, 0x70, 0x90, 0x20, 0x00};
    static const uint8_t event[] = {0x11, 0x21, 0x05, 0x74, 0x69, 0x6d, 0x65, 0x72, 0x04,
                                    0x74, 0x69, 0x63, 0x6b, 0x18, 0x2a, 0x0b, 0xab, 0x00};
    static const char *const ev_names[] = {S_TEMP, S_ALARM};
    static const sig_method_t methods[] = {{S_GET_TEMP, on_get_temp}};
    static const sig_sender_desc_t desc = {S_SENSOR, ev_names, 2, methods, 1, on_get_temp, NULL, NULL, 0, 0};
    static sig_device_t dev;
    sig_device_config_t cfg = {S_SENSOR, 0, 2000, {NULL, smoke_write, smoke_millis}, NULL, NULL, NULL};
    check(sig_device_init(&dev, &cfg) == SIG_OK && sig_device_add_sender(&dev, &desc, NULL) == SIG_OK &&
              sig_device_listen(&dev, S_TIMER, S_TICK, on_tick, NULL, NULL) == SIG_OK &&
              sig_device_start(&dev) == SIG_OK && out_len > 12u && same(out_buf + 5, (const uint8_t *)"sensor1", 7), /* 00, code, type, version, length */
          "session: HELLO");
    out_len = 0;
    (void)sig_device_feed(&dev, welcome, sizeof welcome);
    check(out_len == sizeof reg_listen && same(out_buf, reg_listen, sizeof reg_listen), "session: REGISTER_SENDER, LISTEN");
    out_len = 0;
    (void)sig_device_feed(&dev, request, sizeof request);
    check(requests == 1 && out_len > 5u, "session: REQUEST get_temp");
    (void)sig_device_feed(&dev, event, sizeof event);
    check(events == 1, "session: EVENT timer/tick");
}

static void put(char c)
{
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void check(bool ok, const char *what)
{
    const char *s = ok ? "ok   " : "FAIL ";
    while (*s) {
        put(*s++);
    }
    while (*what) {
        put(*what++);
    }
    put('\n');
    if (!ok) {
        failed = 1;
    }
}

int main(void)
{
    /* RFC 8949 Appendix A: [_ 1, [2, 3], [_ 4, 5]] and {_ "a": 1} */
    static const uint8_t indef[] = {0x9f, 0x01, 0x82, 0x02, 0x03, 0x9f, 0x04, 0x05, 0xff, 0xff};
    static const uint8_t imap[] = {0xbf, 0x61, 0x61, 0x01, 0xff};
    static const uint8_t dbl[] = {0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a}; /* 1.1 */
    uint8_t buf[9];
    sig_cbor_writer_t w;
    sig_cbor_reader_t r;
    size_t n = 0;
    double d = 0;
    float f = 0;
    UCSR0B = (uint8_t)(1 << TXEN0);
    check(sig_cbor_check_data(indef, sizeof indef) == SIG_OK, "indefinite array");
    check(sig_cbor_check_data(imap, sizeof imap) == SIG_OK, "indefinite map");
    sig_cbor_writer_init(&w, buf, sizeof buf);
    sig_cbor_put_float64(&w, 21.5);
    check(sig_cbor_finish(&w, &n) == SIG_OK && n == 3 && buf[0] == 0xf9 && buf[1] == 0x4d && buf[2] == 0x60,
          "put_float64(21.5) = f9 4d 60");
    sig_cbor_reader_init(&r, dbl, sizeof dbl);
    check(sig_cbor_get_double(&r, &d) == SIG_OK && d == 1.1 && r.pos == sizeof dbl, "get_double(fb 1.1)");
    sig_cbor_reader_init(&r, dbl, sizeof dbl);
    check(sig_cbor_get_float(&r, &f) == SIG_OK && f == 1.1f, "get_float(fb 1.1)");
    {
        /* EVENT timer/tick 42 (vector "event"): framed, decoded, parsed */
        static const uint8_t body[] = {0x21, 0x05, 't', 'i', 'm', 'e', 'r', 0x04, 't', 'i', 'c', 'k', 0x18, 0x2a};
        uint8_t frame[SIG_FRAME_ENCODED_MAX(sizeof body)], rxbuf[34];
        sig_rx_t rx;
        sig_msg_t m;
        size_t k, got = 0;
        check(sig_frame_encode(frame, sizeof frame, body, sizeof body, &n) == SIG_OK &&
                  sig_rx_init(&rx, rxbuf, sizeof rxbuf, 32) == SIG_OK, "frame encode");
        for (k = 0; k < n; k++) {
            got += sig_rx_feed(&rx, frame[k]);
        }
        check(got == 1 && sig_rx_body(&rx).len == sizeof body &&
                  sig_msg_decode(sig_rx_body(&rx).ptr, sizeof body, &m) == SIG_OK && m.type == SIG_MSG_EVENT &&
                  sig_bytes_eq(m.u.event.event, "tick") && sig_cbor_check_data(m.u.event.data.ptr, m.u.event.data.len) == SIG_OK,
              "frame decode + EVENT");
        {
            /* the device's receive path reads its field table from flash (PROGMEM) */
            sig__rx_msg_t pm;
            static const uint8_t bad[] = {0x21, 0x00}, unknown[] = {0x3f};
            check(sig__rx_parse(body, sizeof body, &pm) == 0 && pm.str[1].len == 4 && pm.str[2].len == 2 &&
                      sig__rx_parse(bad, sizeof bad, &pm) == SIG_CODE_INVALID_NAME &&
                      sig__rx_parse(unknown, sizeof unknown, &pm) == SIG_CODE_UNKNOWN_TYPE,
                  "receive path (table in flash)");
        }
    }
    session();
    check(!failed, failed ? "avr-smoke: FAILED" : "avr-smoke: all ok");
    cli();
    sleep_mode(); /* simavr ends the run here */
    return 0;
}
