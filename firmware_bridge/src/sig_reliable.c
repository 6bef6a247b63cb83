/* The reliable UART mode (PROTOCOL.md section 5, "Reliable UART mode"), the
 * device's side, with SIG_CONFIG_RELIABLE = 1: the sequence header, the
 * window of kept frames, cumulative ACKs, go-back-N receiving (no receive
 * buffer), retransmission with backoff, fast retransmit (once per oldest
 * kept frame), and the end of a session after SIG_CONFIG_RELIABLE_MAX_RETRIES retransmissions.
 *
 * This file is the state machine only: it never writes to the link.
 * sig_device.c calls it where a frame goes out (sig__rel_send), comes in
 * (sig__rel_receive, sig__rel_ack) and where time passes (sig__rel_timer),
 * and sends what it says (ACKs, frames again, a new HELLO). */
#include "sig_internal.h"

#if SIG_CONFIG_RELIABLE

#define W SIG_CONFIG_RELIABLE_WINDOW
#define RTO ((uint16_t)SIG_CONFIG_RELIABLE_RTO_MS)

void sig__rel_start(sig_device_t *dev, bool on)
{
    dev->rel_on = on ? 1u : 0u;
    dev->rel_trig = 0;
    dev->rel_head = 0;
    dev->rel_kept = 0;
    dev->rel_retries = 0;
    dev->rel_rto = RTO;
    dev->rel_todo = 0xFFFFFFFFu; /* every slot in use is registered again */
    dev->rel_expected = 1;
    dev->rel_next = 1;
    dev->rel_fast = 0;
}

bool sig__rel_room(const sig_device_t *dev)
{
    return dev->rel_on == 0u || dev->rel_kept < W;
}

/* Index in rel_buf of kept frame i (0 = the oldest). */
static unsigned slot(const sig_device_t *dev, unsigned i)
{
    unsigned s = dev->rel_head + i;
    return s >= W ? s - W : s;
}

/* The types the device sends sequenced in a reliable session: REGISTER_SENDER,
 * UNREGISTER_SENDER, LISTEN, UNLISTEN, REQUEST, RESPONSE, ERROR always, a
 * TRIGGER of a reliable event; never HELLO, PING, PONG, ACK. */
static bool sequenced(uint8_t t, bool trig)
{
    return t >= SIG_MSG_ERROR && t != SIG_MSG_ACK && (t != SIG_MSG_TRIGGER || trig);
}

sig_err_t sig__rel_send(sig_device_t *dev, uint8_t *body, size_t *len, bool trig, uint32_t now)
{
    uint8_t t = body[0];
    size_t off = 1, n = 1, k;
    uint32_t seq = dev->rel_next, v;
    unsigned s;
    if (dev->rel_on == 0u || !sequenced(t, trig)) {
        return SIG_OK;
    }
    if (dev->rel_kept >= W) {
        dev->rel_stats.busy++; /* every refusal; sig_device.c counts its own answers as dropped too */
        return SIG_ERR_BUSY;
    }
    if (seq == 0u) {
        return SIG__REL_END; /* the next seq would pass 2^32 - 1 */
    }
#if SIG_CONFIG_AUTH
    if (dev->auth_key != NULL) {
        off += 4u; /* the seq goes after the signing counter (sig__auth_seal fills it) */
    }
#endif
    for (v = seq; v >= 0x80u; v >>= 7) {
        n++;
    }
    /* make room: tx_cap keeps plain bodies 5 bytes short of the buffer and of
     * the gateway's max_body in a reliable session */
    for (k = *len; k > off; k--) {
        body[k - 1u + n] = body[k - 1u];
    }
    for (k = 0, v = seq; k < n; k++, v >>= 7) {
        body[off + k] = (uint8_t)(k + 1u < n ? (v & 0x7Fu) | 0x80u : v);
    }
    body[0] = (uint8_t)(t | SIG_HEADER_FLAG_SEQ);
    *len += n;
    dev->rel_next = seq + 1u;
    s = slot(dev, dev->rel_kept);
    for (k = 0; k < *len; k++) {
        dev->rel_buf[s][k] = body[k];
    }
    dev->rel_len[s] = (uint16_t)*len;
    if (dev->rel_kept++ == 0u) {
        dev->rel_deadline = now + dev->rel_rto; /* the timer starts with the first kept frame */
    }
    return SIG_OK;
}

