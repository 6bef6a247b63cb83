/* Device session (PROTOCOL.md section 3, device side) and local dispatch of
 * EVENTs by the routing rules of section 4.
 *
 * States: IDLE (before sig_device_start) -> HELLO (HELLO sent, waiting for
 * WELCOME; HELLO repeated every retry period) -> ONLINE (registrations sent;
 * keepalive runs). ONLINE -> HELLO on INVITE, on ERROR(NO_SESSION) and when
 * nothing valid was received for 3 x keepalive_ms. A WELCOME in state HELLO
 * opens the session and sends every registration; in ONLINE it is ignored,
 * and so are INVITE and ERROR(NO_SESSION) in HELLO (the HELLO retry covers a
 * lost HELLO): an INVITE that crossed the HELLO must not make a second one,
 * whose WELCOME would register everything twice (PROTOCOL.md section 3). */
#include <string.h>

#include "sig_internal.h"

enum { DEV_IDLE = SIG__DEV_IDLE, DEV_HELLO = SIG__DEV_HELLO, DEV_ONLINE = SIG__DEV_ONLINE };

static uint32_t now_ms(const sig_device_t *dev)
{
    return dev->plat.millis(dev->plat.ctx);
}

static void status(sig_device_t *dev, sig_status_t st, uint32_t ref)
{
    if (dev->on_status != NULL) {
        dev->on_status(dev, dev->user, st, ref);
    }
}

static bool name_ok(const char *s)
{
    size_t n;
    if (s == NULL) {
        return false;
    }
    n = sig__strlen(s);
    return n >= 1u && n <= SIG_MAX_NAME;
}

/* ---- sending ---- */

static bool out(sig_device_t *dev, const uint8_t *p, size_t n)
{
    if (!dev->plat.write(dev->plat.ctx, p, n)) {
        dev->tx_torn = 1;
        return false;
    }
    return true;
}

#if SIG__TX_IN_PLACE
/* Frame the body at tx_buf[SIG__TX_HEAD..) in place and write the whole
 * frame with one write() call (one DMA transfer, one Serial.write): COBS
 * backwards, every zero becomes the distance to the next one, the code byte
 * goes in front and the delimiter behind; with a torn frame before, a lone
 * 0x00 in front of that. No run reaches 254 bytes in a body this small. */
static sig_err_t send_body(sig_device_t *dev, size_t len)
{
    uint8_t *base = dev->tx_buf, *p = base + SIG__TX_HEAD + len;
    uint16_t crc = sig_crc16(base + SIG__TX_HEAD, len);
    uint8_t code = 1;
    unsigned torn = dev->tx_torn;
    p[0] = (uint8_t)(crc >> 8);
    p[1] = (uint8_t)crc;
    p += SIG_CRC_SIZE;
    *p = 0u; /* the delimiter */
    while (p != base + SIG__TX_HEAD) {
        if (*--p == 0u) {
            *p = code;
            code = 1;
        } else {
            code++;
        }
    }
    base[1] = code;
    base[0] = 0u; /* sent only after a torn frame */
    if (!out(dev, base + 1 - torn, len + SIG_CRC_SIZE + 2u + torn)) {
        return SIG_ERR_IO;
    }
    dev->tx_torn = 0;
    dev->last_tx = now_ms(dev);
    return SIG_OK;
}
#else
/* Frame tx_buf[0..len) and write it block by block: COBS without a second
 * buffer (a code byte, then the run of non-zero bytes it stands for). Used
 * when SIG_CONFIG_TX_MAX_BODY is above 252 (a run of 254 bytes would need a
 * byte inserted) or SIG_CONFIG_TX_IN_PLACE is 0. */
static sig_err_t send_body(sig_device_t *dev, size_t len)
{
    static const uint8_t zero = 0u;
    uint8_t *p = dev->tx_buf, *end = p + len + SIG_CRC_SIZE;
    uint16_t crc = sig_crc16(p, len);
    p[len] = (uint8_t)(crc >> 8);
    p[len + 1u] = (uint8_t)crc;
    if (dev->tx_torn && !out(dev, &zero, 1u)) {
        return SIG_ERR_IO;
    }
    dev->tx_torn = 0;
    for (;;) {
        uint8_t *q = p;
        uint8_t code;
        while (q != end && *q != 0u && q - p < 254) {
            q++;
        }
        code = (uint8_t)(q - p + 1);
        if (!out(dev, &code, 1u) || (q != p && !out(dev, p, (size_t)(q - p)))) {
            return SIG_ERR_IO;
        }
        if (q == end) {
            break; /* also after a full block of 254: no extra code byte */
        }
        p = code == 0xFFu ? q : q + 1; /* skip the zero this block stands for */
    }
    if (!out(dev, &zero, 1u)) {
        return SIG_ERR_IO;
    }
    dev->last_tx = now_ms(dev);
    return SIG_OK;
}
#endif

static size_t tx_cap(const sig_device_t *dev)
{
    size_t cap = SIG_CONFIG_TX_MAX_BODY, peer = dev->peer_max_body;
#if SIG_CONFIG_AUTH
    if (dev->auth_key != NULL) { /* room for the counter and nonce; the tag comes after */
        cap += SIG_AUTH_HELLO_OVERHEAD - SIG_AUTH_TAG_LEN;
        peer = peer > SIG_AUTH_TAG_LEN ? peer - SIG_AUTH_TAG_LEN : 0u;
    }
#endif
#if SIG_CONFIG_RELIABLE
    if (dev->rel_on) { /* room for the sequence header (PROTOCOL.md section 5) */
        peer = peer > SIG__SEQ_ROOM ? peer - SIG__SEQ_ROOM : 0u;
    }
#endif
    return peer < cap ? peer : cap;
}

/* Every message a device sends starts with its type and a varint. The
 * per-message encoders below write into tx_buf with the sig__put_* helpers
 * (sticky error, capacity checked before each write); tx_send frames it. */
