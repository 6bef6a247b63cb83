/* Internal helpers shared by the library's .c files; not part of the API. */
#ifndef SIG_INTERNAL_H
#define SIG_INTERNAL_H

#include <float.h>

#include "sig_device.h"

/* 1 where `double` is a 32-bit float (avr-gcc without -mdouble=64): the
 * double API of the CBOR helpers then works on float32 values. */
#if DBL_MANT_DIG == FLT_MANT_DIG
#define SIG__DOUBLE_IS_FLOAT 1
#else
#define SIG__DOUBLE_IS_FLOAT 0
#endif

/* Constant tables in flash. On AVR (Harvard) a plain `static const` is
 * copied to RAM at start-up; PROGMEM keeps it in flash and it is read with
 * pgm_read_word. This is the only place that knows: the target's compiler
 * macro (__AVR__), not the board (no ARDUINO). SIG__ROM marks a table,
 * SIG__ROM_U16(p) reads one uint16_t of it. */
#if defined(__AVR__)
#include <avr/pgmspace.h>
#define SIG__ROM PROGMEM
#define SIG__ROM_U16(p) ((uint16_t)pgm_read_word(p))
#else
#define SIG__ROM
#define SIG__ROM_U16(p) (*(p))
#endif


/* The float32 nearest to the float64 bit pattern d (as a C cast rounds),
 * with integer operations only. */
uint32_t sig__f64_to_f32(uint64_t d);

/* Body writer: sig_cbor_writer_t with a sticky error, every put checks
 * `n > cap - len` before it writes. */
typedef sig_cbor_writer_t sig_wr_t;

void sig__put_raw(sig_wr_t *w, const uint8_t *p, size_t n);
void sig__put_u8(sig_wr_t *w, uint8_t b);
void sig__put_varint(sig_wr_t *w, uint32_t v);
/* name: 1..255 bytes (optional: 0 allowed); else SIG_ERR_INVALID_NAME. */
void sig__put_name(sig_wr_t *w, const uint8_t *p, size_t n, bool optional);
void sig__put_text(sig_wr_t *w, const uint8_t *p, size_t n);
/* Length of s, capped at SIG_MAX_BODY_LIMIT + 1 (longer never fits a body;
 * SIG_MAX_BODY_LIMIT where size_t has 16 bits). */
size_t sig__strlen(const char *s);

/* A byte of a string the application gave the library (SIG_CONFIG_NAMES_IN_FLASH). */
#if SIG_CONFIG_NAMES_IN_FLASH && defined(__AVR__)
#define SIG__NAMES_IN_FLASH 1
#define SIG__NAME_BYTE(s, i) ((char)pgm_read_byte((s) + (i)))
/* sig_bytes_eq and sig__put_raw for such a string */
bool sig__name_eq(sig_bytes_t b, const char *s);
void sig__put_name_bytes(sig_wr_t *w, const char *s, size_t n);
#else
#define SIG__NAMES_IN_FLASH 0
#define SIG__NAME_BYTE(s, i) ((s)[i])
#define sig__name_eq sig_bytes_eq
#define sig__put_name_bytes(w, s, n) sig__put_raw((w), (const uint8_t *)(s), (n))
#endif

/* Unsigned LEB128 (PROTOCOL.md section 2) at p, reading no byte at or past
 * end: at most 5 bytes and 2^32-1. Returns the position after it, or NULL
 * when it is truncated, too long or too large (MALFORMED). */
const uint8_t *sig__varint(const uint8_t *p, const uint8_t *end, uint32_t *v);
/* Strict UTF-8 as Python's decoder (no overlongs, surrogates, > U+10FFFF);
 * always true when SIG_CONFIG_CHECK_UTF8 is 0. */
bool sig__utf8_ok(const uint8_t *p, size_t n);

