/* libFuzzer: the frame decoder, the message decoder (and re-encoder), the
 * device's receive path (same verdict as the message decoder) and the CBOR
 * walker (same verdict as the previous one, tests/ref_cbor.c) on arbitrary
 * bytes. `make fuzz` (clang), seeded from the vectors (tests/fuzz_seeds.py). */
#include <stdlib.h>
#include <string.h>

#include "gw_codec.h"
#include "ref_cbor.h"
#include "sig_device.h"
#include "sig_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t rxbuf[66];
    sig_rx_t rx;
    sig_msg_t m;
    size_t i;
    if (sig_rx_init(&rx, rxbuf, sizeof rxbuf, 64) != SIG_OK) {
        abort();
    }
    for (i = 0; i < size; i++) {
        if (sig_rx_feed(&rx, data[i])) {
            sig_bytes_t b = sig_rx_body(&rx);
            if (b.len < 1 || b.len > 64) {
                abort();
            }
        }
    }
    {
        sig__rx_msg_t d;
        uint8_t code = sig__rx_parse(data, size, &d);
        if (code != SIG__RX_IGNORE && code != sig_err_wire_code(sig_msg_decode(data, size, &m))) {
            abort();
        }
    }
    {
        sig_cbor_reader_t a, b;
        sig_cbor_reader_init(&a, data, size);
        sig_cbor_reader_init(&b, data, size);
        if (sig_cbor_skip(&a) != ref_cbor_skip(&b) || a.pos != b.pos) {
            abort();
        }
    }
    if (sig_msg_decode(data, size, &m) == SIG_OK && m.type != SIG_MSG_REGISTER_SENDER) {
        static uint8_t out[SIG_MAX_BODY_LIMIT]; /* the re-encoding is never longer than the input */
        size_t n;
        sig_msg_t m2;
        /* re-encoded by the full codec: a device profile encodes only what a device sends */
        if (gw_msg_encode(&m, out, sizeof out, &n) != SIG_OK || sig_msg_decode(out, n, &m2) != SIG_OK ||
            m2.type != m.type) {
            abort();
        }
    }
    (void)!sig_cbor_check_data(data, size);
    return 0;
}