static void tx_begin(sig_device_t *dev, sig_wr_t *w, uint8_t type, uint32_t v)
{
    sig_cbor_writer_init(w, dev->tx_buf + SIG__TX_HEAD, tx_cap(dev));
    sig__put_varint(w, type); /* a byte below 0x80 is its own varint: one call less to link */
#if SIG_CONFIG_AUTH
    if (dev->auth_key != NULL) { /* the counter, and HELLO's nonce: sig__auth_seal fills them */
        size_t room = type == SIG_MSG_HELLO ? 4u + SIG_AUTH_NONCE_LEN : 4u;
        if (w->cap - w->len < room) {
            w->err = SIG_ERR_NO_SPACE;
        } else {
            w->len += room;
        }
    }
#endif
    sig__put_varint(w, v);
}

/* A C string (NULL = empty) as varint length + bytes: names were checked
 * (1..255) when they were given to the library; texts may be empty. */
static void put_cstr(sig_wr_t *w, const char *s)
{
    size_t n = s == NULL ? 0u : sig__strlen(s);
    sig__put_varint(w, (uint32_t)n);
    sig__put_name_bytes(w, s, n); /* from flash with SIG_CONFIG_NAMES_IN_FLASH on AVR */
}

/* A name of a sender description: not NULL, 1..255 bytes. A bad one sets
 * SIG_ERR_INVALID_NAME even over an earlier error (a full buffer), so the
 * dry run of sig_device_add_sender is also its name check. */
static void put_name(sig_wr_t *w, const char *s)
{
    if (s == NULL || sig__strlen(s) - 1u >= SIG_MAX_NAME) {
        w->err = SIG_ERR_INVALID_NAME;
    }
    put_cstr(w, s);
}

static sig_err_t tx_err(const sig_wr_t *w)
{
    return w->err == SIG_ERR_NO_SPACE ? SIG_ERR_TOO_LARGE : w->err;
}

static sig_err_t send_hello(sig_device_t *dev);

/* Sign (with a key) and frame the body at tx_buf[SIG__TX_HEAD..) of len bytes. */
static sig_err_t tx_frame(sig_device_t *dev, uint8_t *body, size_t len)
{
#if SIG_CONFIG_AUTH
    if (dev->auth_key != NULL) {
        if (dev->auth_tx == 0xFFFFFFFFu && (body[0] & SIG_HEADER_TYPE_MASK) != SIG_MSG_HELLO) {
            return send_hello(dev); /* the counter is used up: a new session */
        }
        return send_body(dev, sig__auth_seal(dev, body, len));
    }
#endif
    (void)body;
    return send_body(dev, len);
}

static sig_err_t tx_send(sig_device_t *dev, const sig_wr_t *w)
{
    sig_err_t e = tx_err(w);
    size_t len = w->len;
#if SIG_CONFIG_RELIABLE
    bool trig = dev->rel_trig != 0u;
    dev->rel_trig = 0;
    if (e == SIG_OK) { /* in a reliable session: numbered and kept, or BUSY */
        e = sig__rel_send(dev, w->buf, &len, trig, now_ms(dev));
        if (e == SIG__REL_END) {
            return send_hello(dev);
        }
    }
#endif
    if (e != SIG_OK) {
        return e;
    }
    return tx_frame(dev, w->buf, len);
}

/* PING or PONG (token v, no data); TRIGGER (event_ref v, data); ERROR
 * (code v, about = data's length, ref, message: msg and data are NULL, so the
 * message is empty) and RESPONSE (request_id v, status ref, message, data)
 * share their layout. */
static sig_err_t send_vv(sig_device_t *dev, uint8_t type, uint32_t v, uint32_t ref, const char *msg,
                         const uint8_t *data, size_t len)
{
    sig_wr_t w;
    tx_begin(dev, &w, type, v);
    if (type == SIG_MSG_ERROR) {
        sig__put_varint(&w, (uint32_t)len); /* about: the type answered */
        len = 0;
    }
    if (type == SIG_MSG_ERROR || type == SIG_MSG_RESPONSE) {
        sig__put_varint(&w, ref);
        put_cstr(&w, msg);
    }
    sig__put_raw(&w, data, len);
    return tx_send(dev, &w);
}

static sig_err_t send_short(sig_device_t *dev, uint8_t type, uint32_t v, uint32_t ref)
{
    return send_vv(dev, type, v, ref, NULL, NULL, 0);
}

static sig_err_t send_hello(sig_device_t *dev)
{
    sig_wr_t w;
    sig_err_t e;
    dev->state = DEV_HELLO;
    dev->keepalive_ms = 0;
    dev->peer_max_body = 0xFFFFu;
    dev->tx_torn = 1; /* a lone 0x00 first: the gateway drops any torn frame */
    dev->last_hello = now_ms(dev);
#if SIG_CONFIG_RELIABLE
    sig__rel_start(dev, false); /* a new session forgets the window (before tx_cap) */
#endif
#if SIG_CONFIG_AUTH
    if (dev->auth_key != NULL) { /* a new session: a new nonce, the gateway's comes in WELCOME */
        dev->auth_nonce(dev->user, dev->auth_nd);
        memset(dev->auth_ng, 0, sizeof dev->auth_ng);
        dev->auth_tx = dev->auth_rx = 0;
    }
#endif
    tx_begin(dev, &w, SIG_MSG_HELLO, SIG_PROTOCOL_VERSION);
    put_cstr(&w, dev->name);
    sig__put_varint(&w, dev->max_body);
    sig__put_varint(&w, dev->keepalive_req);
#if SIG_CONFIG_AUTH
    sig__put_varint(&w, (dev->auth_key != NULL ? SIG_FEATURE_AUTH : 0u) |
                            (SIG_CONFIG_RELIABLE ? SIG_FEATURE_RELIABLE : 0u)); /* features */
#else
    sig__put_varint(&w, SIG_CONFIG_RELIABLE ? SIG_FEATURE_RELIABLE : 0u); /* features (one byte) */
#endif
    sig__put_varint(&w, 0u); /* credentials: none (one byte 0x00) */
    e = tx_send(dev, &w);
    status(dev, SIG_STATUS_HELLO, 0);
    return e;
}

