/*
 * sig_auth.c - signed frames (PROTOCOL.md section 5): keyed BLAKE2s (RFC 7693)
 * and the device's sign / verify steps. Compiles to nothing unless
 * SIG_CONFIG_AUTH is 1. C99, no malloc, no static state: the hash state is
 * on the caller's stack (sig_blake2s_t, 104 bytes; a compression adds 128).
 * Written for size (a Cortex-M0 has 16 registers and no 64-bit multiply):
 * one G function indexed by a table, the schedule packed in nibbles.
 */
#include <string.h>

#include "sig_internal.h"

#if SIG_CONFIG_AUTH

/* Tables in flash on AVR too (sig_internal.h, SIG__ROM). */
#if defined(__AVR__)
#define ROM_U8(p) pgm_read_byte(p)
#define ROM_U32(p) pgm_read_dword(p)
#else
#define ROM_U8(p) (*(p))
#define ROM_U32(p) (*(p))
#endif

static const uint32_t IV[8] SIG__ROM = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                               0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

/* The message schedule of RFC 7693, two word indices a byte, low nibble first. */
static const uint8_t SIGMA[10][8] SIG__ROM = {
    {0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE},
    {0xAE, 0x84, 0xF9, 0x6D, 0xC1, 0x20, 0x7B, 0x35},
    {0x8B, 0x0C, 0x25, 0xDF, 0xEA, 0x63, 0x17, 0x49},
    {0x97, 0x13, 0xCD, 0xEB, 0x62, 0xA5, 0x04, 0x8F},
    {0x09, 0x75, 0x42, 0xFA, 0x1E, 0xCB, 0x86, 0xD3},
    {0xC2, 0xA6, 0xB0, 0x38, 0xD4, 0x57, 0xEF, 0x91},
    {0x5C, 0xF1, 0xDE, 0xA4, 0x70, 0x36, 0x29, 0xB8},
    {0xBD, 0xE7, 0x1C, 0x93, 0x05, 0x4F, 0x68, 0xA2},
    {0xF6, 0x9E, 0x3B, 0x80, 0x2C, 0x7D, 0x41, 0x5A},
    {0x2A, 0x48, 0x67, 0x51, 0xBF, 0xE9, 0xC3, 0x0D},
};

/* The state words of the 8 G calls of a round: a | b << 4 | c << 8 | d << 12. */
static const uint16_t G_IDX[8] SIG__ROM = {0xC840u, 0xD951u, 0xEA62u, 0xFB73u, 0xFA50u, 0xCB61u, 0xD872u, 0xE943u};

/* memcpy, without linking it (a device build has no other use for it: 142
 * bytes on a Cortex-M0): the volatile store keeps the compiler from making
 * the loop a call to memcpy. memset is in every C start-up already. */
static void copy(uint8_t *dst, const uint8_t *src, size_t n)
{
    volatile uint8_t *d = dst;
    while (n-- > 0u) {
        *d++ = *src++;
    }
}

static uint32_t ror(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32u - n));
}

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void compress(sig_blake2s_t *s, uint32_t last)
{
    uint32_t v[16], m[16];
    const volatile uint32_t *h = s->h; /* volatile: not a memcpy (see copy) */
    unsigned i, r;
    for (i = 0; i < 16u; i++) {
        m[i] = load32(s->buf + 4u * i);
        v[i] = i < 8u ? h[i] : ROM_U32(&IV[i - 8u]);
    }
    v[12] ^= s->t;    /* the byte count: below 2^32 here, so t1 stays 0 */
    v[14] ^= last;    /* f0: all ones for the last block */
    for (r = 0; r < 10u; r++) {
        for (i = 0; i < 8u; i++) {
            unsigned g = SIG__ROM_U16(&G_IDX[i]), a = g & 15u, b = (g >> 4) & 15u, c = (g >> 8) & 15u, d = g >> 12;
            uint8_t sel = ROM_U8(&SIGMA[r][i]);
            v[a] += v[b] + m[sel & 15u];
            v[d] = ror(v[d] ^ v[a], 16);
            v[c] += v[d];
            v[b] = ror(v[b] ^ v[c], 12);
            v[a] += v[b] + m[sel >> 4];
            v[d] = ror(v[d] ^ v[a], 8);
            v[c] += v[d];
            v[b] = ror(v[b] ^ v[c], 7);
        }
    }
    for (i = 0; i < 8u; i++) {
        s->h[i] ^= v[i] ^ v[i + 8u];
    }
}

void sig_blake2s_init(sig_blake2s_t *s, uint8_t outlen, const uint8_t *key, uint8_t keylen)
{
    volatile uint32_t *h = s->h; /* volatile: not a memcpy (see copy) */
    unsigned i;
    for (i = 0; i < 8u; i++) {
        h[i] = ROM_U32(&IV[i]);
    }
    h[0] ^= 0x01010000u ^ ((uint32_t)keylen << 8) ^ outlen; /* fanout 1, depth 1, lengths */
    s->t = 0;
    s->n = 0;
    s->outlen = outlen;
    if (keylen > 0u) {
        memset(s->buf, 0, sizeof s->buf);
        copy(s->buf, key, keylen);
        s->n = 64u; /* the key block, compressed once more input comes (or at final) */
    }
}

