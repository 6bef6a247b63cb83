/* Message layer (PROTOCOL.md section 2): sig_msg_t <-> frame body. */
#include "sig_internal.h"

/* ---- writer primitives ---- */

void sig__put_raw(sig_wr_t *w, const uint8_t *p, size_t n)
{
    if (w->err != SIG_OK) {
        return;
    }
    if (n > w->cap - w->len) {
        w->err = SIG_ERR_NO_SPACE;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        w->buf[w->len + i] = p[i];
    }
    w->len += n;
}

#if SIG__NAMES_IN_FLASH
void sig__put_name_bytes(sig_wr_t *w, const char *s, size_t n)
{
    if (w->err != SIG_OK) {
        return;
    }
    if (n > w->cap - w->len) {
        w->err = SIG_ERR_NO_SPACE;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        w->buf[w->len + i] = (uint8_t)SIG__NAME_BYTE(s, i);
    }
    w->len += n;
}
#endif

void sig__put_u8(sig_wr_t *w, uint8_t b)
{
    sig__put_raw(w, &b, 1u);
}

void sig__put_varint(sig_wr_t *w, uint32_t v)
{
    uint8_t tmp[SIG_VARINT_MAX_LEN];
    size_t n = 0;
    while (v >= 0x80u) {
        tmp[n++] = (uint8_t)((v & 0x7Fu) | 0x80u);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    sig__put_raw(w, tmp, n);
}

void sig__put_name(sig_wr_t *w, const uint8_t *p, size_t n, bool optional)
{
    if (n > SIG_MAX_NAME || (n == 0u && !optional) || (p == NULL && n > 0u)) {
        if (w->err == SIG_OK) {
            w->err = SIG_ERR_INVALID_NAME;
        }
        return;
    }
    sig__put_varint(w, (uint32_t)n);
    sig__put_raw(w, p, n);
}

void sig__put_text(sig_wr_t *w, const uint8_t *p, size_t n)
{
#if SIZE_MAX > 0xFFFFFFFFu
    bool too_long = n > 0xFFFFFFFFu; /* only where size_t is wider than the varint */
#else
    bool too_long = false;
#endif
    if (too_long || (p == NULL && n > 0u)) {
        if (w->err == SIG_OK) {
            w->err = SIG_ERR_ARG;
        }
        return;
    }
    sig__put_varint(w, (uint32_t)n);
    sig__put_raw(w, p, n);
}

static void put_name_b(sig_wr_t *w, sig_bytes_t b, bool optional)
{
    sig__put_name(w, b.ptr, b.len, optional);
}

static void put_text_b(sig_wr_t *w, sig_bytes_t b)
{
    sig__put_text(w, b.ptr, b.len);
}

sig_err_t sig_varint_encode(uint32_t v, uint8_t *buf, size_t cap, size_t *out_len)
{
    sig_wr_t w;
    if (buf == NULL || out_len == NULL) {
        return SIG_ERR_ARG;
    }
    sig_cbor_writer_init(&w, buf, cap);
    sig__put_varint(&w, v);
    return sig_cbor_finish(&w, out_len);
}

sig_err_t sig_msg_encode(const sig_msg_t *m, uint8_t *buf, size_t cap, size_t *out_len)
{
    sig_wr_t w;
    if (m == NULL || buf == NULL || out_len == NULL) {
        return SIG_ERR_ARG;
    }
    sig_cbor_writer_init(&w, buf, cap);
    sig__put_u8(&w, (uint8_t)m->type);
    switch (m->type) {
    case SIG_MSG_HELLO:
        sig__put_varint(&w, m->u.hello.version);
        put_name_b(&w, m->u.hello.name, false);
        sig__put_varint(&w, m->u.hello.max_body);
        sig__put_varint(&w, m->u.hello.keepalive_ms);
        sig__put_varint(&w, m->u.hello.features);
        put_text_b(&w, m->u.hello.credentials);
        break;
    case SIG_MSG_PING:
    case SIG_MSG_PONG:
        sig__put_varint(&w, m->u.ping.token);
        break;
    case SIG_MSG_ERROR:
        sig__put_varint(&w, m->u.error.code);
        sig__put_varint(&w, m->u.error.about);
        sig__put_varint(&w, m->u.error.ref);
        put_text_b(&w, m->u.error.message);
        break;
    case SIG_MSG_LISTEN:
        sig__put_varint(&w, m->u.listen.listener_id);
        put_name_b(&w, m->u.listen.sender, true);
        put_name_b(&w, m->u.listen.event, true);
        if (m->u.listen.options != 0u) { /* absent = 0: a writer omits it */
            sig__put_varint(&w, m->u.listen.options);
        }
        break;
    case SIG_MSG_TRIGGER:
        sig__put_varint(&w, m->u.trigger.event_ref);
        sig__put_raw(&w, m->u.trigger.data.ptr, m->u.trigger.data.len);
        break;
    case SIG_MSG_REQUEST:
        sig__put_varint(&w, m->u.request.request_id);
        put_name_b(&w, m->u.request.sender, false);
        put_name_b(&w, m->u.request.method, false);
        sig__put_raw(&w, m->u.request.data.ptr, m->u.request.data.len);
        break;
    case SIG_MSG_RESPONSE:
        sig__put_varint(&w, m->u.response.request_id);
        sig__put_varint(&w, m->u.response.status);
        put_text_b(&w, m->u.response.message);
        sig__put_raw(&w, m->u.response.data.ptr, m->u.response.data.len);
        break;
#if SIG_CONFIG_FULL_CODEC
    case SIG_MSG_REGISTER_SENDER: {
        const sig_event_decl_t *ev = m->u.register_sender.events;
        const sig_bytes_t *me = m->u.register_sender.methods;
        uint32_t i;
        if ((ev == NULL && m->u.register_sender.n_events > 0u) ||
            (me == NULL && m->u.register_sender.n_methods > 0u)) {
            return SIG_ERR_ARG;
        }
        sig__put_varint(&w, m->u.register_sender.sender_ref);
        put_name_b(&w, m->u.register_sender.name, false);
        sig__put_u8(&w, m->u.register_sender.flags);
        sig__put_varint(&w, m->u.register_sender.n_events);
        for (i = 0; i < m->u.register_sender.n_events; i++) {
            sig__put_varint(&w, ev[i].ref);
            put_name_b(&w, ev[i].name, false);
        }
        sig__put_varint(&w, m->u.register_sender.n_methods);
        for (i = 0; i < m->u.register_sender.n_methods; i++) {
            put_name_b(&w, me[i], false);
        }
        sig__put_raw(&w, m->u.register_sender.meta.ptr, m->u.register_sender.meta.len);
        break;
    }
    case SIG_MSG_UNREGISTER_SENDER:
    case SIG_MSG_UNLISTEN:
        sig__put_varint(&w, m->u.ref.ref);
        break;
    case SIG_MSG_WELCOME:
        sig__put_varint(&w, m->u.welcome.version);
        put_name_b(&w, m->u.welcome.name, false);
        sig__put_varint(&w, m->u.welcome.max_body);
        sig__put_varint(&w, m->u.welcome.keepalive_ms);
        sig__put_varint(&w, m->u.welcome.features);
        break;
    case SIG_MSG_INVITE:
        break;
    case SIG_MSG_ACK:
        sig__put_varint(&w, m->u.ack.seq);
        break;
    case SIG_MSG_SENDER_REGISTERED:
    case SIG_MSG_LISTENING:
        sig__put_varint(&w, m->u.ref.ref);
        break;
    case SIG_MSG_EVENT:
        put_name_b(&w, m->u.event.sender, false);
        put_name_b(&w, m->u.event.event, false);
        sig__put_raw(&w, m->u.event.data.ptr, m->u.event.data.len);
        break;
    case SIG_MSG_RETAINED:
        put_name_b(&w, m->u.retained.sender, false);
        put_name_b(&w, m->u.retained.event, false);
        sig__put_u8(&w, m->u.retained.flags);
        sig__put_raw(&w, m->u.retained.data.ptr, m->u.retained.data.len);
        break;
#endif
    default:
        return SIG_ERR_UNSUPPORTED;
    }
    if (w.err == SIG_OK && w.len > SIG_MAX_BODY_LIMIT) {
        return SIG_ERR_TOO_LARGE;
    }
    return sig_cbor_finish(&w, out_len);
}

/* ---- reader ---- */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    sig_err_t err; /* sticky: the first error wins, as in sig/protocol/messages.py */
} rd_t;