/* REGISTER_SENDER of sender i, built from its description d. */
static void encode_register(sig_device_t *dev, sig_wr_t *w, const sig_sender_desc_t *d, unsigned i)
{
    unsigned k;
    tx_begin(dev, w, SIG_MSG_REGISTER_SENDER, (uint32_t)i + 1u);
    put_name(w, d->name);
    sig__put_varint(w, d->default_handler != NULL ? SIG_REGISTER_FLAG_DEFAULT_HANDLER : 0u); /* one byte */
    sig__put_varint(w, d->n_events);
    for (k = 0; k < d->n_events; k++) {
        sig__put_varint(w, (uint32_t)i * SIG_CONFIG_MAX_EVENTS + k + 1u);
        put_name(w, d->events[k]);
    }
    sig__put_varint(w, d->n_methods);
    for (k = 0; k < d->n_methods; k++) {
        put_name(w, d->methods[k].name);
    }
    sig__put_name_bytes(w, (const char *)d->meta, d->meta_len); /* a CBOR map, or nothing */
}

static sig_err_t send_register(sig_device_t *dev, unsigned i)
{
    sig_wr_t w;
    encode_register(dev, &w, dev->senders[i], i);
    return tx_send(dev, &w);
}

static sig_err_t send_listen(sig_device_t *dev, unsigned i)
{
    sig_wr_t w;
    tx_begin(dev, &w, SIG_MSG_LISTEN, (uint32_t)i + 1u);
    put_cstr(&w, dev->listeners[i].sender);
    put_cstr(&w, dev->listeners[i].event);
    if (dev->listen_opts[i] != 0u) { /* options 0 is written as nothing */
        sig__put_varint(&w, dev->listen_opts[i]);
    }
    return tx_send(dev, &w);
}

static sig_err_t first_err(sig_err_t a, sig_err_t b)
{
    return a != SIG_OK ? a : b;
}

#if SIG_CONFIG_RELIABLE
/* The registrations of this session not sent yet (rel_todo), in slot order,
 * as far as the window takes them: at WELCOME, for a sender or listener
 * added while online, and after each ACK that makes room. */
static sig_err_t rel_pump(sig_device_t *dev)
{
    sig_err_t e = SIG_OK;
    unsigned i;
    for (i = 0; i < SIG_CONFIG_MAX_SENDERS + SIG_CONFIG_MAX_LISTENERS && dev->state == DEV_ONLINE; i++) {
        bool used = i < SIG_CONFIG_MAX_SENDERS ? dev->senders[i] != NULL
                                               : dev->listeners[i - SIG_CONFIG_MAX_SENDERS].cb != NULL;
        if (!(dev->rel_todo >> i & 1u)) {
            continue;
        }
        if (used && !sig__rel_room(dev)) {
            break;
        }
        dev->rel_todo &= ~((uint32_t)1u << i);
        if (used) {
            e = first_err(e, i < SIG_CONFIG_MAX_SENDERS ? send_register(dev, i) : send_listen(dev, i - SIG_CONFIG_MAX_SENDERS));
        }
    }
    return e;
}

/* Send every kept frame again, oldest first (signed again with a new counter). */
static sig_err_t rel_resend(sig_device_t *dev)
{
    sig_err_t e = SIG_OK;
    uint8_t *body = dev->tx_buf + SIG__TX_HEAD;
    unsigned i;
    for (i = 0; i < dev->rel_kept && dev->state == DEV_ONLINE; i++) {
        e = first_err(e, tx_frame(dev, body, sig__rel_copy(dev, i, body)));
    }
    return e;
}

/* What handling a received frame returned: SIG_ERR_BUSY only when an answer
 * of the library's own found the window full (a handler's or a listener's
 * calls return to the application, not here). Counted, and returned. */
static sig_err_t rel_dropped(sig_device_t *dev, sig_err_t e)
{
    if (e == SIG_ERR_BUSY) {
        dev->rel_stats.reliable_dropped++;
    }
    return e;
}

/* Take back slot i (sender i, or listener i - SIG_CONFIG_MAX_SENDERS) of a
 * reliable session: 1 when its registration was never sent (nothing to take
 * back), -1 when the window is full (SIG_ERR_BUSY, nothing changes), else 0. */
static int rel_take_back(sig_device_t *dev, unsigned i)
{
    uint32_t bit = (uint32_t)1u << i;
    if (dev->state == DEV_ONLINE && (dev->rel_todo & bit) != 0u) {
        dev->rel_todo &= ~bit;
        return 1;
    }
    return dev->state == DEV_ONLINE && !sig__rel_room(dev) ? -1 : 0;
}
#endif

/* ---- public: setup ---- */

sig_err_t sig_device_init_checked(sig_device_t *dev, const sig_device_config_t *cfg, uint32_t fingerprint)
{
    volatile uint8_t *p; /* volatile: a plain loop would become a call to memset */
    size_t i;
    if (fingerprint != SIG_CONFIG_FINGERPRINT) {
        return SIG_ERR_CONFIG; /* first: *dev may be smaller than this library's sig_device_t */
    }
    if (dev == NULL || cfg == NULL || !name_ok(cfg->name) || cfg->platform.write == NULL ||
        cfg->platform.millis == NULL || cfg->max_body > SIG_CONFIG_MAX_BODY ||
        (cfg->max_body != 0u && cfg->max_body < 3u)) {
        return SIG_ERR_ARG;
    }
    p = (volatile uint8_t *)dev;
    for (i = 0; i < sizeof *dev; i++) {
        p[i] = 0u;
    }
    dev->plat = cfg->platform;
    dev->name = cfg->name;
    dev->on_status = cfg->on_status;
    dev->on_error = cfg->on_error;
    dev->user = cfg->user;
    dev->max_body = cfg->max_body != 0u ? cfg->max_body : (uint16_t)SIG_CONFIG_MAX_BODY;
    dev->keepalive_req = cfg->keepalive_ms;
    dev->next_request_id = 1;
#if SIG_CONFIG_AUTH
    if (cfg->auth_key != NULL && cfg->auth_nonce == NULL) {
        return SIG_ERR_ARG;
    }
    dev->auth_key = cfg->auth_key;
    dev->auth_nonce = cfg->auth_nonce;
#endif
    /* state DEV_IDLE (0) by the zeroing; peer_max_body is set by send_hello
     * and lifted by add_sender's dry run, the only encoders before WELCOME */
    return sig_rx_init(&dev->rx, dev->rx_buf, sizeof dev->rx_buf, dev->max_body);
}