void sig_blake2s_update(sig_blake2s_t *s, const uint8_t *p, size_t len)
{
    while (len-- > 0u) {
        if (s->n == 64u) { /* a full block and more to come: it is not the last */
            s->t += 64u;
            compress(s, 0);
            s->n = 0;
        }
        s->buf[s->n++] = *p++;
    }
}

void sig_blake2s_final(sig_blake2s_t *s, uint8_t *out)
{
    unsigned i;
    s->t += s->n;
    memset(s->buf + s->n, 0, 64u - s->n);
    compress(s, 0xFFFFFFFFu);
    for (i = 0; i < s->outlen; i++) {
        out[i] = (uint8_t)(s->h[i / 4u] >> (8u * (i % 4u)));
    }
}

void sig_auth_tag(const uint8_t *key, uint8_t direction, const uint8_t *device_nonce,
                  const uint8_t *gateway_nonce, const uint8_t *body, size_t len, uint8_t *tag)
{
    sig_blake2s_t s;
    sig_blake2s_init(&s, SIG_AUTH_TAG_LEN, key, SIG_AUTH_KEY_LEN);
    sig_blake2s_update(&s, &direction, 1u);
    sig_blake2s_update(&s, device_nonce, SIG_AUTH_NONCE_LEN);
    sig_blake2s_update(&s, gateway_nonce, SIG_AUTH_NONCE_LEN);
    sig_blake2s_update(&s, body, len);
    sig_blake2s_final(&s, tag);
}

/* ---- the device's steps (sig_device.c calls them) ---- */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

size_t sig__auth_seal(sig_device_t *dev, uint8_t *body, size_t len)
{
    uint32_t counter = 0;
    if ((body[0] & SIG_HEADER_TYPE_MASK) == SIG_MSG_HELLO) {
        copy(body + 5, dev->auth_nd, SIG_AUTH_NONCE_LEN);
    } else {
        counter = ++dev->auth_tx;
    }
    body[0] |= SIG_HEADER_FLAG_AUTH;
    put32(body + 1, counter);
    sig_auth_tag(dev->auth_key, SIG_AUTH_TO_GATEWAY, dev->auth_nd, dev->auth_ng, body, len,
                 body + len);
    return len + SIG_AUTH_TAG_LEN;
}

/* The byte-wise OR of a ^ b over n bytes: 0 when equal, in constant time. */
static uint8_t differ(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    while (n-- > 0u) {
        d |= (uint8_t)(*a++ ^ *b++);
    }
    return d;
}

size_t sig__auth_open(sig_device_t *dev, uint8_t **bodyp, size_t len)
{
    uint8_t *body = *bodyp;
    uint8_t t = body[0], type = t & SIG_HEADER_TYPE_MASK, tag[SIG_AUTH_TAG_LEN];
    bool welcome = type == SIG_MSG_WELCOME;
    size_t start = welcome ? 13u : 5u;
    uint32_t counter;
    const uint8_t *ng = welcome ? body + 5 : dev->auth_ng;
    if (!(t & SIG_HEADER_FLAG_AUTH)) {
        /* unsigned: INVITE, and ERROR while waiting for WELCOME (section 5) */
        if (type == SIG_MSG_INVITE || (type == SIG_MSG_ERROR && dev->state == SIG__DEV_HELLO)) {
            return len;
        }
        dev->auth_stats.unsigned_frames++;
        return 0;
    }
    if (len < start + SIG_AUTH_TAG_LEN || (!welcome && dev->state != SIG__DEV_ONLINE)) {
        dev->auth_stats.auth_failed++;
        return 0;
    }
    len -= SIG_AUTH_TAG_LEN;
    sig_auth_tag(dev->auth_key, SIG_AUTH_TO_DEVICE, dev->auth_nd, ng, body, len, tag);
    if (differ(tag, body + len, SIG_AUTH_TAG_LEN) != 0u) {
        dev->auth_stats.auth_failed++;
        return 0;
    }
    counter = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 | (uint32_t)body[3] << 8 | body[4];
    if (welcome ? (counter == 0u || dev->state != SIG__DEV_HELLO) : counter <= dev->auth_rx) {
        dev->auth_stats.replayed++;
        return 0;
    }
    dev->auth_rx = counter;
    if (welcome) {
        copy(dev->auth_ng, body + 5, SIG_AUTH_NONCE_LEN);
        dev->auth_tx = 0;
    }
    /* the plain body in place: the header, moved up to just before the fields */
    body[start - 1u] = (uint8_t)(t & ~SIG_HEADER_FLAG_AUTH);
    *bodyp = body + start - 1u;
    return len - start + 1u;
}

#else
typedef int sig__auth_unused; /* ISO C forbids an empty translation unit */
#endif