static void rd_fail(rd_t *r, sig_err_t e)
{
    if (r->err == SIG_OK) {
        r->err = e;
    }
}

const uint8_t *sig__varint(const uint8_t *p, const uint8_t *end, uint32_t *v)
{
    uint32_t result = 0;
    unsigned shift = 0;
    for (;;) {
        uint8_t b;
        if (p == end) {
            return NULL;
        }
        b = *p++;
        if (shift == 28u && b > 0x0Fu) {
            return NULL; /* a 5th byte above 0x0F: above 2^32 - 1 or longer than 5 bytes */
        }
        result |= (uint32_t)(b & 0x7Fu) << shift;
        if (b < 0x80u) {
            if (b == 0u && shift != 0u) {
                return NULL; /* `80 00`: padded, not the shortest form (PROTOCOL.md section 2) */
            }
            *v = result;
            return p;
        }
        shift += 7u;
    }
}

sig_err_t sig_varint_decode(const uint8_t *buf, size_t len, uint32_t *v, size_t *used)
{
    const uint8_t *q;
    if (buf == NULL || v == NULL || used == NULL) {
        return SIG_ERR_ARG;
    }
    q = sig__varint(buf, buf + len, v);
    if (q == NULL) {
        return SIG_ERR_MALFORMED;
    }
    *used = (size_t)(q - buf);
    return SIG_OK;
}