sig_err_t sig_device_add_sender(sig_device_t *dev, const sig_sender_desc_t *desc, sig_sender_t *out_h)
{
    unsigned k, i;
    sig_wr_t w;
    sig_err_t e;
    uint16_t peer;
    if (dev == NULL || desc == NULL || desc->n_events > SIG_CONFIG_MAX_EVENTS ||
        (desc->n_events > 0u && desc->events == NULL) || (desc->n_methods > 0u && desc->methods == NULL) ||
        (desc->meta == NULL && desc->meta_len > 0u)) {
        return SIG_ERR_ARG;
    }
    for (k = 0; k < desc->n_methods; k++) {
        if (desc->methods[k].handler == NULL) {
            return SIG_ERR_ARG;
        }
    }
    /* dry run: checks every name (SIG_ERR_INVALID_NAME -> ARG, before FULL)
     * and that the registration fits the transmit buffer */
    for (i = 0; i < SIG_CONFIG_MAX_SENDERS && dev->senders[i] != NULL; i++) {
    } /* the first free slot (never used, or removed) */
    peer = dev->peer_max_body; /* the dry run is against SIG_CONFIG_TX_MAX_BODY alone */
    dev->peer_max_body = 0xFFFFu;
    encode_register(dev, &w, desc, i);
    dev->peer_max_body = peer;
    e = tx_err(&w);
    if (e == SIG_ERR_INVALID_NAME) {
        return SIG_ERR_ARG;
    }
    if (i >= SIG_CONFIG_MAX_SENDERS) {
        return SIG_ERR_FULL;
    }
    if (e != SIG_OK) {
        return e;
    }
    dev->senders[i] = desc;
    if (out_h != NULL) {
        *out_h = (sig_sender_t)i;
    }
#if SIG_CONFIG_RELIABLE
    dev->rel_todo |= (uint32_t)1u << i; /* sent when the window has room */
    return rel_pump(dev);
#else
    return dev->state == DEV_ONLINE ? send_register(dev, i) : SIG_OK;
#endif
}

sig_err_t sig_device_event(const sig_device_t *dev, sig_sender_t sender, uint8_t index,
                           sig_event_ref_t *out_ref)
{
    if (dev == NULL || out_ref == NULL || sender >= SIG_CONFIG_MAX_SENDERS || dev->senders[sender] == NULL ||
        index >= dev->senders[sender]->n_events) {
        return SIG_ERR_NOT_FOUND;
    }
    *out_ref = (sig_event_ref_t)((unsigned)sender * SIG_CONFIG_MAX_EVENTS + index + 1u);
    return SIG_OK;
}

sig_err_t sig_device_listen_opts(sig_device_t *dev, const char *sender, const char *event,
                                 uint8_t options, sig_event_cb cb, void *user, uint8_t *out_h)
{
    unsigned i;
    if (dev == NULL || cb == NULL || (sender != NULL && !name_ok(sender)) ||
        (event != NULL && !name_ok(event)) || options > SIG_LISTEN_OPTIONS_MASK - 1u ||
        (options & SIG_LISTEN_POLICY_MASK) == SIG_LISTEN_POLICY_MASK) { /* bits 0-2 only, policy not 3 */
        return SIG_ERR_ARG;
    }
    for (i = 0; i < SIG_CONFIG_MAX_LISTENERS && dev->listeners[i].cb != NULL; i++) {
    } /* the first free slot (never used, or removed) */
    if (i >= SIG_CONFIG_MAX_LISTENERS) {
        return SIG_ERR_FULL;
    }
    dev->listeners[i].sender = sender;
    dev->listeners[i].event = event;
    dev->listeners[i].cb = cb;
    dev->listeners[i].user = user;
    dev->listen_opts[i] = options;
    if (out_h != NULL) {
        *out_h = (uint8_t)i;
    }
#if SIG_CONFIG_RELIABLE
    dev->rel_todo |= (uint32_t)1u << (SIG_CONFIG_MAX_SENDERS + i); /* sent when the window has room */
    return rel_pump(dev);
#else
    return dev->state == DEV_ONLINE ? send_listen(dev, i) : SIG_OK;
#endif
}

sig_err_t sig_device_start(sig_device_t *dev)
{
    if (dev == NULL) {
        return SIG_ERR_ARG;
    }
    dev->last_rx = now_ms(dev);
    return send_hello(dev);
}

/* ---- receiving ---- */

static sig_err_t respond(sig_device_t *dev, uint32_t id, uint32_t st, const char *msg,
                         const uint8_t *data, size_t len)
{
    return send_vv(dev, SIG_MSG_RESPONSE, id, st, msg, data, len);
}

static bool data_ok(sig_device_t *dev, sig_bytes_t data)
{
#if SIG_CONFIG_CHECK_DATA
    if (sig_cbor_check_data(data.ptr, data.len) != SIG_OK) {
        dev->data_dropped++;
        status(dev, SIG_STATUS_DATA_DROPPED, dev->data_dropped);
        return false;
    }
#else
    (void)dev;
    (void)data;
#endif
    return true;
}

/* An EVENT (flags 0) or a RETAINED (SIG_EVENT_RETAINED, and SIG_EVENT_STALE
 * from its stale bit in num[0]) to every matching listener. */
