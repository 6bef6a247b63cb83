/* Reference for the random CBOR tests: the library's first sig_cbor_skip
 * (a head parser with 64-bit arguments and a separate walk), kept verbatim so
 * that the smaller walker in src/sig_cbor.c is checked against it on every
 * input: same result, same error code, same end position. */
#include "ref_cbor.h"

#define CBOR_UINT 0u
#define CBOR_NEGINT 1u
#define CBOR_BYTES 2u
#define CBOR_TEXT 3u
#define CBOR_ARRAY 4u
#define CBOR_MAP 5u
#define CBOR_TAG 6u
#define CBOR_SIMPLE 7u
#define CBOR_AI_INDEF 31u

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

#define LVL_INDEF 0xFFFFFFFFu
#define KIND_CONTAINER 0u
#define KIND_STRING 0x10u  /* | major: chunks of an indefinite string */
#define KIND_ODD 0x20u     /* indefinite map holding an odd number of items */

sig_err_t ref_cbor_skip(sig_cbor_reader_t *r)
{
    uint32_t left[SIG_CONFIG_CBOR_MAX_DEPTH];
    uint8_t kind[SIG_CONFIG_CBOR_MAX_DEPTH];
    size_t depth = 0, pos = r->pos;
    for (;;) {
        head_t h;
        bool done = true; /* the item at pos is complete after its head */
        sig_err_t e = read_head(r, pos, &h);
        if (e != SIG_OK) {
            return e;
        }
        if (h.major == CBOR_SIMPLE && h.ai == CBOR_AI_INDEF) { /* break */
            if (depth == 0u || left[depth - 1u] != LVL_INDEF || (kind[depth - 1u] & KIND_ODD)) {
                return SIG_ERR_CBOR;
            }
            depth--;
            pos = h.next;
        } else {
            if (depth > 0u && (kind[depth - 1u] & KIND_STRING) &&
                (h.major != (kind[depth - 1u] & 0x0Fu) || h.ai == CBOR_AI_INDEF)) {
                return SIG_ERR_CBOR; /* a chunk must be a definite string of the same type */
            }
            pos = h.next;
            switch (h.major) {
            case CBOR_UINT:
            case CBOR_NEGINT:
            case CBOR_TAG:
                if (h.ai == CBOR_AI_INDEF) {
                    return SIG_ERR_CBOR;
                }
                done = h.major != CBOR_TAG; /* a tag's content follows */
                break;
            case CBOR_SIMPLE:
                if (h.ai == 24u && h.val < 32u) {
                    return SIG_ERR_CBOR; /* two-byte simple below 32 is not well-formed */
                }
                break;
            default: /* strings, arrays, maps */
                if ((h.major == CBOR_BYTES || h.major == CBOR_TEXT) && h.ai != CBOR_AI_INDEF) {
                    if (h.val > r->len - pos) {
                        return SIG_ERR_CBOR;
                    }
                    pos += (size_t)h.val;
                    break;
                }
                /* an indefinite string is a level of chunks, like an array */
                if (h.ai != CBOR_AI_INDEF) {
                    uint64_t count = h.val;
                    if (h.major == CBOR_MAP) {
                        if (count > (r->len - pos) / 2u) {
                            return SIG_ERR_CBOR;
                        }
                        count *= 2u;
                    } else if (count > r->len - pos) {
                        return SIG_ERR_CBOR;
                    }
                    if (count == 0u) {
                        break;
                    }
                    if (count >= LVL_INDEF) {
                        return SIG_ERR_CBOR_RANGE;
                    }
                    h.val = count;
                }
                if (depth >= SIG_CONFIG_CBOR_MAX_DEPTH) {
                    return SIG_ERR_CBOR_DEPTH;
                }
                left[depth] = h.ai == CBOR_AI_INDEF ? LVL_INDEF : (uint32_t)h.val;
                kind[depth] = (h.major == CBOR_BYTES || h.major == CBOR_TEXT)
                                  ? (uint8_t)(KIND_STRING | h.major)
                                  : (uint8_t)KIND_CONTAINER;
                if (h.major == CBOR_MAP && h.ai == CBOR_AI_INDEF) {
                    kind[depth] |= 0x40u; /* marks an indefinite map (parity tracked) */
                }
                depth++;
                done = false;
                break;
            }
            if (!done) {
                continue;
            }
        }
        /* one item completed: count it in the enclosing levels */
        while (depth > 0u) {
            if (left[depth - 1u] == LVL_INDEF) {
                if (kind[depth - 1u] & 0x40u) {
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