static uint32_t rd_varint(rd_t *r)
{
    uint32_t v = 0;
    size_t used = 0;
    sig_err_t e;
    if (r->err != SIG_OK) {
        return 0;
    }
    e = sig_varint_decode(r->p + r->pos, r->len - r->pos, &v, &used);
    if (e != SIG_OK) {
        rd_fail(r, e);
        return 0;
    }
    r->pos += used;
    return v;
}

static sig_bytes_t rd_raw(rd_t *r, uint32_t n)
{
    sig_bytes_t b;
    b.ptr = r->p + r->pos;
    b.len = 0;
    if (r->err != SIG_OK) {
        return b;
    }
    if (n > r->len - r->pos) {
        rd_fail(r, SIG_ERR_MALFORMED);
        return b;
    }
    b.len = (size_t)n; /* n <= the bytes left: fits size_t */
    r->pos += (size_t)n;
    return b;
}

bool sig__utf8_ok(const uint8_t *p, size_t n)
{
#if SIG_CONFIG_CHECK_UTF8
    const uint8_t *end = p + n;
    while (p != end) {
        uint8_t c = *p++, lo = 0x80u, hi = 0xBFu;
        unsigned need;
        if (c < 0x80u) {
            continue;
        }
        if (c < 0xC2u || c > 0xF4u) {
            return false;
        }
        need = c >= 0xF0u ? 3u : (c >= 0xE0u ? 2u : 1u);
        if (c == 0xE0u) {
            lo = 0xA0u; /* overlong */
        } else if (c == 0xEDu) {
            hi = 0x9Fu; /* surrogates */
        } else if (c == 0xF0u) {
            lo = 0x90u; /* overlong */
        } else if (c == 0xF4u) {
            hi = 0x8Fu; /* above U+10FFFF */
        }
        if (need > (size_t)(end - p)) {
            return false;
        }
        for (; need > 0u; need--) {
            uint8_t d = *p++;
            if (d < lo || d > hi) {
                return false;
            }
            lo = 0x80u;
            hi = 0xBFu;
        }
    }
#else
    (void)p;
    (void)n;
#endif
    return true;
}

static bool utf8_valid(sig_bytes_t s)
{
    return sig__utf8_ok(s.ptr, s.len);
}

static sig_bytes_t rd_name(rd_t *r, bool optional)
{
    uint32_t n = rd_varint(r);
    sig_bytes_t b;
    if (r->err == SIG_OK && ((n == 0u && !optional) || n > SIG_MAX_NAME)) {
        rd_fail(r, SIG_ERR_INVALID_NAME);
    }
    b = rd_raw(r, n);
    if (r->err == SIG_OK && !utf8_valid(b)) {
        rd_fail(r, SIG_ERR_INVALID_NAME);
    }
    return b;
}

