/* Frame layer (PROTOCOL.md section 1): CRC-16/GENIBUS, COBS, frames and
 * the streaming decoder. */
#include "sig_internal.h"

uint32_t sig_err_wire_code(sig_err_t err)
{
    int e = (int)err;
    if (e <= SIG_ERR_WIRE_BASE - 1 && e >= SIG_ERR_WIRE_BASE - 18) {
        return (uint32_t)(SIG_ERR_WIRE_BASE - e);
    }
    return 0u;
}

bool sig_bytes_eq(sig_bytes_t b, const char *s)
{
    size_t i;
    if (s == NULL) {
        return false;
    }
    for (i = 0; i < b.len; i++) {
        if (s[i] == '\0' || (uint8_t)s[i] != b.ptr[i]) {
            return false;
        }
    }
    return s[b.len] == '\0';
}

/* The cap: SIG_MAX_BODY_LIMIT + 1, or SIG_MAX_BODY_LIMIT where size_t is
 * 16 bits (n <= 65535 would always hold there and n would wrap). */
#if SIZE_MAX > 0xFFFFu
#define STRLEN_CAP(n) ((n) <= SIG_MAX_BODY_LIMIT)
#else
#define STRLEN_CAP(n) ((n) < SIG_MAX_BODY_LIMIT)
#endif

size_t sig__strlen(const char *s)
{
    size_t n = 0;
    while (STRLEN_CAP(n) && SIG__NAME_BYTE(s, n) != '\0') { /* capped: not turned into strlen() */
        n++;
    }
    return n;
}

#if SIG__NAMES_IN_FLASH
bool sig__name_eq(sig_bytes_t b, const char *s)
{
    size_t i;
    if (s == NULL) {
        return false;
    }
    for (i = 0; i < b.len; i++) {
        char c = SIG__NAME_BYTE(s, i);
        if (c == '\0' || (uint8_t)c != b.ptr[i]) {
            return false;
        }
    }
    return SIG__NAME_BYTE(s, b.len) == '\0';
}
#endif

/* Bitwise, no table: 2 bytes of flash instead of 512. The register is the
 * CRC xor 0xFFFF: undoing the final xor on entry and applying it on return
 * keeps the function incremental over finished CRCs. */
