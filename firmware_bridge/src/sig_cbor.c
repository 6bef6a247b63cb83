/* Small CBOR (RFC 8949) writer and reader for event data; no library.
 * Float conversions are done on the bit patterns with integer operations, so
 * a device without an FPU pulls in no soft-float routine. Where `double` is
 * a 32-bit float (avr-gcc's default), the double API reads and writes float32
 * values: a CBOR double is rounded to the nearest float. */
#include <string.h>

#include "sig_internal.h"

#define CBOR_UINT 0u
#define CBOR_NEGINT 1u
#define CBOR_BYTES 2u
#define CBOR_TEXT 3u
#define CBOR_ARRAY 4u
#define CBOR_MAP 5u
#define CBOR_TAG 6u
#define CBOR_SIMPLE 7u
#define CBOR_AI_INDEF 31u

/* ---- writer ---- */

void sig_cbor_writer_init(sig_cbor_writer_t *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf == NULL ? 0u : cap;
    w->len = 0;
    w->err = buf == NULL ? SIG_ERR_ARG : SIG_OK;
}

sig_err_t sig_cbor_finish(const sig_cbor_writer_t *w, size_t *out_len)
{
    if (w->err != SIG_OK) {
        return w->err;
    }
    if (out_len != NULL) {
        *out_len = w->len;
    }
    return SIG_OK;
}

static void put_head(sig_cbor_writer_t *w, uint8_t major, uint64_t v)
{
    uint8_t tmp[9];
    size_t n, i;
    uint8_t mt = (uint8_t)(major << 5);
    if (v < 24u) {
        tmp[0] = (uint8_t)(mt | v);
        n = 1;
    } else if (v <= 0xFFu) {
        tmp[0] = (uint8_t)(mt | 24u);
        n = 2;
    } else if (v <= 0xFFFFu) {
        tmp[0] = (uint8_t)(mt | 25u);
        n = 3;
    } else if (v <= 0xFFFFFFFFu) {
        tmp[0] = (uint8_t)(mt | 26u);
        n = 5;
    } else {
        tmp[0] = (uint8_t)(mt | 27u);
        n = 9;
    }
    for (i = 1; i < n; i++) {
        tmp[i] = (uint8_t)(v >> (8u * (n - 1u - i)));
    }
    sig__put_raw(w, tmp, n);
}

void sig_cbor_put_null(sig_cbor_writer_t *w)
{
    sig__put_u8(w, 0xF6u);
}

void sig_cbor_put_bool(sig_cbor_writer_t *w, bool v)
{
    sig__put_u8(w, v ? 0xF5u : 0xF4u);
}

void sig_cbor_put_int(sig_cbor_writer_t *w, int64_t v)
{
    if (v >= 0) {
        put_head(w, CBOR_UINT, (uint64_t)v);
    } else {
        put_head(w, CBOR_NEGINT, (uint64_t)(-(v + 1))); /* no overflow at INT64_MIN */
    }
}

/* F9 + half, or FA + single: the shortest that keeps the float32 bits f. */
static void put_f32_bits(sig_cbor_writer_t *w, uint32_t f)
{
    uint8_t tmp[5];
    uint32_t a = f & 0x7FFFFFFFu, h;
    size_t n = 3, i;
    if (a > 0x7F800000u) {
        h = 0x7E00u; /* NaN: half keeps it (canonical, no sign) */
        f = 0;
    } else if (a == 0x7F800000u) {
        h = 0x7C00u; /* infinity */
    } else if (a >= 0x38800000u) { /* 2^-14 and above: a normal half if exact */
        h = (a - 0x38000000u) >> 13;
        if (a > 0x477FE000u || (a & 0x1FFFu) != 0u) {
            n = 5;
        }
    } else if (a >= 0x33800000u) { /* 2^-24 .. 2^-14: a subnormal half if exact */
        uint32_t full = (a & 0x7FFFFFu) | 0x800000u, shift = 126u - (a >> 23);
        h = full >> shift;
        if ((full & (((uint32_t)1u << shift) - 1u)) != 0u) { /* shift 13..23: not 1u on a 16-bit int */
            n = 5;
        }
    } else {
        h = 0; /* zero, else too small for a half */
        n = a == 0u ? 3u : 5u;
    }
    if (n == 3u) {
        f = (f >> 16 & 0x8000u) | h;
    }
    tmp[0] = n == 3u ? 0xF9u : 0xFAu;
    for (i = 1; i < n; i++) {
        tmp[i] = (uint8_t)(f >> (8u * (n - 1u - i)));
    }
    sig__put_raw(w, tmp, n);
}