static sig_bytes_t rd_text(rd_t *r)
{
    sig_bytes_t b = rd_raw(r, rd_varint(r));
    if (r->err == SIG_OK && !utf8_valid(b)) {
        rd_fail(r, SIG_ERR_MALFORMED);
    }
    return b;
}

static sig_bytes_t rd_rest(rd_t *r)
{
    sig_bytes_t b;
    b.ptr = r->p + r->pos;
    b.len = r->err == SIG_OK ? r->len - r->pos : 0u;
    r->pos = r->len;
    return b;
}

/* sender_ref, event_ref, listener_id: at least 1 (MALFORMED otherwise) */
static uint32_t rd_ref(rd_t *r)
{
    uint32_t v = rd_varint(r);
    if (r->err == SIG_OK && v == 0u) {
        rd_fail(r, SIG_ERR_MALFORMED);
    }
    return v;
}

/* HELLO and WELCOME max_body: at least SIG_MIN_MAX_BODY (MALFORMED otherwise) */
static uint32_t rd_max_body(rd_t *r)
{
    uint32_t v = rd_varint(r);
    if (r->err == SIG_OK && v < SIG_MIN_MAX_BODY) {
        rd_fail(r, SIG_ERR_MALFORMED);
    }
    return v;
}

static uint32_t rd_version(rd_t *r)
{
    uint32_t v = rd_varint(r);
    if (r->err == SIG_OK && v != SIG_PROTOCOL_VERSION) {
        rd_fail(r, SIG_ERR_UNSUPPORTED_VERSION);
    }
    return v;
}

#if SIG_CONFIG_FULL_CODEC
static uint32_t rd_count(rd_t *r)
{
    uint32_t n = rd_varint(r);
    if (r->err == SIG_OK && n > r->len - r->pos) {
        rd_fail(r, SIG_ERR_MALFORMED); /* every element takes at least one byte */
    }
    return n;
}
#endif