uint16_t sig_crc16_update(uint16_t crc, const uint8_t *p, size_t n)
{
    size_t i;
    int bit;
    crc = (uint16_t)(crc ^ 0xFFFFu);
    for (i = 0; i < n; i++) {
        crc ^= (uint16_t)((uint16_t)p[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return (uint16_t)(crc ^ 0xFFFFu);
}

uint16_t sig_crc16(const uint8_t *p, size_t n)
{
    return sig_crc16_update(SIG_CRC16_INIT, p, n);
}

/* Length of the COBS block that starts at src[i]: the non-zero run, at most 254. */
static size_t cobs_run(const uint8_t *src, size_t i, size_t n)
{
    size_t run = 0;
    while (i + run < n && run < 254u && src[i + run] != 0u) {
        run++;
    }
    return run;
}

sig_err_t sig_cobs_encode(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t *out_len)
{
    size_t i = 0, used = 0;
    if (dst == NULL || out_len == NULL || (src == NULL && n > 0u)) {
        return SIG_ERR_ARG;
    }
    for (;;) {
        size_t run = cobs_run(src, i, n);
        if (run + 1u > cap - used) {
            return SIG_ERR_NO_SPACE;
        }
        dst[used] = (uint8_t)(run + 1u);
        for (size_t k = 0; k < run; k++) {
            dst[used + 1u + k] = src[i + k];
        }
        used += run + 1u;
        i += run;
        if (run == 254u) {
            if (i == n) {
                break; /* a full block that ends the input: no extra code byte */
            }
            continue;  /* no zero consumed */
        }
        if (i == n) {
            break;
        }
        i++; /* the zero this block stands for */
    }
    *out_len = used;
    return SIG_OK;
}

sig_err_t sig_cobs_decode(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t *out_len)
{
    size_t i = 0, used = 0;
    if (dst == NULL || out_len == NULL || (src == NULL && n > 0u)) {
        return SIG_ERR_ARG;
    }
    while (i < n) {
        uint8_t code = src[i++];
        size_t run;
        if (code == 0u) {
            return SIG_ERR_COBS;
        }
        run = (size_t)code - 1u;
        if (run > n - i) {
            return SIG_ERR_COBS;
        }
        if (run > cap - used) {
            return SIG_ERR_NO_SPACE;
        }
        for (size_t k = 0; k < run; k++) {
            if (src[i + k] == 0u) {
                return SIG_ERR_COBS;
            }
            dst[used++] = src[i + k];
        }
        i += run;
        if (i < n && code != 0xFFu) {
            if (used >= cap) {
                return SIG_ERR_NO_SPACE;
            }
            dst[used++] = 0u;
        }
    }
    *out_len = used;
    return SIG_OK;
}

sig_err_t sig_frame_encode(uint8_t *dst, size_t cap, const uint8_t *body, size_t n, size_t *out_len)
{
    /* COBS over body || CRC without copying: encode blocks from a virtual
     * concatenation of body and the two CRC bytes. */
    uint8_t crc[2];
    uint16_t c;
    size_t total, i = 0, used = 0;
    if (dst == NULL || out_len == NULL || body == NULL) {
        return SIG_ERR_ARG;
    }
    if (n == 0u || n > SIG_MAX_BODY_LIMIT || n > SIZE_MAX - SIG_CRC_SIZE) {
        return SIG_ERR_TOO_LARGE; /* (n + 2 must not wrap a 16-bit size_t) */
    }
    c = sig_crc16(body, n);
    crc[0] = (uint8_t)(c >> 8);
    crc[1] = (uint8_t)(c & 0xFFu);
    total = n + 2u;
    for (;;) {
        size_t run = 0;
        while (i + run < total && run < 254u &&
               (i + run < n ? body[i + run] : crc[i + run - n]) != 0u) {
            run++;
        }
        if (run + 1u > cap - used) {
            return SIG_ERR_NO_SPACE;
        }
        dst[used++] = (uint8_t)(run + 1u);
        for (size_t k = 0; k < run; k++, i++) {
            dst[used++] = i < n ? body[i] : crc[i - n];
        }
        if (run == 254u) {
            if (i == total) {
                break;
            }
            continue;
        }
        if (i == total) {
            break;
        }
        i++;
    }
    if (used >= cap) {
        return SIG_ERR_NO_SPACE;
    }
    dst[used++] = 0u;
    *out_len = used;
    return SIG_OK;
}

/* ---- streaming decoder ---- */

#define RX_ZERO_PENDING 0x01u /* the block before ended in a zero */
#define RX_SKIPPING 0x02u     /* oversize: drop bytes up to the next 0x00 */
#define RX_TOO_LONG 0x04u     /* decoded more than max_body + 2 */
#define RX_READY 0x08u        /* buf holds a frame returned by the last feed */

sig_err_t sig_rx_init(sig_rx_t *rx, uint8_t *buf, size_t buf_len, uint16_t max_body)
{
    volatile uint8_t *z; /* volatile: a plain loop would become a call to memset */
    uint32_t n = (uint32_t)max_body + 2u, q = n + 1u;
    size_t i;
    if (rx == NULL || buf == NULL || max_body == 0u || max_body > SIG_MAX_BODY_LIMIT - 2u ||
        buf_len < (size_t)max_body + 2u) {
        return SIG_ERR_ARG;
    }
    z = (volatile uint8_t *)rx; /* state and counters */
    for (i = 0; i < sizeof *rx; i++) {
        z[i] = 0u;
    }
    /* SIG_RX_ENCODED_LIMIT without a division (no __udivsi3 on a Cortex-M0) */
    while (n >= 254u) {
        n -= 254u;
        q++;
    }
    rx->buf = buf;
    rx->cap = (uint16_t)(max_body + 2u);
    rx->limit = q;
    return SIG_OK;
}

/* The end of a frame (a 0x00): exactly one counter, unless it ends the
 * bytes skipped after an oversize frame (counted when it was found). */
static bool rx_end(sig_rx_t *rx)
{
    uint8_t flags = rx->flags;
    uint16_t len = (uint16_t)(rx->len - SIG_CRC_SIZE);
    uint32_t *count = &rx->stats.framing_errors; /* truncated COBS block, or too short */
    if (rx->enc == 0u) {
        count = &rx->stats.empty;
    } else if (rx->remaining != 0u || rx->len <= SIG_CRC_SIZE) {
    } else if (flags & RX_TOO_LONG) {
        count = &rx->stats.oversize;
    } else if (sig_crc16(rx->buf, len) != (uint16_t)(((uint16_t)rx->buf[len] << 8) | rx->buf[len + 1u])) {
        count = &rx->stats.crc_errors;
    } else {
        count = &rx->stats.frames;
    }
    rx->enc = 0;
    rx->remaining = 0;
    rx->flags = 0;
    rx->len = 0;
    if (flags & RX_SKIPPING) {
        return false; /* (len is 0: no CRC was computed) */
    }
    (*count)++;
    if (count != &rx->stats.frames) {
        return false;
    }
    rx->len = len;
    rx->flags = RX_READY;
    return true;
}

bool sig_rx_feed(sig_rx_t *rx, uint8_t byte)
{
    uint8_t f = rx->flags;
    int b = -1; /* the decoded byte to store, if any */
    if (f & RX_READY) {
        f = 0; /* the previous body is given up */
        rx->len = 0;
    }
    if (byte == 0u) {
        rx->flags = f;
        return rx_end(rx);
    }
    if (f & RX_SKIPPING) {
        return false;
    }
    if (++rx->enc > rx->limit) {
        rx->stats.oversize++;
        f = RX_SKIPPING;
        rx->len = 0;
    } else if (rx->remaining == 0u) { /* a code byte: the zero the last block stood for */
        if (f & RX_ZERO_PENDING) {
            b = 0;
        }
        rx->remaining = (uint8_t)(byte - 1u);
        f = byte == 0xFFu ? (uint8_t)(f & ~RX_ZERO_PENDING) : (uint8_t)(f | RX_ZERO_PENDING);
    } else {
        rx->remaining--;
        b = byte;
    }
    if (b >= 0) {
        if (rx->len < rx->cap) {
            rx->buf[rx->len++] = (uint8_t)b;
        } else {
            f |= RX_TOO_LONG;
        }
    }
    rx->flags = f;
    return false;
}

sig_bytes_t sig_rx_body(const sig_rx_t *rx)
{
    sig_bytes_t b;
    b.ptr = rx->buf;
    b.len = (rx->flags & RX_READY) ? rx->len : 0u;
    return b;
}