static void dispatch_event(sig_device_t *dev, const sig__rx_msg_t *m, uint8_t flags)
{
    sig_event_t ev;
    unsigned i;
    ev.sender = m->str[0];
    ev.event = m->str[1];
    ev.data = m->str[2];
    ev.flags = flags;
    for (i = 0; i < SIG_CONFIG_MAX_LISTENERS; i++) {
        const char *ls = dev->listeners[i].sender, *le = dev->listeners[i].event;
        if (dev->listeners[i].cb == NULL || (ls == NULL && le != NULL && ev.event.ptr[0] != (uint8_t)'#')) {
            continue; /* (none, e) is a channel listener: '#' events only */
        }
        if ((ls == NULL || sig__name_eq(ev.sender, ls)) && (le == NULL || sig__name_eq(ev.event, le))) {
            dev->listeners[i].cb(dev, dev->listeners[i].user, &ev);
        }
    }
}

static sig_err_t dispatch_request(sig_device_t *dev, const sig__rx_msg_t *m, bool good_data)
{
    sig_request_t req;
    unsigned i, k;
    uint32_t code = SIG_CODE_NO_SUCH_SENDER;
    req.request_id = m->num[0];
    req.sender = m->str[0];
    req.method = m->str[1];
    req.data = m->str[2];
    if (!good_data) {
        code = SIG_CODE_MALFORMED; /* PROTOCOL.md section 2: params not one CBOR item */
    } else {
        for (i = 0; i < SIG_CONFIG_MAX_SENDERS; i++) {
            const sig_sender_desc_t *d = dev->senders[i];
            sig_request_cb h;
            if (d == NULL || !sig__name_eq(req.sender, d->name)) {
                continue; /* removed, or another */
            }
            h = d->default_handler;
            for (k = 0; k < d->n_methods; k++) {
                if (sig__name_eq(req.method, d->methods[k].name)) {
                    h = d->methods[k].handler;
                    break;
                }
            }
            if (h != NULL) {
                h(dev, d->user, &req);
                return SIG_OK;
            }
            code = SIG_CODE_NO_SUCH_METHOD;
            break;
        }
    }
    return respond(dev, req.request_id, code, NULL, NULL, 0);
}

/* Outcomes of pending requests, the slot freed before the callback: with m,
 * the RESPONSE m to its request (status MALFORMED and no data when its data
 * is bad); without, SIG_CODE_TIMEOUT to every request whose deadline is past
 * at `now`. */
static void settle(sig_device_t *dev, const sig__rx_msg_t *m, bool good_data, uint32_t now)
{
    unsigned i;
    for (i = 0; i < SIG_CONFIG_MAX_PENDING; i++) {
        sig_response_cb cb = dev->pending[i].cb;
        sig_response_t resp;
        if (cb == NULL || (m != NULL ? dev->pending[i].id != m->num[0]
                                     : (int32_t)(now - dev->pending[i].deadline) < 0)) {
            continue;
        }
        dev->pending[i].cb = NULL;
        resp.request_id = dev->pending[i].id;
        resp.status = SIG_CODE_TIMEOUT;
        resp.message.ptr = NULL;
        resp.message.len = 0;
        resp.data.ptr = NULL;
        resp.data.len = 0;
        if (m != NULL) {
            resp.status = good_data ? m->num[1] : SIG_CODE_MALFORMED;
            resp.message.ptr = m->str[0].ptr;
            resp.message.len = m->str[0].len;
            resp.data.ptr = m->str[1].ptr;
            /* no data when it is bad, nor for a failure (PROTOCOL.md section 2, "Errors") */
            resp.data.len = good_data && m->num[1] == 0u ? m->str[1].len : 0u;
        }
        cb(dev, dev->pending[i].user, &resp);
        if (m != NULL) {
            return;
        }
    }
}

static sig_err_t on_welcome(sig_device_t *dev, const sig__rx_msg_t *m)
{
    sig_err_t e = SIG_OK;
    unsigned i;
    uint32_t mb = m->num[1], ka = m->num[2];
    dev->state = DEV_ONLINE;
    dev->keepalive_ms = (uint16_t)(ka > 0xFFFFu ? 0xFFFFu : ka);
    dev->peer_max_body = (uint16_t)(mb > 0xFFFFu ? 0xFFFFu : mb);
#if SIG_CONFIG_RELIABLE
    /* granted or not, a new session; the registrations go as the window takes them */
    sig__rel_start(dev, (m->num[3] & SIG_FEATURE_RELIABLE) != 0u);
    status(dev, SIG_STATUS_WELCOME, 0);
    (void)i;
    (void)e;
    return rel_pump(dev);
#else
    status(dev, SIG_STATUS_WELCOME, 0);
#endif
    for (i = 0; i < SIG_CONFIG_MAX_SENDERS + SIG_CONFIG_MAX_LISTENERS && dev->state == DEV_ONLINE; i++) {
        if (i < SIG_CONFIG_MAX_SENDERS ? dev->senders[i] != NULL : dev->listeners[i - SIG_CONFIG_MAX_SENDERS].cb != NULL) {
            /* a free slot is not sent */
            e = first_err(e, i < SIG_CONFIG_MAX_SENDERS ? send_register(dev, i) : send_listen(dev, i - SIG_CONFIG_MAX_SENDERS));
        }
    }
    return e;
}

/* The answer to a body sig__rx_parse refused with `code` (PROTOCOL.md section
 * 2, "Errors"): none to an ERROR or to what a device ignores unread;
 * RESPONSE(request_id, code) to a REQUEST whose request_id parses, so that the
 * gateway matches it; else ERROR(code, about = its type, ref = the type byte
 * for UNKNOWN_TYPE, 1 for UNSUPPORTED_VERSION, the body's leading id for
 * the types that start with one, when it parses, else 0). */