sig_err_t sig_msg_decode(const uint8_t *body, size_t len, sig_msg_t *m)
{
    rd_t r;
    bool has_data = false;
    uint8_t header;
    if (m == NULL || (body == NULL && len > 0u)) {
        return SIG_ERR_ARG;
    }
    if (len == 0u) {
        return SIG_ERR_MALFORMED;
    }
    header = body[0];
    if (header & (SIG_HEADER_FLAG_AUTH | SIG_HEADER_FLAG_SEQ)) {
        return SIG_ERR_UNSUPPORTED_FEATURE;
    }
    r.p = body;
    r.len = len;
    r.pos = 1;
    r.err = SIG_OK;
    m->type = (sig_msg_type_t)header;
    switch (header) {
    case SIG_MSG_WELCOME:
        m->u.welcome.version = rd_version(&r);
        m->u.welcome.name = rd_name(&r, false);
        m->u.welcome.max_body = rd_max_body(&r);
        m->u.welcome.keepalive_ms = rd_varint(&r);
        m->u.welcome.features = rd_varint(&r);
        break;
    case SIG_MSG_PING:
    case SIG_MSG_PONG:
        m->u.ping.token = rd_varint(&r);
        break;
    case SIG_MSG_INVITE:
        break;
    case SIG_MSG_ERROR:
        m->u.error.code = rd_varint(&r);
        m->u.error.about = rd_varint(&r);
        if (r.err == SIG_OK && m->u.error.about > SIG_HEADER_TYPE_MASK) {
            rd_fail(&r, SIG_ERR_MALFORMED); /* not a message type */
        }
        m->u.error.ref = rd_varint(&r);
        m->u.error.message = rd_text(&r);
        break;
    case SIG_MSG_ACK:
        m->u.ack.seq = rd_varint(&r);
        break;
    case SIG_MSG_SENDER_REGISTERED:
    case SIG_MSG_LISTENING:
        m->u.ref.ref = rd_ref(&r);
        break;
    case SIG_MSG_EVENT:
        m->u.event.sender = rd_name(&r, false);
        m->u.event.event = rd_name(&r, false);
        m->u.event.data = rd_rest(&r);
        has_data = true;
        break;
    case SIG_MSG_REQUEST:
        m->u.request.request_id = rd_varint(&r);
        m->u.request.sender = rd_name(&r, false);
        m->u.request.method = rd_name(&r, false);
        m->u.request.data = rd_rest(&r);
        has_data = true;
        break;
    case SIG_MSG_RESPONSE:
        m->u.response.request_id = rd_varint(&r);
        m->u.response.status = rd_varint(&r);
        m->u.response.message = rd_text(&r);
        m->u.response.data = rd_rest(&r);
        has_data = true;
        break;
    case SIG_MSG_RETAINED:
        m->u.retained.sender = rd_name(&r, false);
        m->u.retained.event = rd_name(&r, false);
        m->u.retained.flags = rd_raw(&r, 1u).len == 1u ? body[r.pos - 1u] : 0u;
        if (r.err == SIG_OK && (m->u.retained.flags & ~SIG_RETAINED_FLAG_STALE)) {
            rd_fail(&r, SIG_ERR_MALFORMED);
        }
        m->u.retained.data = rd_rest(&r);
        has_data = true;
        break;
    case SIG_MSG_HELLO:
    case SIG_MSG_REGISTER_SENDER:
    case SIG_MSG_UNREGISTER_SENDER:
    case SIG_MSG_LISTEN:
    case SIG_MSG_UNLISTEN:
    case SIG_MSG_TRIGGER:
#if SIG_CONFIG_FULL_CODEC
        switch (header) {
        case SIG_MSG_HELLO:
            m->u.hello.version = rd_version(&r);
            m->u.hello.name = rd_name(&r, false);
            m->u.hello.max_body = rd_max_body(&r);
            m->u.hello.keepalive_ms = rd_varint(&r);
            m->u.hello.features = rd_varint(&r);
            m->u.hello.credentials = rd_raw(&r, rd_varint(&r));
            break;
        case SIG_MSG_REGISTER_SENDER: {
            uint32_t i;
            size_t start;
            m->u.register_sender.sender_ref = rd_ref(&r);
            m->u.register_sender.name = rd_name(&r, false);
            m->u.register_sender.flags = rd_raw(&r, 1u).len == 1u ? body[r.pos - 1u] : 0u;
            if (r.err == SIG_OK && (m->u.register_sender.flags & ~SIG_REGISTER_FLAG_DEFAULT_HANDLER)) {
                rd_fail(&r, SIG_ERR_MALFORMED);
            }
            m->u.register_sender.events = NULL;
            m->u.register_sender.methods = NULL;
            m->u.register_sender.n_events = rd_count(&r);
            start = r.pos;
            for (i = 0; i < m->u.register_sender.n_events && r.err == SIG_OK; i++) {
                (void)rd_ref(&r);
                (void)rd_name(&r, false);
            }
            m->u.register_sender.n_methods = rd_count(&r);
            for (i = 0; i < m->u.register_sender.n_methods && r.err == SIG_OK; i++) {
                (void)rd_name(&r, false);
            }
            m->u.register_sender.lists.ptr = body + start;
            m->u.register_sender.lists.len = r.pos - start;
            m->u.register_sender.meta = rd_rest(&r); /* the codec carries meta raw, like data */
            has_data = true;
            break;
        }
        case SIG_MSG_LISTEN:
            m->u.listen.listener_id = rd_ref(&r);
            m->u.listen.sender = rd_name(&r, true);
            m->u.listen.event = rd_name(&r, true);
            m->u.listen.options = r.err == SIG_OK && r.pos < r.len ? rd_varint(&r) : 0u;
            if (r.err == SIG_OK && ((m->u.listen.options & ~SIG_LISTEN_OPTIONS_MASK) ||
                                    (m->u.listen.options & SIG_LISTEN_POLICY_MASK) == SIG_LISTEN_POLICY_MASK)) {
                rd_fail(&r, SIG_ERR_MALFORMED);
            }
            break;
        case SIG_MSG_TRIGGER:
            m->u.trigger.event_ref = rd_ref(&r);
            m->u.trigger.data = rd_rest(&r);
            has_data = true;
            break;
        default: /* UNREGISTER_SENDER, UNLISTEN */
            m->u.ref.ref = rd_ref(&r);
            break;
        }
        break;
#else
        return SIG_ERR_UNSUPPORTED;
#endif
    default:
        return SIG_ERR_UNKNOWN_TYPE;
    }
    if (r.err == SIG_OK && !has_data && r.pos != r.len) {
        r.err = SIG_ERR_MALFORMED; /* bytes after the last field */
    }
    return r.err;
}