void sig_cbor_put_float32(sig_cbor_writer_t *w, float v)
{
    uint32_t f;
    memcpy(&f, &v, sizeof f);
    put_f32_bits(w, f);
}

#if SIG__DOUBLE_IS_FLOAT
void sig_cbor_put_float64(sig_cbor_writer_t *w, double v)
{
    uint32_t f; /* double is a float32 here: 4 bytes, not 8 */
    memcpy(&f, &v, sizeof f);
    put_f32_bits(w, f);
}
#else
void sig_cbor_put_float64(sig_cbor_writer_t *w, double v)
{
    uint64_t d;
    uint32_t efield;
    uint64_t man;
    uint32_t sign;
    memcpy(&d, &v, sizeof d);
    efield = (uint32_t)((d >> 52) & 0x7FFu);
    man = d & 0xFFFFFFFFFFFFFull;
    sign = (uint32_t)(d >> 32) & 0x80000000u;
    if (efield == 0x7FFu) {
        put_f32_bits(w, sign | 0x7F800000u | (man != 0u ? 0x400000u : 0u));
        return;
    }
    if (efield == 0u && man == 0u) {
        put_f32_bits(w, sign);
        return;
    }
    if (efield != 0u) {
        int32_t e = (int32_t)efield - 1023;
        if (e >= -126 && e <= 127 && (man & 0x1FFFFFFFu) == 0u) {
            put_f32_bits(w, sign | ((uint32_t)(e + 127) << 23) | (uint32_t)(man >> 29));
            return;
        }
        if (e >= -149 && e < -126) {
            uint64_t full = man | 0x10000000000000ull;
            uint32_t shift = (uint32_t)(-97 - e);
            if ((full & ((1ull << shift) - 1u)) == 0u) {
                put_f32_bits(w, sign | (uint32_t)(full >> shift));
                return;
            }
        }
    }
    {
        uint8_t tmp[9];
        size_t i;
        tmp[0] = 0xFBu;
        for (i = 0; i < 8u; i++) {
            tmp[1u + i] = (uint8_t)(d >> (56u - 8u * i));
        }
        sig__put_raw(w, tmp, 9u);
    }
}
#endif

void sig_cbor_put_text(sig_cbor_writer_t *w, const char *s, size_t n)
{
    if (s == NULL && n > 0u) {
        w->err = w->err == SIG_OK ? SIG_ERR_ARG : w->err;
        return;
    }
    put_head(w, CBOR_TEXT, (uint64_t)n);
    sig__put_raw(w, (const uint8_t *)s, n);
}

void sig_cbor_put_bytes(sig_cbor_writer_t *w, const uint8_t *p, size_t n)
{
    if (p == NULL && n > 0u) {
        w->err = w->err == SIG_OK ? SIG_ERR_ARG : w->err;
        return;
    }
    put_head(w, CBOR_BYTES, (uint64_t)n);
    sig__put_raw(w, p, n);
}

void sig_cbor_put_array(sig_cbor_writer_t *w, uint32_t n)
{
    put_head(w, CBOR_ARRAY, n);
}