/* The device's receive path: checks a body and picks out its fields in one
 * pass, without a sig_msg_t. Fields of the types a device receives, in wire
 * order: varints go to num[], names and texts to str[], then the data.
 *   WELCOME   num = version, max_body, keepalive_ms, features; str = name
 *   PING/PONG num = token           INVITE (none)
 *   ERROR     num = code, ref; str = message
 *   ACK, SENDER_REGISTERED, LISTENING  num = seq / ref
 *   EVENT     str = sender, event, data
 *   REQUEST   num = request_id; str = sender, method, data
 *   RESPONSE  num = request_id, status; str = message, data
 *   RETAINED  num = flags (0 or 1); str = sender, event, data
 * Returns 0 when the body is valid, SIG__RX_IGNORE for the types only a
 * gateway receives (HELLO, REGISTER_SENDER, UNREGISTER_SENDER, LISTEN,
 * UNLISTEN, TRIGGER; not checked), else the wire error code sig_msg_decode
 * would give (MALFORMED, UNKNOWN_TYPE, UNSUPPORTED_VERSION, INVALID_NAME,
 * UNSUPPORTED_FEATURE). Reads only body[0..len). */
#define SIG__RX_IGNORE 0xFFu
/* Types 0x00-0x07, 0x10-0x17, 0x20-0x24 (a valid header) as 0..20. */
#define SIG__RX_INDEX(t) ((((t) >> 1) & 0x18u) | ((t) & 7u))
typedef struct {
    uint32_t num[4];
    sig_bytes_t str[3];
} sig__rx_msg_t;
uint8_t sig__rx_parse(const uint8_t *body, size_t len, sig__rx_msg_t *m);

/* sig_device_t.state */
enum { SIG__DEV_IDLE = 0, SIG__DEV_HELLO = 1, SIG__DEV_ONLINE = 2 };

#if SIG_CONFIG_AUTH
/* Sign the body at body[0..len) in place (sig_auth.c): the counter (and in
 * HELLO the nonce) go in the bytes tx_begin reserved after the header, the
 * tag after the body. Returns the signed length (len + 8). */
size_t sig__auth_seal(sig_device_t *dev, uint8_t *body, size_t len);
/* Check a received body: 0 when it is dropped (and counted), else the plain
 * body's length, *body moved to its header (stripped in place). */
size_t sig__auth_open(sig_device_t *dev, uint8_t **body, size_t len);
#endif

#if SIG_CONFIG_RELIABLE
/* The reliable mode's state machine (sig_reliable.c); sig_device.c does the
 * sending. All times are the device's millis(). */
/* A new session (WELCOME, reliable when the gateway granted it) or none
 * (HELLO): nothing kept, nothing expected, every registration to send. */
void sig__rel_start(sig_device_t *dev, bool on);
/* false while a reliable session's window is full. */
bool sig__rel_room(const sig_device_t *dev);
/* The plain body at body[0..*len) is about to be sent: in a reliable session,
 * when its type is sequenced (a TRIGGER only when `trig`), add the sequence
 * header (after the signing counter's room), keep a copy and start the timer.
 * SIG_OK (sent as it is, or sequenced), SIG_ERR_BUSY (window full: counted,
 * nothing to send) or SIG__REL_END (the seq is used up: start over). */
#define SIG__REL_END ((sig_err_t)1)
sig_err_t sig__rel_send(sig_device_t *dev, uint8_t *body, size_t *len, bool trig, uint32_t now);
/* A received body with the SEQ flag, in a reliable session: -1 MALFORMED
 * (never sequenced type, bad seq: drop, not acknowledged); 1 a duplicate or a
 * frame after a gap (drop, counted); 0 accepted: *body / *len are now the
 * plain body (stripped in place). *ack is the ACK to send for 0 and 1. */
int sig__rel_receive(sig_device_t *dev, uint8_t **body, size_t *len, uint32_t *ack);
/* ACK(a) received: forgets what it acknowledges; true when the kept frames
 * are to be sent again at once (fast retransmit: an ACK of nothing new, the
 * first one while this frame is the oldest kept). */
bool sig__rel_ack(sig_device_t *dev, uint32_t a, uint32_t now);
/* The retransmission timer at `now`: 0 nothing, 1 send every kept frame
 * again, 2 give up (the session ends; counted). */
int sig__rel_timer(sig_device_t *dev, uint32_t now);
/* Copy kept frame i (0 = oldest) to dst for sending again; returns its length. */
size_t sig__rel_copy(sig_device_t *dev, unsigned i, uint8_t *dst);
/* ms until the retransmission timer fires (0: now), or SIG_NO_DEADLINE. */
uint32_t sig__rel_deadline(const sig_device_t *dev, uint32_t now);
#endif

#endif