void sig_reg_iter_init(sig_reg_iter_t *it, const sig_msg_t *m)
{
    it->p = m->u.register_sender.lists.ptr;
    it->end = it->p; /* NULL + 0 is undefined in C: add the length only when there is one */
    if (m->u.register_sender.lists.len > 0u) {
        it->end += m->u.register_sender.lists.len;
    }
    it->events_left = m->u.register_sender.n_events;
    it->methods_left = m->u.register_sender.n_methods;
    it->in_methods = false;
}

/* The lists were validated by sig_msg_decode; still, never read past end. */
static bool it_varint(sig_reg_iter_t *it, uint32_t *v)
{
    size_t used = 0;
    if (sig_varint_decode(it->p, (size_t)(it->end - it->p), v, &used) != SIG_OK) {
        return false;
    }
    it->p += used;
    return true;
}

static bool it_name(sig_reg_iter_t *it, sig_bytes_t *out)
{
    uint32_t n;
    if (!it_varint(it, &n) || n > (size_t)(it->end - it->p)) {
        return false;
    }
    out->ptr = it->p;
    out->len = (size_t)n;
    it->p += n;
    return true;
}

bool sig_reg_next_event(sig_reg_iter_t *it, sig_event_decl_t *out)
{
    if (it->in_methods || it->events_left == 0u) {
        return false;
    }
    it->events_left--;
    return it_varint(it, &out->ref) && it_name(it, &out->name);
}

bool sig_reg_next_method(sig_reg_iter_t *it, sig_bytes_t *out)
{
    uint32_t n;
    sig_event_decl_t skip;
    while (!it->in_methods) {
        if (!sig_reg_next_event(it, &skip)) {
            if (it->events_left != 0u || !it_varint(it, &n)) {
                return false;
            }
            it->in_methods = true;
        }
    }
    if (it->methods_left == 0u) {
        return false;
    }
    it->methods_left--;
    return it_name(it, out);
}

/* ---- the device's receive path ---- */

/* Field kinds, 3 bits each, first field in the low bits. */
#define K_VAR 1u  /* varint */
#define K_VER 2u  /* varint that must be SIG_PROTOCOL_VERSION */
#define K_NAME 3u /* name: 1..255 bytes of UTF-8 (INVALID_NAME otherwise) */
#define K_TEXT 4u /* text: UTF-8 (MALFORMED otherwise) */
#define K_DATA 5u /* all remaining bytes */
#define K_FLAG 6u /* one byte, 0 or 1 (RETAINED's stale bit; any other bit MALFORMED) */
#define F(a, b, c, d, e) ((a) | (b) << 3 | (c) << 6 | (d) << 9 | (e) << 12)
#define SPEC_UNKNOWN 0x8000u
#define SPEC_IGNORE 0x8001u

