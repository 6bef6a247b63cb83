#include <string.h>

#include "test_util.h"
#include "gw_codec.h"

static uint32_t rnd_state = 0x12345678u;

void rnd_seed(uint32_t seed)
{
    rnd_state = seed ? seed : 1u;
}

uint32_t rnd(void)
{
    uint32_t x = rnd_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rnd_state = x;
    return x;
}

int slice_eq(sig_bytes_t a, sig_bytes_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static int reg_next_event(const sig_msg_t *m, sig_reg_iter_t *it, uint32_t i, sig_event_decl_t *out)
{
    if (m->u.register_sender.events != NULL) {
        *out = m->u.register_sender.events[i];
        return 1;
    }
    return sig_reg_next_event(it, out);
}

static int reg_next_method(const sig_msg_t *m, sig_reg_iter_t *it, uint32_t i, sig_bytes_t *out)
{
    if (m->u.register_sender.methods != NULL) {
        *out = m->u.register_sender.methods[i];
        return 1;
    }
    return sig_reg_next_method(it, out);
}

int msg_eq(const sig_msg_t *a, const sig_msg_t *b)
{
    if (a->type != b->type) {
        return 0;
    }
    switch (a->type) {
    case SIG_MSG_HELLO:
        return a->u.hello.version == b->u.hello.version && slice_eq(a->u.hello.name, b->u.hello.name) &&
               a->u.hello.max_body == b->u.hello.max_body &&
               a->u.hello.keepalive_ms == b->u.hello.keepalive_ms &&
               a->u.hello.features == b->u.hello.features &&
               slice_eq(a->u.hello.credentials, b->u.hello.credentials);
    case SIG_MSG_WELCOME:
        return a->u.welcome.version == b->u.welcome.version &&
               slice_eq(a->u.welcome.name, b->u.welcome.name) &&
               a->u.welcome.max_body == b->u.welcome.max_body &&
               a->u.welcome.keepalive_ms == b->u.welcome.keepalive_ms &&
               a->u.welcome.features == b->u.welcome.features;
    case SIG_MSG_PING:
    case SIG_MSG_PONG:
        return a->u.ping.token == b->u.ping.token;
    case SIG_MSG_INVITE:
        return 1;
    case SIG_MSG_ERROR:
        return a->u.error.code == b->u.error.code && a->u.error.ref == b->u.error.ref &&
               a->u.error.about == b->u.error.about && slice_eq(a->u.error.message, b->u.error.message);
    case SIG_MSG_ACK:
        return a->u.ack.seq == b->u.ack.seq;
    case SIG_MSG_REGISTER_SENDER: {
        sig_reg_iter_t ia, ib;
        uint32_t i;
        if (a->u.register_sender.sender_ref != b->u.register_sender.sender_ref ||
            !slice_eq(a->u.register_sender.name, b->u.register_sender.name) ||
            a->u.register_sender.flags != b->u.register_sender.flags ||
            a->u.register_sender.n_events != b->u.register_sender.n_events ||
            a->u.register_sender.n_methods != b->u.register_sender.n_methods ||
            !slice_eq(a->u.register_sender.meta, b->u.register_sender.meta)) {
            return 0;
        }
        sig_reg_iter_init(&ia, a);
        sig_reg_iter_init(&ib, b);
        for (i = 0; i < a->u.register_sender.n_events; i++) {
            sig_event_decl_t ea, eb;
            if (!reg_next_event(a, &ia, i, &ea) || !reg_next_event(b, &ib, i, &eb) ||
                ea.ref != eb.ref || !slice_eq(ea.name, eb.name)) {
                return 0;
            }
        }
        for (i = 0; i < a->u.register_sender.n_methods; i++) {
            sig_bytes_t ma, mb;
            if (!reg_next_method(a, &ia, i, &ma) || !reg_next_method(b, &ib, i, &mb) || !slice_eq(ma, mb)) {
                return 0;
            }
        }
        return 1;
    }
    case SIG_MSG_SENDER_REGISTERED:
    case SIG_MSG_UNREGISTER_SENDER:
    case SIG_MSG_LISTENING:
    case SIG_MSG_UNLISTEN:
        return a->u.ref.ref == b->u.ref.ref;
    case SIG_MSG_LISTEN:
        return a->u.listen.listener_id == b->u.listen.listener_id &&
               slice_eq(a->u.listen.sender, b->u.listen.sender) &&
               slice_eq(a->u.listen.event, b->u.listen.event) && a->u.listen.options == b->u.listen.options;
    case SIG_MSG_TRIGGER:
        return a->u.trigger.event_ref == b->u.trigger.event_ref &&
               slice_eq(a->u.trigger.data, b->u.trigger.data);
    case SIG_MSG_EVENT:
        return slice_eq(a->u.event.sender, b->u.event.sender) &&
               slice_eq(a->u.event.event, b->u.event.event) && slice_eq(a->u.event.data, b->u.event.data);
    case SIG_MSG_REQUEST:
        return a->u.request.request_id == b->u.request.request_id &&
               slice_eq(a->u.request.sender, b->u.request.sender) &&
               slice_eq(a->u.request.method, b->u.request.method) &&
               slice_eq(a->u.request.data, b->u.request.data);
    case SIG_MSG_RESPONSE:
        return a->u.response.request_id == b->u.response.request_id &&
               a->u.response.status == b->u.response.status &&
               slice_eq(a->u.response.message, b->u.response.message) &&
               slice_eq(a->u.response.data, b->u.response.data);
    case SIG_MSG_RETAINED:
        return slice_eq(a->u.retained.sender, b->u.retained.sender) &&
               slice_eq(a->u.retained.event, b->u.retained.event) &&
               slice_eq(a->u.retained.data, b->u.retained.data) && a->u.retained.flags == b->u.retained.flags;
    }
    return 0;
}

void msg_to_encodable(sig_msg_t *m, sig_event_decl_t *ev, size_t ev_cap, sig_bytes_t *me, size_t me_cap)
{
    sig_reg_iter_t it;
    uint32_t i;
    if (m->type != SIG_MSG_REGISTER_SENDER || m->u.register_sender.events != NULL) {
        return;
    }
    sig_reg_iter_init(&it, m);
    if (m->u.register_sender.n_events > ev_cap || m->u.register_sender.n_methods > me_cap) {
        m->u.register_sender.n_events = 0;
        m->u.register_sender.n_methods = 0;
        return;
    }
    for (i = 0; i < m->u.register_sender.n_events; i++) {
        (void)sig_reg_next_event(&it, &ev[i]);
    }
    for (i = 0; i < m->u.register_sender.n_methods; i++) {
        (void)sig_reg_next_method(&it, &me[i]);
    }
    m->u.register_sender.events = ev;
    m->u.register_sender.methods = me;
}

int lib_encodes(sig_msg_type_t t)
{
#if SIG_CONFIG_FULL_CODEC
    (void)t;
    return 1;
#else
    return t == SIG_MSG_HELLO || t == SIG_MSG_PING || t == SIG_MSG_PONG || t == SIG_MSG_ERROR ||
           t == SIG_MSG_LISTEN || t == SIG_MSG_TRIGGER || t == SIG_MSG_REQUEST || t == SIG_MSG_RESPONSE;
#endif
}

int lib_decodes(uint8_t t)
{
#if SIG_CONFIG_FULL_CODEC
    (void)t;
    return 1;
#else
    return t != SIG_MSG_HELLO && t != SIG_MSG_REGISTER_SENDER && t != SIG_MSG_UNREGISTER_SENDER &&
           t != SIG_MSG_LISTEN && t != SIG_MSG_UNLISTEN && t != SIG_MSG_TRIGGER;
#endif
}