void sig_cbor_put_map(sig_cbor_writer_t *w, uint32_t n)
{
    put_head(w, CBOR_MAP, n);
}

/* ---- reader ---- */

void sig_cbor_reader_init(sig_cbor_reader_t *r, const uint8_t *p, size_t n)
{
    r->p = p;
    r->len = p == NULL ? 0u : n;
    r->pos = 0;
}

bool sig_cbor_at_end(const sig_cbor_reader_t *r)
{
    return r->pos >= r->len;
}

typedef struct {
    uint8_t major, ai;
    uint64_t val;   /* argument; for major 7 with ai 25..27, the float bits */
    size_t next;    /* position after the head */
} head_t;

/* Parse the head at pos. SIG_ERR_CBOR when truncated or reserved (ai 28..30). */
static sig_err_t read_head(const sig_cbor_reader_t *r, size_t pos, head_t *h)
{
    uint8_t ib;
    size_t n, i;
    if (pos >= r->len) {
        return SIG_ERR_CBOR;
    }
    ib = r->p[pos];
    h->major = (uint8_t)(ib >> 5);
    h->ai = (uint8_t)(ib & 0x1Fu);
    h->val = h->ai;
    pos++;
    if (h->ai < 24u || h->ai == CBOR_AI_INDEF) {
        h->next = pos;
        return SIG_OK;
    }
    if (h->ai > 27u) {
        return SIG_ERR_CBOR;
    }
    n = (size_t)1u << (h->ai - 24u);
    if (n > r->len - pos) {
        return SIG_ERR_CBOR;
    }
    h->val = 0;
    for (i = 0; i < n; i++) {
        h->val = (h->val << 8) | r->p[pos + i];
    }
    h->next = pos + n;
    return SIG_OK;
}

sig_err_t sig_cbor_get_null(sig_cbor_reader_t *r)
{
    if (r->pos >= r->len) {
        return SIG_ERR_CBOR;
    }
    if (r->p[r->pos] != 0xF6u) {
        return SIG_ERR_CBOR_TYPE;
    }
    r->pos++;
    return SIG_OK;
}

sig_err_t sig_cbor_get_bool(sig_cbor_reader_t *r, bool *v)
{
    if (r->pos >= r->len) {
        return SIG_ERR_CBOR;
    }
    if (r->p[r->pos] != 0xF4u && r->p[r->pos] != 0xF5u) {
        return SIG_ERR_CBOR_TYPE;
    }
    *v = r->p[r->pos] == 0xF5u;
    r->pos++;
    return SIG_OK;
}

sig_err_t sig_cbor_get_int(sig_cbor_reader_t *r, int64_t *v)
{
    head_t h;
    sig_err_t e = read_head(r, r->pos, &h);
    if (e != SIG_OK) {
        return e;
    }
    if ((h.major != CBOR_UINT && h.major != CBOR_NEGINT)) {
        return SIG_ERR_CBOR_TYPE;
    }
    if (h.ai == CBOR_AI_INDEF) {
        return SIG_ERR_CBOR;
    }
    if (h.val > (uint64_t)INT64_MAX) {
        return SIG_ERR_CBOR_RANGE;
    }
    *v = h.major == CBOR_UINT ? (int64_t)h.val : -1 - (int64_t)h.val;
    r->pos = h.next;
    return SIG_OK;
}

static uint32_t half_to_single(uint32_t hb)
{
    uint32_t sign = (hb & 0x8000u) << 16;
    uint32_t e = (hb >> 10) & 0x1Fu;
    uint32_t man = hb & 0x3FFu;
    if (e == 0u) {
        if (man == 0u) {
            return sign;
        }
        e = 113u; /* subnormal: normalise */
        while ((man & 0x400u) == 0u) {
            man <<= 1;
            e--;
        }
        return sign | (e << 23) | ((man & 0x3FFu) << 13);
    }
    if (e == 31u) {
        return sign | 0x7F800000u | (man << 13);
    }
    return sign | ((e + 112u) << 23) | (man << 13);
}