/* Types 0x00-0x07, 0x10-0x17, 0x20-0x24 at SIG__RX_INDEX(t). */
static const uint16_t RX_SPECS[21] SIG__ROM = { /* in flash on AVR too */
    SPEC_UNKNOWN,                                /* 0x00 */
    SPEC_IGNORE,                                 /* HELLO */
    F(K_VER, K_NAME, K_VAR, K_VAR, K_VAR),       /* WELCOME */
    F(K_VAR, 0, 0, 0, 0),                        /* PING */
    F(K_VAR, 0, 0, 0, 0),                        /* PONG */
    0,                                           /* INVITE */
    F(K_VAR, K_VAR, K_VAR, K_TEXT, 0),           /* ERROR: code, about, ref, message */
    F(K_VAR, 0, 0, 0, 0),                        /* ACK */
    SPEC_IGNORE,                                 /* REGISTER_SENDER */
    F(K_VAR, 0, 0, 0, 0),                        /* SENDER_REGISTERED */
    SPEC_IGNORE,                                 /* UNREGISTER_SENDER */
    SPEC_IGNORE,                                 /* LISTEN */
    F(K_VAR, 0, 0, 0, 0),                        /* LISTENING */
    SPEC_IGNORE,                                 /* UNLISTEN */
    SPEC_UNKNOWN,                                /* 0x16 */
    SPEC_UNKNOWN,                                /* 0x17 */
    SPEC_IGNORE,                                 /* TRIGGER */
    F(K_NAME, K_NAME, K_DATA, 0, 0),             /* EVENT */
    F(K_VAR, K_NAME, K_NAME, K_DATA, 0),         /* REQUEST */
    F(K_VAR, K_VAR, K_TEXT, K_DATA, 0),          /* RESPONSE */
    F(K_NAME, K_NAME, K_FLAG, K_DATA, 0),        /* RETAINED */
};

uint8_t sig__rx_parse(const uint8_t *body, size_t len, sig__rx_msg_t *m)
{
    const uint8_t *p = body, *end;
    uint32_t *num = m->num;
    sig_bytes_t *str = m->str;
    unsigned spec;
    uint8_t t;
    if (len == 0u) {
        return SIG_CODE_MALFORMED;
    }
    end = body + len; /* not before: body may be NULL when len is 0 */
    t = *p++;
    if (t & (SIG_HEADER_FLAG_AUTH | SIG_HEADER_FLAG_SEQ)) {
        return SIG_CODE_UNSUPPORTED_FEATURE;
    }
    spec = (t & 0x08u) || t > SIG_MSG_RETAINED ? SPEC_UNKNOWN : SIG__ROM_U16(&RX_SPECS[SIG__RX_INDEX(t)]);
    if (spec == SPEC_UNKNOWN) {
        return SIG_CODE_UNKNOWN_TYPE;
    }
    if (spec == SPEC_IGNORE) {
        return SIG__RX_IGNORE;
    }
    for (; spec != 0u; spec >>= 3) {
        unsigned k = spec & 7u;
        uint32_t v = 0;
        size_t n;
        if (k == K_DATA) {
            n = (size_t)(end - p);
        } else if (k == K_FLAG) {
            if (p == end || *p > SIG_RETAINED_FLAG_STALE) {
                return SIG_CODE_MALFORMED;
            }
            *num++ = *p++;
            continue;
        } else {
            p = sig__varint(p, end, &v);
            if (p == NULL) {
                return SIG_CODE_MALFORMED;
            }
            if (k <= K_VER) {
                if (k == K_VER && v != SIG_PROTOCOL_VERSION) {
                    return SIG_CODE_UNSUPPORTED_VERSION;
                }
                *num++ = v;
                continue;
            }
            if (k == K_NAME && v - 1u >= SIG_MAX_NAME) {
                return SIG_CODE_INVALID_NAME; /* 0 or above 255 */
            }
            if (v > (size_t)(end - p)) {
                return SIG_CODE_MALFORMED;
            }
            n = (size_t)v; /* v <= the bytes left: fits size_t */
            if (!sig__utf8_ok(p, n)) {
                return k == K_NAME ? SIG_CODE_INVALID_NAME : SIG_CODE_MALFORMED;
            }
        }
        str->ptr = p;
        str->len = n;
        str++;
        p += n;
    }
    if (p != end) {
        return SIG_CODE_MALFORMED; /* bytes after the last field */
    }
    /* PROTOCOL.md section 2: ids are at least 1, an ERROR is about a type,
     * a WELCOME's max_body at least SIG_MIN_MAX_BODY */
    if (((t == SIG_MSG_SENDER_REGISTERED || t == SIG_MSG_LISTENING) && m->num[0] == 0u) ||
        (t == SIG_MSG_ERROR && m->num[1] > SIG_HEADER_TYPE_MASK) ||
        (t == SIG_MSG_WELCOME && m->num[1] < SIG_MIN_MAX_BODY)) {
        return SIG_CODE_MALFORMED;
    }
    return 0u;
}