static sig_err_t answer_bad(sig_device_t *dev, const uint8_t *body, size_t len, uint8_t code)
{
    uint8_t t = body[0], type = (uint8_t)(t & SIG_HEADER_TYPE_MASK);
    uint32_t ref = 0;
    if (code == SIG__RX_IGNORE || type == SIG_MSG_ERROR) {
        return SIG_OK;
    }
    if (code == SIG_CODE_UNKNOWN_TYPE || code == SIG_CODE_UNSUPPORTED_VERSION) {
        ref = code == SIG_CODE_UNKNOWN_TYPE ? t : SIG_PROTOCOL_VERSION;
    } else if ((t >= SIG_MSG_REGISTER_SENDER && t <= SIG_MSG_UNLISTEN) || t == SIG_MSG_TRIGGER ||
               t == SIG_MSG_REQUEST || t == SIG_MSG_RESPONSE) {
        if (sig__varint(body + 1, body + len, &ref) == NULL) {
            ref = 0; /* not even the id parses */
        } else if (t == SIG_MSG_REQUEST) {
            return respond(dev, ref, code, NULL, NULL, 0);
        }
    }
    return send_vv(dev, SIG_MSG_ERROR, code, ref, NULL, NULL, type);
}

/* One good frame: checked and dispatched in one pass by sig__rx_parse (no
 * sig_msg_t). PROTOCOL.md section 2: an unknown type is answered
 * ERROR(UNKNOWN_TYPE, ref = type), a WELCOME of another version
 * ERROR(UNSUPPORTED_VERSION, ref = 1), header flags and bad bodies
 * ERROR(code, ref = 0); an ERROR is never answered, not even a bad one. */
static sig_err_t on_frame(sig_device_t *dev, const uint8_t *body, size_t len)
{
    sig__rx_msg_t m;
    uint8_t t = body[0];
    uint8_t code;
    bool good_data = true;
    dev->last_rx = now_ms(dev);
    code = sig__rx_parse(body, len, &m);
#if SIG_CONFIG_FULL_CODEC
    if (code == SIG__RX_IGNORE) {
        /* the full codec also checks the messages only a gateway receives
         * (and a bad one is answered); a device build ignores them unread */
        sig_msg_t full;
        code = (uint8_t)sig_err_wire_code(sig_msg_decode(body, len, &full));
        if (code == 0u) {
            code = SIG__RX_IGNORE;
        }
    }
#endif
    if (code != 0u) {
        return answer_bad(dev, body, len, code);
    }
    if (t >= SIG_MSG_EVENT) { /* EVENT, REQUEST, RESPONSE: data is their last field */
        good_data = data_ok(dev, m.str[t == SIG_MSG_RESPONSE ? 1 : 2]);
    }
    switch (SIG__RX_INDEX(t)) { /* 0..20: a table of 21 entries, not 37 */
    case SIG__RX_INDEX(SIG_MSG_PING):
        return send_short(dev, SIG_MSG_PONG, m.num[0], 0);
    case SIG__RX_INDEX(SIG_MSG_WELCOME):
        return dev->state == DEV_HELLO ? on_welcome(dev, &m) : SIG_OK; /* one WELCOME a session */
    case SIG__RX_INDEX(SIG_MSG_ERROR):
        if (dev->on_error != NULL) {
            dev->on_error(dev, dev->user, m.num[0], m.num[1], m.num[2], m.str[0]);
        }
        if (m.num[0] != SIG_CODE_NO_SESSION) {
            return SIG_OK;
        }
        /* ERROR(NO_SESSION) starts over like INVITE */
        /* fall through */
    case SIG__RX_INDEX(SIG_MSG_INVITE):
        if (dev->state == DEV_HELLO) {
            return SIG_OK; /* a HELLO is on its way: a second would cross its WELCOME */
        }
        status(dev, t == SIG_MSG_INVITE ? SIG_STATUS_INVITE : SIG_STATUS_NO_SESSION, 0);
        return send_hello(dev);
    case SIG__RX_INDEX(SIG_MSG_SENDER_REGISTERED):
    case SIG__RX_INDEX(SIG_MSG_LISTENING): /* ref = handle + 1 */
        /* the handle the gateway names, if it can be one (a free slot is not
         * filtered out: 24 B of flash for a status only a lying gateway sends) */
        if (m.num[0] - 1u < (t == SIG_MSG_LISTENING ? SIG_CONFIG_MAX_LISTENERS : SIG_CONFIG_MAX_SENDERS)) {
            status(dev, t == SIG_MSG_LISTENING ? SIG_STATUS_LISTENING : SIG_STATUS_REGISTERED, m.num[0] - 1u);
        }
        return SIG_OK;
    case SIG__RX_INDEX(SIG_MSG_EVENT):
    case SIG__RX_INDEX(SIG_MSG_RETAINED): /* a retained last value: delivered like an EVENT */
        if (good_data) {
            dispatch_event(dev, &m, t == SIG_MSG_EVENT ? 0u : (uint8_t)(SIG_EVENT_RETAINED | (m.num[0] << 1)));
        }
        return SIG_OK;
    case SIG__RX_INDEX(SIG_MSG_REQUEST):
        return dispatch_request(dev, &m, good_data);
    case SIG__RX_INDEX(SIG_MSG_RESPONSE):
        settle(dev, &m, good_data, 0);
        return SIG_OK;
#if SIG_CONFIG_RELIABLE
    case SIG__RX_INDEX(SIG_MSG_ACK): { /* room in the window: resend at once (a gap), or send more */
        sig_err_t e = sig__rel_ack(dev, m.num[0], dev->last_rx) ? rel_resend(dev) : SIG_OK;
        return first_err(e, rel_pump(dev));
    }
#endif
    default: /* PONG, ACK */
        return SIG_OK;
    }
}