#if !SIG__DOUBLE_IS_FLOAT
static uint64_t single_to_double(uint32_t f)
{
    uint64_t sign = (uint64_t)(f >> 31) << 63;
    uint32_t e = (f >> 23) & 0xFFu;
    uint64_t man = f & 0x7FFFFFu;
    if (e == 0u) {
        uint32_t de = 897u;
        if (man == 0u) {
            return sign;
        }
        while ((man & 0x800000u) == 0u) {
            man <<= 1;
            de--;
        }
        return sign | ((uint64_t)de << 52) | ((man & 0x7FFFFFu) << 29);
    }
    if (e == 0xFFu) {
        return sign | 0x7FF0000000000000ull | (man << 29);
    }
    return sign | ((uint64_t)(e + 896u) << 52) | (man << 29);
}
#endif

/* Float head: ai 25/26/27 of major 7. */
static sig_err_t read_float_head(const sig_cbor_reader_t *r, head_t *h)
{
    sig_err_t e = read_head(r, r->pos, h);
    if (e != SIG_OK) {
        return e;
    }
    if (h->major != CBOR_SIMPLE || h->ai < 25u || h->ai > 27u) {
        return SIG_ERR_CBOR_TYPE;
    }
    return SIG_OK;
}

/* The float32 nearest to the float64 bits d (ties to even; too large ->
 * infinity, too small -> zero; a NaN stays a quiet NaN with the top payload
 * bits), as a C cast would give, with integer operations only. */
uint32_t sig__f64_to_f32(uint64_t d)
{
    uint32_t sign = (uint32_t)(d >> 32) & 0x80000000u;
    uint32_t efield = (uint32_t)(d >> 52) & 0x7FFu;
    uint64_t full = d & 0xFFFFFFFFFFFFFull, rem, half;
    int32_t fe = (int32_t)efield - 1023 + 127; /* float32 biased exponent */
    uint32_t shift = 29u, r;
    if (efield == 0x7FFu) {
        return sign | 0x7F800000u | (full != 0u ? 0x400000u | (uint32_t)(full >> 29) : 0u);
    }
    if (efield == 0u || fe < -24) {
        return sign; /* below half the smallest float32 subnormal */
    }
    if (fe >= 255) {
        return sign | 0x7F800000u;
    }
    full |= (uint64_t)1u << 52;
    if (fe < 1) {
        shift = (uint32_t)(30 - fe); /* a float32 subnormal: 30..54 */
        fe = 1;
    }
    r = (uint32_t)(full >> shift);
    rem = full & ((((uint64_t)1u) << shift) - 1u);
    half = (uint64_t)1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u) != 0u)) {
        r++; /* may carry into the exponent: still the right bits, up to infinity */
    }
    return sign | (((uint32_t)(fe - 1) << 23) + r);
}

sig_err_t sig_cbor_get_double(sig_cbor_reader_t *r, double *v)
{
    head_t h;
    sig_err_t e = read_float_head(r, &h);
    if (e != SIG_OK) {
        return e;
    }
#if SIG__DOUBLE_IS_FLOAT
    {
        uint32_t f = h.ai == 25u ? half_to_single((uint32_t)h.val)
                     : h.ai == 26u ? (uint32_t)h.val : sig__f64_to_f32(h.val);
        memcpy(v, &f, sizeof f); /* double is a float32 here */
    }
#else
    {
        uint64_t d = h.ai == 25u ? single_to_double(half_to_single((uint32_t)h.val))
                     : h.ai == 26u ? single_to_double((uint32_t)h.val) : h.val;
        memcpy(v, &d, sizeof d);
    }
#endif
    r->pos = h.next;
    return SIG_OK;
}

