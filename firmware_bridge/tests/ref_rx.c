/* The previous streaming frame decoder (sig_rx_init / sig_rx_feed before the
 * smaller one), kept as an oracle: tests/test_codec.c feeds both the same
 * random and mutated streams and compares every return, body and counter. */
#include "ref_rx.h"

#define RX_ZERO_PENDING 0x01u /* the block before ended in a zero */
#define RX_SKIPPING 0x02u     /* oversize: drop bytes up to the next 0x00 */
#define RX_TOO_LONG 0x04u     /* decoded more than max_body + 2 */
#define RX_READY 0x08u        /* buf holds a frame returned by the last feed */

sig_err_t ref_rx_init(sig_rx_t *rx, uint8_t *buf, size_t buf_len, uint16_t max_body)
{
    if (rx == NULL || buf == NULL || max_body == 0u || max_body > SIG_MAX_BODY_LIMIT - 2u ||
        buf_len < (size_t)max_body + 2u) {
        return SIG_ERR_ARG;
    }
    rx->buf = buf;
    rx->cap = (uint16_t)(max_body + 2u);
    {
        /* SIG_RX_ENCODED_LIMIT without a division (no __udivsi3 on a Cortex-M0) */
        uint32_t n = (uint32_t)max_body + 2u, q = 0, r = n;
        while (r >= 254u) {
            r -= 254u;
            q++;
        }
        rx->limit = n + q + 1u;
    }
    rx->enc = 0;
    rx->len = 0;
    rx->remaining = 0;
    rx->flags = 0;
    rx->stats.frames = 0;
    rx->stats.empty = 0;
    rx->stats.crc_errors = 0;
    rx->stats.framing_errors = 0;
    rx->stats.oversize = 0;
    return SIG_OK;
}

static void ref_store(sig_rx_t *rx, uint8_t b)
{
    if (rx->len < rx->cap) {
        rx->buf[rx->len++] = b;
    } else {
        rx->flags |= RX_TOO_LONG;
    }
}

static bool ref_end(sig_rx_t *rx)
{
    uint8_t flags = rx->flags;
    uint32_t enc = rx->enc;
    uint8_t remaining = rx->remaining;
    uint16_t len = rx->len;
    rx->enc = 0;
    rx->remaining = 0;
    rx->flags = 0;
    if (flags & RX_SKIPPING) {
        rx->len = 0;
        return false;
    }
    if (enc == 0u) {
        rx->stats.empty++;
        return false;
    }
    if (remaining != 0u || len <= SIG_CRC_SIZE) {
        rx->stats.framing_errors++; /* truncated COBS block, or too short */
        rx->len = 0;
        return false;
    }
    if (flags & RX_TOO_LONG) {
        rx->stats.oversize++;
        rx->len = 0;
        return false;
    }
    len = (uint16_t)(len - SIG_CRC_SIZE);
    if (sig_crc16(rx->buf, len) !=
        (uint16_t)(((uint16_t)rx->buf[len] << 8) | rx->buf[len + 1u])) {
        rx->stats.crc_errors++;
        rx->len = 0;
        return false;
    }
    rx->len = len;
    rx->flags = RX_READY;
    rx->stats.frames++;
    return true;
}

bool ref_rx_feed(sig_rx_t *rx, uint8_t byte)
{
    if (rx->flags & RX_READY) {
        rx->flags = 0; /* the previous body is given up */
        rx->len = 0;
    }
    if (byte == 0u) {
        return ref_end(rx);
    }
    if (rx->flags & RX_SKIPPING) {
        return false;
    }
    if (++rx->enc > rx->limit) {
        rx->stats.oversize++;
        rx->flags = RX_SKIPPING;
        rx->len = 0;
        rx->remaining = 0;
        return false;
    }
    if (rx->remaining == 0u) { /* a code byte */
        if (rx->flags & RX_ZERO_PENDING) {
            ref_store(rx, 0u);
        }
        rx->remaining = (uint8_t)(byte - 1u);
        if (byte == 0xFFu) {
            rx->flags &= (uint8_t)~RX_ZERO_PENDING;
        } else {
            rx->flags |= RX_ZERO_PENDING;
        }
    } else {
        rx->remaining--;
        ref_store(rx, byte);
    }
    return false;
}