sig_err_t sig_device_feed_byte(sig_device_t *dev, uint8_t byte)
{
    uint8_t *body = dev->rx.buf;
    size_t len;
    if (!sig_rx_feed(&dev->rx, byte)) {
        return SIG_OK;
    }
    len = dev->rx.len;
#if SIG_CONFIG_AUTH
    if (dev->auth_key != NULL) {
        len = sig__auth_open(dev, &body, len);
        if (len == 0u) {
            return SIG_OK; /* dropped and counted, never dispatched */
        }
    }
#endif
#if SIG_CONFIG_RELIABLE
    if ((body[0] & SIG_HEADER_FLAG_SEQ) && dev->rel_on) {
        sig_err_t e;
        uint32_t ack = 0;
        int r = sig__rel_receive(dev, &body, &len, &ack);
        dev->last_rx = now_ms(dev); /* every valid frame counts for the keepalive, duplicates too */
        if (r < 0) { /* not acknowledged; an ERROR is never answered */
            uint8_t type = (uint8_t)(body[0] & SIG_HEADER_TYPE_MASK);
            return type == SIG_MSG_ERROR ? SIG_OK /* about: the type answered, ref 0 */
                                         : rel_dropped(dev, send_vv(dev, SIG_MSG_ERROR, SIG_CODE_MALFORMED, 0, NULL, NULL, type));
        }
        e = send_short(dev, SIG_MSG_ACK, ack, 0);
        return r > 0 ? e : rel_dropped(dev, first_err(e, on_frame(dev, body, len)));
    }
    return rel_dropped(dev, on_frame(dev, body, len));
#else
    return on_frame(dev, body, len);
#endif
}

sig_err_t sig_device_feed(sig_device_t *dev, const uint8_t *buf, size_t len)
{
    sig_err_t e = SIG_OK;
    size_t i;
    if (dev == NULL || (buf == NULL && len > 0u)) {
        return SIG_ERR_ARG;
    }
    for (i = 0; i < len; i++) {
        e = first_err(e, sig_device_feed_byte(dev, buf[i]));
    }
    return e;
}

/* ---- timers ---- */

sig_err_t sig_device_poll(sig_device_t *dev)
{
    sig_err_t e = SIG_OK;
    uint32_t now;
    if (dev == NULL) {
        return SIG_ERR_ARG;
    }
    now = now_ms(dev);
    if (dev->state == DEV_HELLO) {
        /* PROTOCOL.md section 3.1: HELLO again every keepalive_ms (2 s if it
         * asked for none) until WELCOME; no link timeout before WELCOME */
        uint32_t retry = dev->keepalive_req != 0u ? dev->keepalive_req : SIG_CONFIG_HELLO_RETRY_MS;
        if (now - dev->last_hello >= retry) {
            e = send_hello(dev);
        }
    } else if (dev->state == DEV_ONLINE && dev->keepalive_ms != 0u) {
        if (now - dev->last_rx >= 3u * (uint32_t)dev->keepalive_ms) {
            status(dev, SIG_STATUS_LINK_TIMEOUT, 0);
            e = send_hello(dev);
        } else if (now - dev->last_tx >= dev->keepalive_ms) {
            e = send_short(dev, SIG_MSG_PING, ++dev->ping_token, 0);
        }
    }
#if SIG_CONFIG_RELIABLE
    if (dev->state == DEV_ONLINE) {
        int r = sig__rel_timer(dev, now);
        if (r == 2) { /* MAX_RETRIES retransmissions without an ACK: start over */
            status(dev, SIG_STATUS_RELIABLE_FAILED, 0);
            e = first_err(e, send_hello(dev));
        } else if (r == 1) {
            e = first_err(e, rel_resend(dev));
        }
    }
#endif
    settle(dev, NULL, true, now);
    return e;
}

/* ---- public: use ---- */

sig_err_t sig_device_trigger(sig_device_t *dev, sig_event_ref_t ev, const uint8_t *data, size_t len)
{
    uint32_t s, k;
    if (dev == NULL || ev == 0u || (data == NULL && len > 0u)) {
        return SIG_ERR_ARG;
    }
    s = ((uint32_t)ev - 1u) / SIG_CONFIG_MAX_EVENTS;
    k = ((uint32_t)ev - 1u) % SIG_CONFIG_MAX_EVENTS;
    if (s >= SIG_CONFIG_MAX_SENDERS || dev->senders[s] == NULL || k >= dev->senders[s]->n_events) {
        return SIG_ERR_NOT_FOUND;
    }
    if (dev->state != DEV_ONLINE) {
        return SIG_ERR_STATE;
    }
#if SIG_CONFIG_RELIABLE
    dev->rel_trig = (uint8_t)(k < 32u && (dev->senders[s]->reliable >> k & 1u)); /* tx_send reads it */
#endif
    return send_vv(dev, SIG_MSG_TRIGGER, ev, 0, NULL, data, len);
}

sig_err_t sig_device_request(sig_device_t *dev, const char *sender, const char *method,
                             const uint8_t *params, size_t len, uint32_t timeout_ms,
                             sig_response_cb cb, void *user, uint32_t *request_id)
{
    sig_wr_t w;
    sig_err_t e;
    unsigned i;
    if (dev == NULL || cb == NULL || !name_ok(sender) || !name_ok(method) ||
        (params == NULL && len > 0u) || timeout_ms > 0x7FFFFFFFu) {
        return SIG_ERR_ARG;
    }
    if (dev->state != DEV_ONLINE) {
        return SIG_ERR_STATE;
    }
    for (i = 0; i < SIG_CONFIG_MAX_PENDING && dev->pending[i].cb != NULL; i++) {
    }
    if (i == SIG_CONFIG_MAX_PENDING) {
        return SIG_ERR_FULL;
    }
    tx_begin(dev, &w, SIG_MSG_REQUEST, dev->next_request_id);
    put_cstr(&w, sender);
    put_cstr(&w, method);
    sig__put_raw(&w, params, len);
    e = tx_send(dev, &w);
    if (e != SIG_OK) {
        return e;
    }
    dev->pending[i].id = dev->next_request_id;
    dev->pending[i].deadline = now_ms(dev) + timeout_ms;
    dev->pending[i].cb = cb;
    dev->pending[i].user = user;
    if (request_id != NULL) {
        *request_id = dev->next_request_id;
    }
    dev->next_request_id = dev->next_request_id == 0xFFFFFFFFu ? 1u : dev->next_request_id + 1u;
    return SIG_OK;
}

sig_err_t sig_device_respond(sig_device_t *dev, uint32_t request_id, uint32_t st,
                             const char *message, const uint8_t *data, size_t len)
{
    if (dev == NULL || (data == NULL && len > 0u)) {
        return SIG_ERR_ARG;
    }
    if (dev->state != DEV_ONLINE) {
        return SIG_ERR_STATE;
    }
    return respond(dev, request_id, st, message, data, len);
}