sig_err_t sig_cbor_get_float(sig_cbor_reader_t *r, float *v)
{
    head_t h;
    uint32_t f;
    sig_err_t e = read_float_head(r, &h);
    if (e != SIG_OK) {
        return e;
    }
    f = h.ai == 25u ? half_to_single((uint32_t)h.val) : h.ai == 26u ? (uint32_t)h.val : sig__f64_to_f32(h.val);
    memcpy(v, &f, sizeof f);
    r->pos = h.next;
    return SIG_OK;
}

static sig_err_t get_string(sig_cbor_reader_t *r, uint8_t major, sig_bytes_t *v)
{
    head_t h;
    sig_err_t e = read_head(r, r->pos, &h);
    if (e != SIG_OK) {
        return e;
    }
    if (h.major != major || h.ai == CBOR_AI_INDEF) {
        return SIG_ERR_CBOR_TYPE; /* indefinite strings: use sig_cbor_skip */
    }
    if (h.val > r->len - h.next) {
        return SIG_ERR_CBOR;
    }
    v->ptr = r->p + h.next;
    v->len = (size_t)h.val;
    r->pos = h.next + (size_t)h.val;
    return SIG_OK;
}

sig_err_t sig_cbor_get_text(sig_cbor_reader_t *r, sig_bytes_t *v)
{
    return get_string(r, CBOR_TEXT, v);
}

sig_err_t sig_cbor_get_bytes(sig_cbor_reader_t *r, sig_bytes_t *v)
{
    return get_string(r, CBOR_BYTES, v);
}

static sig_err_t get_container(sig_cbor_reader_t *r, uint8_t major, uint32_t *n)
{
    head_t h;
    sig_err_t e = read_head(r, r->pos, &h);
    if (e != SIG_OK) {
        return e;
    }
    if (h.major != major || h.ai == CBOR_AI_INDEF) {
        return SIG_ERR_CBOR_TYPE;
    }
    if (h.val > r->len - h.next) {
        return SIG_ERR_CBOR; /* every item takes at least one byte */
    }
    *n = (uint32_t)h.val;
    r->pos = h.next;
    return SIG_OK;
}

sig_err_t sig_cbor_get_array(sig_cbor_reader_t *r, uint32_t *n)
{
    return get_container(r, CBOR_ARRAY, n);
}

sig_err_t sig_cbor_get_map(sig_cbor_reader_t *r, uint32_t *n)
{
    return get_container(r, CBOR_MAP, n);
}

#define LVL_INDEF 0xFFFFFFFFu /* left[] of an indefinite level: ends at a break */
/* Items a head opens: at least 32 bits, because it must hold LVL_INDEF (a
 * 16-bit size_t, as on AVR, cut it to 0xFFFF and every indefinite-length
 * item was rejected), and at least size_t, because it is compared with the
 * bytes left before it is narrowed to left[]. */
#if SIZE_MAX > 0xFFFFFFFFu
typedef size_t cbor_count_t;
#else
typedef uint32_t cbor_count_t;
#endif
#define KIND_IMAP 0x40u       /* kind[]: an indefinite map (parity tracked) */
#define KIND_ODD 0x20u        /* kind[]: ... holding an odd number of items */
/* kind[] low bits: CBOR_BYTES / CBOR_TEXT for an indefinite string, whose
 * chunks must be definite strings of the same type; 0 otherwise. */

/* One pass, no recursion: left[d] counts the items still expected at each
 * open level. Every length and count is checked against the bytes left
 * before it is used; argument values that do not fit size_t saturate. */
