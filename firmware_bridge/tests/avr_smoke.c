/* AVR (ATmega328P, 16-bit int and size_t, 32-bit double) regression test of
 * the library's width-dependent paths, run in simavr by `make test`
 * (target avr-smoke). Each line goes out on UART0, which simavr prints; the
 * Makefile wants "avr-smoke: all ok" and no FAIL. Before the fix, all four
 * checks failed on this target: the indefinite-length marker was cut to 16
 * bits in sig_cbor_skip, and the double API copied 8 bytes to and from a
 * 4-byte double. */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

#include "sig_device.h"
#include "sig_internal.h"

static uint8_t failed;

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
    check(!failed, failed ? "avr-smoke: FAILED" : "avr-smoke: all ok");
    cli();
    sleep_mode(); /* simavr ends the run here */
    return 0;
}