bool sig_device_online(const sig_device_t *dev)
{
    return dev->state == DEV_ONLINE;
}

const sig_rx_stats_t *sig_device_rx_stats(const sig_device_t *dev)
{
    return &dev->rx.stats;
}

const sig_auth_stats_t *sig_device_auth_stats(const sig_device_t *dev)
{
#if SIG_CONFIG_AUTH
    return &dev->auth_stats;
#else
    static const sig_auth_stats_t none = {0, 0, 0};
    (void)dev;
    return &none;
#endif
}

const sig_reliable_stats_t *sig_device_reliable_stats(const sig_device_t *dev)
{
#if SIG_CONFIG_RELIABLE
    return &dev->rel_stats;
#else
    static const sig_reliable_stats_t none = {0, 0, 0, 0, 0, 0, 0};
    (void)dev;
    return &none;
#endif
}

bool sig_device_reliable(const sig_device_t *dev)
{
#if SIG_CONFIG_RELIABLE
    return dev->state == DEV_ONLINE && dev->rel_on != 0u;
#else
    (void)dev;
    return false;
#endif
}

uint8_t sig_device_unacked(const sig_device_t *dev)
{
#if SIG_CONFIG_RELIABLE
    return dev->state == DEV_ONLINE && dev->rel_on != 0u ? dev->rel_kept : 0u;
#else
    (void)dev;
    return 0;
#endif
}

uint16_t sig_device_keepalive_ms(const sig_device_t *dev)
{
    return dev->keepalive_ms;
}

/* ---- public: taking things back (not linked unless called) ---- */

sig_err_t sig_device_remove_sender(sig_device_t *dev, sig_sender_t sender)
{
    int sent = 0;
    if (dev == NULL || sender >= SIG_CONFIG_MAX_SENDERS || dev->senders[sender] == NULL) {
        return SIG_ERR_NOT_FOUND;
    }
#if SIG_CONFIG_RELIABLE
    sent = rel_take_back(dev, sender); /* never registered in this session, or no room */
    if (sent < 0) {
        dev->rel_stats.busy++;
        return SIG_ERR_BUSY;
    }
#endif
    dev->senders[sender] = NULL; /* free at once, even when the message below fails */
    return dev->state == DEV_ONLINE && sent == 0
               ? send_short(dev, SIG_MSG_UNREGISTER_SENDER, (uint32_t)sender + 1u, 0)
               : SIG_OK;
}

sig_err_t sig_device_unlisten(sig_device_t *dev, uint8_t listener)
{
    int sent = 0;
    if (dev == NULL || listener >= SIG_CONFIG_MAX_LISTENERS || dev->listeners[listener].cb == NULL) {
        return SIG_ERR_NOT_FOUND;
    }
#if SIG_CONFIG_RELIABLE
    sent = rel_take_back(dev, SIG_CONFIG_MAX_SENDERS + (unsigned)listener);
    if (sent < 0) {
        dev->rel_stats.busy++;
        return SIG_ERR_BUSY;
    }
#endif
    dev->listeners[listener].cb = NULL;
    return dev->state == DEV_ONLINE && sent == 0 ? send_short(dev, SIG_MSG_UNLISTEN, (uint32_t)listener + 1u, 0)
                                                 : SIG_OK;
}

sig_err_t sig_device_deinit(sig_device_t *dev)
{
    sig_err_t e = SIG_OK;
    unsigned i;
    if (dev == NULL) {
        return SIG_ERR_ARG;
    }
    /* PROTOCOL.md section 3, Close: on a UART the session ends with
     * UNREGISTER_SENDER for each sender; the listeners go first */
    for (i = 0; i < SIG_CONFIG_MAX_LISTENERS; i++) {
        if (dev->listeners[i].cb != NULL) {
            e = first_err(e, sig_device_unlisten(dev, (uint8_t)i));
        }
    }
    for (i = 0; i < SIG_CONFIG_MAX_SENDERS; i++) {
        if (dev->senders[i] != NULL) {
            e = first_err(e, sig_device_remove_sender(dev, (sig_sender_t)i));
        }
    }
    for (i = 0; i < SIG_CONFIG_MAX_PENDING; i++) {
        dev->pending[i].cb = NULL; /* no callback after deinit, not even TIMEOUT */
    }
    dev->state = DEV_IDLE; /* no timers: poll does nothing until init and start */
    dev->keepalive_ms = 0;
    return e;
}

/* Milliseconds from `elapsed` to `period` (0 when past). */
static uint32_t left(uint32_t period, uint32_t elapsed)
{
    return elapsed >= period ? 0u : period - elapsed;
}

uint32_t sig_device_next_deadline(const sig_device_t *dev)
{
    uint32_t now, best = SIG_NO_DEADLINE;
    unsigned i;
    if (dev == NULL) {
        return best;
    }
    now = now_ms(dev);
    if (dev->state == DEV_HELLO) {
        best = left(dev->keepalive_req != 0u ? dev->keepalive_req : SIG_CONFIG_HELLO_RETRY_MS, now - dev->last_hello);
    } else if (dev->state == DEV_ONLINE && dev->keepalive_ms != 0u) {
        uint32_t ping = left(dev->keepalive_ms, now - dev->last_tx);
        uint32_t link = left(3u * (uint32_t)dev->keepalive_ms, now - dev->last_rx);
        best = ping < link ? ping : link;
    }
#if SIG_CONFIG_RELIABLE
    if (dev->state == DEV_ONLINE) {
        uint32_t r = sig__rel_deadline(dev, now);
        best = r < best ? r : best;
    }
#endif
    for (i = 0; i < SIG_CONFIG_MAX_PENDING; i++) {
        if (dev->pending[i].cb != NULL) {
            int32_t d = (int32_t)(dev->pending[i].deadline - now);
            uint32_t t = d > 0 ? (uint32_t)d : 0u;
            best = t < best ? t : best;
        }
    }
    return best;
}