sig_err_t sig_cbor_skip(sig_cbor_reader_t *r)
{
    uint32_t left[SIG_CONFIG_CBOR_MAX_DEPTH];
    uint8_t kind[SIG_CONFIG_CBOR_MAX_DEPTH];
    const uint8_t *p = r->p;
    size_t depth = 0, pos = r->pos, len = r->len;
    for (;;) {
        uint8_t ib, major, ai, k;
        size_t val;
        if (pos >= len) {
            return SIG_ERR_CBOR;
        }
        ib = p[pos++];
        major = (uint8_t)(ib >> 5);
        ai = (uint8_t)(ib & 0x1Fu);
        val = ai;
        if (ai >= 24u && ai != CBOR_AI_INDEF) {
            size_t n;
            if (ai > 27u) {
                return SIG_ERR_CBOR; /* reserved */
            }
            n = (size_t)1u << (ai - 24u);
            if (n > len - pos) {
                return SIG_ERR_CBOR;
            }
            for (val = 0; n > 0u; n--) {
                uint8_t b = p[pos++];
                val = val > (SIZE_MAX >> 8) ? SIZE_MAX : (val << 8 | b);
            }
        }
        k = depth > 0u ? kind[depth - 1u] : 0u;
        if (ib == 0xFFu) { /* break */
            if (depth == 0u || left[depth - 1u] != LVL_INDEF || (k & KIND_ODD)) {
                return SIG_ERR_CBOR;
            }
            depth--;
        } else {
            cbor_count_t count = 0; /* items the head opens */
            if ((k & 0x0Fu) && (major != (k & 0x0Fu) || ai == CBOR_AI_INDEF)) {
                return SIG_ERR_CBOR; /* a chunk must be a definite string of the same type */
            }
            if (ai == CBOR_AI_INDEF) {
                if (major < CBOR_BYTES || major == CBOR_TAG) {
                    return SIG_ERR_CBOR;
                }
                count = LVL_INDEF;
            } else if (major == CBOR_BYTES || major == CBOR_TEXT) {
                if (val > len - pos) {
                    return SIG_ERR_CBOR;
                }
                pos += val;
            } else if (major == CBOR_ARRAY || major == CBOR_MAP) {
                count = val;
                if (major == CBOR_MAP) {
                    if (count > (len - pos) / 2u) {
                        return SIG_ERR_CBOR;
                    }
                    count *= 2u;
                } else if (count > len - pos) {
                    return SIG_ERR_CBOR; /* every item takes at least one byte */
                }
                if (count >= LVL_INDEF) {
                    return SIG_ERR_CBOR_RANGE;
                }
            } else if (major == CBOR_TAG) {
                continue; /* the tag's content follows: tag and content are one item */
            } else if (major == CBOR_SIMPLE && ai == 24u && val < 32u) {
                return SIG_ERR_CBOR; /* two-byte simple below 32 is not well-formed */
            }
            if (count != 0u) {
                if (depth >= SIG_CONFIG_CBOR_MAX_DEPTH) {
                    return SIG_ERR_CBOR_DEPTH;
                }
                left[depth] = (uint32_t)count;
                kind[depth] = major <= CBOR_TEXT ? major
                              : (major == CBOR_MAP && count == LVL_INDEF ? (uint8_t)KIND_IMAP : 0u);
                depth++;
                continue;
            }
        }
        /* one item completed: count it in the enclosing levels */
        while (depth > 0u) {
            if (left[depth - 1u] == LVL_INDEF) {
                if (kind[depth - 1u] & KIND_IMAP) {
                    kind[depth - 1u] ^= KIND_ODD;
                }
                break;
            }
            if (--left[depth - 1u] > 0u) {
                break;
            }
            depth--; /* that container is complete: an item of its parent */
        }
        if (depth == 0u) {
            r->pos = pos;
            return SIG_OK;
        }
    }
}

sig_err_t sig_cbor_check_data(const uint8_t *p, size_t n)
{
    sig_cbor_reader_t r;
    sig_err_t e;
    if (n == 0u) {
        return SIG_OK;
    }
    sig_cbor_reader_init(&r, p, n);
    e = sig_cbor_skip(&r);
    if (e != SIG_OK) {
        return e;
    }
    return sig_cbor_at_end(&r) ? SIG_OK : SIG_ERR_CBOR;
}