int sig__rel_receive(sig_device_t *dev, uint8_t **bodyp, size_t *len, uint32_t *ack)
{
    uint8_t *b = *bodyp, t = (uint8_t)(b[0] & SIG_HEADER_TYPE_MASK);
    const uint8_t *q;
    uint32_t seq = 0;
    size_t n;
    /* never sequenced: HELLO, WELCOME, PING, PONG, INVITE, ACK, EVENT, RETAINED */
    if (t - 1u < 5u || t == SIG_MSG_ACK || t == SIG_MSG_EVENT || t == SIG_MSG_RETAINED) {
        return -1;
    }
    q = sig__varint(b + 1, b + *len, &seq);
    if (q == NULL || seq == 0u || (q - b > 2 && q[-1] == 0u)) {
        return -1; /* truncated, above 2^32 - 1, 0, or padded ("81 00") */
    }
    if (seq != dev->rel_expected) {
        if (seq < dev->rel_expected) {
            dev->rel_stats.duplicates++; /* sent again: our ACK was lost */
        } else {
            dev->rel_stats.out_of_order++; /* an earlier frame was lost */
        }
        *ack = dev->rel_expected - 1u;
        return 1;
    }
    *ack = seq;
    dev->rel_expected = seq + 1u;
    n = (size_t)(q - b); /* the header and the seq: the header moves up to just before the fields */
    b[n - 1u] = (uint8_t)(b[0] & ~SIG_HEADER_FLAG_SEQ);
    *bodyp = b + n - 1u;
    *len -= n - 1u;
    return 0;
}

bool sig__rel_ack(sig_device_t *dev, uint32_t a, uint32_t now)
{
    uint32_t oldest = dev->rel_next - dev->rel_kept;
    if (dev->rel_on == 0u || a >= dev->rel_next) {
        dev->rel_stats.bad_acks++; /* no reliable session, or a seq never sent */
        return false;
    }
    if (dev->rel_kept != 0u && a >= oldest) {
        unsigned done = (unsigned)(a - oldest) + 1u; /* <= rel_kept: a < rel_next */
        dev->rel_kept = (uint8_t)(dev->rel_kept - done);
        dev->rel_head = (uint8_t)slot(dev, done);
        dev->rel_retries = 0;
        dev->rel_rto = RTO;
        dev->rel_deadline = now + RTO; /* restarts; stops when nothing is kept */
        return false;
    }
    /* nothing new: the gateway saw a gap; resend at once, once per oldest kept
     * frame (a lost resend is the timer's; the timer, RTO and retries stay) */
    if (dev->rel_kept == 0u || dev->rel_fast == oldest) {
        return false;
    }
    dev->rel_fast = oldest;
    return true;
}

int sig__rel_timer(sig_device_t *dev, uint32_t now)
{
    if (dev->rel_on == 0u || dev->rel_kept == 0u || (int32_t)(now - dev->rel_deadline) < 0) {
        return 0;
    }
    if (dev->rel_retries >= SIG_CONFIG_RELIABLE_MAX_RETRIES) {
        dev->rel_stats.reliable_failures++;
        return 2;
    }
    dev->rel_retries++;
    dev->rel_rto = (uint16_t)(dev->rel_rto < 4u * RTO ? 2u * dev->rel_rto : 8u * RTO);
    dev->rel_deadline = now + dev->rel_rto;
    return 1;
}

size_t sig__rel_copy(sig_device_t *dev, unsigned i, uint8_t *dst)
{
    unsigned s = slot(dev, i);
    size_t k, n = dev->rel_len[s];
    for (k = 0; k < n; k++) {
        dst[k] = dev->rel_buf[s][k];
    }
    dev->rel_stats.retransmits++;
    return n;
}

uint32_t sig__rel_deadline(const sig_device_t *dev, uint32_t now)
{
    int32_t d = (int32_t)(dev->rel_deadline - now);
    if (dev->rel_on == 0u || dev->rel_kept == 0u) {
        return SIG_NO_DEADLINE;
    }
    return d > 0 ? (uint32_t)d : 0u;
}

#else
typedef int sig__reliable_unused; /* ISO C forbids an empty translation unit */
#endif
