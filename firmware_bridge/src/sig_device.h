/*
 * sig_device.h - sig device library: frames, messages, CBOR, device session.
 *
 * C99, no malloc, no VLAs, no global state: everything lives in buffers the
 * caller passes or in the sig_device_t the application declares. Every
 * function that can fail returns a sig_err_t (SIG_OK = 0, negative otherwise)
 * and is marked SIG_CHECK so the compiler warns when a result is ignored.
 * PROTOCOL.md is the wire specification; the layers below follow its sections:
 *   1. frames   - CRC-16, COBS, frame encoder, streaming frame decoder
 *   2. messages - sig_msg_t <-> frame body
 *   -  CBOR     - small writer/reader for event data
 *   3. session  - sig_device_t: HELLO, registrations, keepalive, dispatch
 */
#ifndef SIG_DEVICE_H
#define SIG_DEVICE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "sig_config.h"
#include "sig_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SIG_CHECK __attribute__((warn_unused_result))
#else
#define SIG_CHECK
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* One error enum, negatives grouped by area. Message errors are
 * SIG_ERR_WIRE_BASE - (wire error code), so sig_err_wire_code() maps back. */
typedef enum {
    SIG_OK = 0,
    /* general, -1..-9 */
    SIG_ERR_ARG = -1,         /* bad argument (NULL, name length 0 or > 255, ...) */
    SIG_ERR_NO_SPACE = -2,    /* destination buffer too small */
    SIG_ERR_IO = -3,          /* the platform write callback failed */
    SIG_ERR_STATE = -4,       /* not allowed now (e.g. trigger before WELCOME) */
    SIG_ERR_FULL = -5,        /* a table of sig_config.h is full */
    SIG_ERR_NOT_FOUND = -6,   /* no such handle / name / request id */
    SIG_ERR_UNSUPPORTED = -7, /* compiled out (SIG_CONFIG_FULL_CODEC = 0) */
    SIG_ERR_CONFIG = -8,      /* sig_device_init: the application was compiled with other
                                 sig_config.h settings than the library (see sig_config.h) */
    SIG_ERR_BUSY = -9,        /* SIG_CONFIG_RELIABLE: the window of unacknowledged frames is
                                 full; nothing was sent, try again after an ACK (poll/feed) */
    /* frames, -10..-19 */
    SIG_ERR_COBS = -10,       /* not valid COBS */
    SIG_ERR_CRC = -11,        /* CRC mismatch */
    SIG_ERR_FRAME_SHORT = -12,/* fewer than 3 decoded bytes */
    /* messages, -21..-38: SIG_ERR_WIRE_BASE - wire error code */
    SIG_ERR_MALFORMED = -21,
    SIG_ERR_UNKNOWN_TYPE = -22,
    SIG_ERR_UNSUPPORTED_VERSION = -23,
    SIG_ERR_INVALID_NAME = -26,
    SIG_ERR_TOO_LARGE = -35,  /* body above max_body / 65535 */
    SIG_ERR_UNSUPPORTED_FEATURE = -36,
    /* CBOR, -40..-49 */
    SIG_ERR_CBOR = -40,       /* not well-formed CBOR */
    SIG_ERR_CBOR_TYPE = -41,  /* well-formed, but another type than asked */
    SIG_ERR_CBOR_RANGE = -42, /* value does not fit the C type */
    SIG_ERR_CBOR_DEPTH = -43  /* nesting deeper than SIG_CONFIG_CBOR_MAX_DEPTH */
} sig_err_t;

#define SIG_ERR_WIRE_BASE (-20)

/* Wire error code (PROTOCOL.md "Error codes") of a message error, or 0. */
uint32_t sig_err_wire_code(sig_err_t err);

/* Wire error codes. */
typedef enum {
    SIG_CODE_OK = 0,
    SIG_CODE_MALFORMED = 1,
    SIG_CODE_UNKNOWN_TYPE = 2,
    SIG_CODE_UNSUPPORTED_VERSION = 3,
    SIG_CODE_NO_SESSION = 4,
    SIG_CODE_DUPLICATE_SENDER = 5,
    SIG_CODE_INVALID_NAME = 6,
    SIG_CODE_DUPLICATE_REF = 7,
    SIG_CODE_UNKNOWN_REF = 8,
    SIG_CODE_NO_SUCH_SENDER = 9,
    SIG_CODE_NO_SUCH_METHOD = 10,
    SIG_CODE_HANDLER_ERROR = 11,
    SIG_CODE_TIMEOUT = 12,
    SIG_CODE_SENDER_GONE = 13,
    SIG_CODE_NOT_AUTHORISED = 14,
    SIG_CODE_TOO_LARGE = 15,
    SIG_CODE_UNSUPPORTED_FEATURE = 16,
    SIG_CODE_BUSY = 17,
    SIG_CODE_UNKNOWN_EVENT = 18,
    SIG_CODE_LIMIT_REACHED = 19
} sig_code_t;

/* A run of bytes inside some buffer (names, text, CBOR data). Not
 * NUL-terminated. Decoded slices point into the buffer that was decoded. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} sig_bytes_t;

/* true when b holds exactly the bytes of the C string s. */
bool sig_bytes_eq(sig_bytes_t b, const char *s);

/* ------------------------------------------------------------------------ */
/* 1. Frames: COBS(body || CRC16) || 0x00                                    */
/* ------------------------------------------------------------------------ */

#define SIG_PROTOCOL_VERSION 1u
#define SIG_MAX_BODY_LIMIT 65535u
#define SIG_MAX_NAME 255u
/* The smallest max_body a HELLO or WELCOME may announce (PROTOCOL.md section 3) */
#define SIG_MIN_MAX_BODY 8u
#define SIG_CRC_SIZE 2u

/* Largest COBS encoding of n bytes: n + ceil(n / 254), and 1 for n = 0. */
#define SIG_COBS_ENCODED_MAX(n) ((n) + ((n) + 253u) / 254u + ((n) == 0u ? 1u : 0u))
/* Largest frame on the wire for a body of n bytes (PROTOCOL.md section 1):
 * n + 2 + ceil((n + 2) / 254) + 1. */
#define SIG_FRAME_ENCODED_MAX(n) (SIG_COBS_ENCODED_MAX((n) + SIG_CRC_SIZE) + 1u)
/* Encoded bytes (delimiter excluded) the streaming decoder accepts for a
 * max_body before it counts `oversize`. Same limit as sig/protocol/frame.py
 * (encoded_size_max(max_body) - 1), so both decoders count alike. */
#define SIG_RX_ENCODED_LIMIT(max_body) \
    ((uint32_t)(max_body) + 2u + ((uint32_t)(max_body) + 2u) / 254u + 1u)

/* CRC-16/GENIBUS: poly 0x1021, init 0xFFFF, not reflected, xor out 0xFFFF
 * (check value 0xD64E). sig_crc16_update takes and returns a finished CRC,
 * so a CRC over pieces starts at SIG_CRC16_INIT, the CRC of no bytes:
 * sig_crc16_update(sig_crc16(a, n), b, m) is the CRC of a || b. */
#define SIG_CRC16_INIT 0x0000u
uint16_t sig_crc16_update(uint16_t crc, const uint8_t *p, size_t n);
uint16_t sig_crc16(const uint8_t *p, size_t n);

/* COBS as Python's `cobs` package: dst gets at most SIG_COBS_ENCODED_MAX(n)
 * bytes, no delimiter. SIG_ERR_NO_SPACE if cap is too small (nothing is
 * written past dst + cap). */
SIG_CHECK sig_err_t sig_cobs_encode(uint8_t *dst, size_t cap, const uint8_t *src, size_t n,
                                    size_t *out_len);
/* SIG_ERR_COBS on a zero byte or a code byte that runs past the end. */
SIG_CHECK sig_err_t sig_cobs_decode(uint8_t *dst, size_t cap, const uint8_t *src, size_t n,
                                    size_t *out_len);

/* Whole frame (COBS, CRC and delimiter) of a body of 1..65535 bytes into dst. */
SIG_CHECK sig_err_t sig_frame_encode(uint8_t *dst, size_t cap, const uint8_t *body, size_t n,
                                     size_t *out_len);

/* Counters of PROTOCOL.md section 1; never reset by the decoder. */
typedef struct {
    uint32_t frames;         /* good frames returned */
    uint32_t empty;          /* 0x00 with nothing before it */
    uint32_t crc_errors;     /* CRC did not match */
    uint32_t framing_errors; /* not valid COBS, or fewer than 3 decoded bytes */
    uint32_t oversize;       /* longer than max_body allows */
} sig_rx_stats_t;

/* Streaming frame decoder. It decodes COBS as bytes arrive, so its buffer
 * needs only max_body + 2 bytes. Fields are private; read `stats`. */
typedef struct {
    uint8_t *buf;        /* decoded bytes: body then CRC */
    uint32_t limit;      /* SIG_RX_ENCODED_LIMIT(max_body) */
    uint32_t enc;        /* encoded bytes of the current frame */
    uint16_t cap;        /* max_body + 2 */
    uint16_t len;        /* decoded bytes stored */
    uint8_t remaining;   /* data bytes left in the current COBS block */
    uint8_t flags;       /* zero pending / skipping / too long / frame ready */
    sig_rx_stats_t stats;
} sig_rx_t;

/* buf must hold max_body + 2 bytes; max_body is 1..65533. */
SIG_CHECK sig_err_t sig_rx_init(sig_rx_t *rx, uint8_t *buf, size_t buf_len, uint16_t max_body);
/* Feed one received byte. Returns true when it completed a good frame: the
 * body is then sig_rx_body(rx), valid until the next call to sig_rx_feed.
 * Never fails: bad input is only counted. Safe to call from an ISR. */
bool sig_rx_feed(sig_rx_t *rx, uint8_t byte);
sig_bytes_t sig_rx_body(const sig_rx_t *rx);

/* ------------------------------------------------------------------------ */
/* 2. Messages                                                               */
/* ------------------------------------------------------------------------ */

typedef enum {
    SIG_MSG_HELLO = 0x01,
    SIG_MSG_WELCOME = 0x02,
    SIG_MSG_PING = 0x03,
    SIG_MSG_PONG = 0x04,
    SIG_MSG_INVITE = 0x05,
    SIG_MSG_ERROR = 0x06,
    SIG_MSG_ACK = 0x07,
    SIG_MSG_REGISTER_SENDER = 0x10,
    SIG_MSG_SENDER_REGISTERED = 0x11,
    SIG_MSG_UNREGISTER_SENDER = 0x12,
    SIG_MSG_LISTEN = 0x13,
    SIG_MSG_LISTENING = 0x14,
    SIG_MSG_UNLISTEN = 0x15,
    SIG_MSG_TRIGGER = 0x20,
    SIG_MSG_EVENT = 0x21,
    SIG_MSG_REQUEST = 0x22,
    SIG_MSG_RESPONSE = 0x23,
    SIG_MSG_RETAINED = 0x24
} sig_msg_type_t;

#define SIG_HEADER_TYPE_MASK 0x3Fu
#define SIG_HEADER_FLAG_AUTH 0x40u
#define SIG_HEADER_FLAG_SEQ 0x80u
#define SIG_REGISTER_FLAG_DEFAULT_HANDLER 0x01u
/* RETAINED flags bit 0: the value's sender is not connected now */
#define SIG_RETAINED_FLAG_STALE 0x01u
/* LISTEN options (PROTOCOL.md section 2): bits 0-1 the delivery policy when
 * the listener's link is behind (3 is MALFORMED), bit 2 no_local (no EVENT of
 * a trigger sent on this link); a LISTEN without options is 0 */
#define SIG_LISTEN_POLICY_DROP 0x00u
#define SIG_LISTEN_POLICY_LATEST 0x01u
#define SIG_LISTEN_POLICY_BLOCK 0x02u
#define SIG_LISTEN_POLICY_MASK 0x03u
#define SIG_LISTEN_NO_LOCAL 0x04u
#define SIG_LISTEN_OPTIONS_MASK 0x07u
#define SIG_VARINT_MAX_LEN 5u

typedef struct {
    uint32_t ref;
    sig_bytes_t name;
} sig_event_decl_t;

/* One message. Slices point into the decoded body (zero copy) or, when
 * encoding, at the caller's bytes. A name? of length 0 means "none". */
typedef struct {
    sig_msg_type_t type;
    union {
        struct { uint32_t version; sig_bytes_t name; uint32_t max_body, keepalive_ms, features;
                 sig_bytes_t credentials; } hello;
        struct { uint32_t version; sig_bytes_t name; uint32_t max_body, keepalive_ms, features; } welcome;
        struct { uint32_t token; } ping;        /* PING and PONG */
        struct { uint32_t code, ref; sig_bytes_t message; uint32_t about; } error; /* about: type answered */
        struct { uint32_t seq; } ack;
        struct {
            uint32_t sender_ref; sig_bytes_t name; uint8_t flags;
            uint32_t n_events; uint32_t n_methods;
            const sig_event_decl_t *events;     /* encode: n_events entries */
            const sig_bytes_t *methods;         /* encode: n_methods entries */
            sig_bytes_t lists;                  /* decode: read with sig_reg_iter_t */
            sig_bytes_t meta;                   /* one CBOR map, or len 0 for none */
        } register_sender;
        struct { uint32_t ref; } ref;           /* SENDER_REGISTERED, UNREGISTER_SENDER,
                                                   LISTENING, UNLISTEN */
        struct { uint32_t listener_id; sig_bytes_t sender, event; uint32_t options; } listen;
        struct { uint32_t event_ref; sig_bytes_t data; } trigger;
        struct { sig_bytes_t sender, event, data; } event;
        struct { uint32_t request_id; sig_bytes_t sender, method, data; } request;
        struct { uint32_t request_id, status; sig_bytes_t message, data; } response;
        struct { sig_bytes_t sender, event, data; uint8_t flags; } retained; /* flags: SIG_RETAINED_FLAG_STALE */
    } u;
} sig_msg_t;

/* Encode m as a frame body into buf (capacity cap). */
SIG_CHECK sig_err_t sig_msg_encode(const sig_msg_t *m, uint8_t *buf, size_t cap, size_t *out_len);
/* Decode one body. Errors: SIG_ERR_MALFORMED, SIG_ERR_UNKNOWN_TYPE,
 * SIG_ERR_UNSUPPORTED_VERSION, SIG_ERR_INVALID_NAME, SIG_ERR_UNSUPPORTED_FEATURE
 * (map to the wire with sig_err_wire_code), SIG_ERR_UNSUPPORTED (compiled out). */
SIG_CHECK sig_err_t sig_msg_decode(const uint8_t *body, size_t len, sig_msg_t *m);

/* Iterates the events then the methods of a decoded REGISTER_SENDER. */
typedef struct {
    const uint8_t *p, *end;
    uint32_t events_left, methods_left;
    bool in_methods;
} sig_reg_iter_t;
void sig_reg_iter_init(sig_reg_iter_t *it, const sig_msg_t *m);
bool sig_reg_next_event(sig_reg_iter_t *it, sig_event_decl_t *out);
bool sig_reg_next_method(sig_reg_iter_t *it, sig_bytes_t *out);

/* Unsigned LEB128 of at most 5 bytes / 2^32-1. */
SIG_CHECK sig_err_t sig_varint_encode(uint32_t v, uint8_t *buf, size_t cap, size_t *out_len);
SIG_CHECK sig_err_t sig_varint_decode(const uint8_t *buf, size_t len, uint32_t *v, size_t *used);

/* ------------------------------------------------------------------------ */
/* CBOR (RFC 8949) helpers for event data                                    */
/* ------------------------------------------------------------------------ */

/* Writer with a sticky error: the puts do nothing after the first error,
 * sig_cbor_finish() reports it. Preferred serialisation: shortest ints,
 * shortest float that keeps the value. */
typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    sig_err_t err;
} sig_cbor_writer_t;

void sig_cbor_writer_init(sig_cbor_writer_t *w, uint8_t *buf, size_t cap);
void sig_cbor_put_null(sig_cbor_writer_t *w);
void sig_cbor_put_bool(sig_cbor_writer_t *w, bool v);
void sig_cbor_put_int(sig_cbor_writer_t *w, int64_t v);
void sig_cbor_put_float32(sig_cbor_writer_t *w, float v);   /* F9 or FA */
void sig_cbor_put_float64(sig_cbor_writer_t *w, double v);  /* F9, FA or FB */
void sig_cbor_put_text(sig_cbor_writer_t *w, const char *s, size_t n);
void sig_cbor_put_bytes(sig_cbor_writer_t *w, const uint8_t *p, size_t n);
void sig_cbor_put_array(sig_cbor_writer_t *w, uint32_t n); /* then n items */
void sig_cbor_put_map(sig_cbor_writer_t *w, uint32_t n);   /* then n key, value pairs */
SIG_CHECK sig_err_t sig_cbor_finish(const sig_cbor_writer_t *w, size_t *out_len);

/* Reader: each get reads one item at the cursor and advances past it only
 * on success. Strings are returned as slices (definite length only). */
typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
} sig_cbor_reader_t;

void sig_cbor_reader_init(sig_cbor_reader_t *r, const uint8_t *p, size_t n);
bool sig_cbor_at_end(const sig_cbor_reader_t *r);
SIG_CHECK sig_err_t sig_cbor_get_null(sig_cbor_reader_t *r);
SIG_CHECK sig_err_t sig_cbor_get_bool(sig_cbor_reader_t *r, bool *v);
SIG_CHECK sig_err_t sig_cbor_get_int(sig_cbor_reader_t *r, int64_t *v);
/* half, single or double; also accepts integers. */
SIG_CHECK sig_err_t sig_cbor_get_double(sig_cbor_reader_t *r, double *v);
/* half or single exactly; a double is rounded to float. */
SIG_CHECK sig_err_t sig_cbor_get_float(sig_cbor_reader_t *r, float *v);
SIG_CHECK sig_err_t sig_cbor_get_text(sig_cbor_reader_t *r, sig_bytes_t *v);
SIG_CHECK sig_err_t sig_cbor_get_bytes(sig_cbor_reader_t *r, sig_bytes_t *v);
SIG_CHECK sig_err_t sig_cbor_get_array(sig_cbor_reader_t *r, uint32_t *n); /* definite */
SIG_CHECK sig_err_t sig_cbor_get_map(sig_cbor_reader_t *r, uint32_t *n);   /* definite */
/* Skip one whole well-formed item (any type, tags, indefinite lengths). */
SIG_CHECK sig_err_t sig_cbor_skip(sig_cbor_reader_t *r);
/* SIG_OK when p[0..n) is empty (no data) or exactly one well-formed item. */
SIG_CHECK sig_err_t sig_cbor_check_data(const uint8_t *p, size_t n);

/* ------------------------------------------------------------------------ */
/* 3. Device session                                                         */
/* ------------------------------------------------------------------------ */

/* Platform layer. Contract:
 *  - write(ctx, buf, len): send all len bytes (or queue them) and return
 *    true; return false on an I/O error. After false, any prefix of buf may
 *    have gone out: the library reports SIG_ERR_IO to its caller and sends a
 *    lone 0x00 before its next frame so the gateway drops the torn frame.
 *    Called only from sig_device_* functions, never from an ISR by the library.
 *  - millis(ctx): a free-running millisecond clock; wrap-around is handled. */
typedef struct {
    void *ctx;
    bool (*write)(void *ctx, const uint8_t *buf, size_t len);
    uint32_t (*millis)(void *ctx);
} sig_platform_t;

/* ------------------------------------------------------------------------ */
/* Signed frames (PROTOCOL.md section 5), with SIG_CONFIG_AUTH = 1            */
/* ------------------------------------------------------------------------ */

#define SIG_AUTH_KEY_LEN 32u
#define SIG_AUTH_TAG_LEN 8u
#define SIG_AUTH_NONCE_LEN 8u
#define SIG_AUTH_TO_GATEWAY 0u
#define SIG_AUTH_TO_DEVICE 1u
/* Bytes signing adds to a body: counter + tag, and the nonce of HELLO. */
#define SIG_AUTH_OVERHEAD 12u
#define SIG_AUTH_HELLO_OVERHEAD 20u

/* Frames a keyed device dropped (never seen by the application). */
typedef struct {
    uint32_t auth_failed;     /* bad tag, too short, or no session to check against */
    uint32_t replayed;        /* good tag, counter not above the last one */
    uint32_t unsigned_frames; /* no AUTH flag (other than INVITE, or ERROR before WELCOME) */
} sig_auth_stats_t;

#if SIG_CONFIG_AUTH
/* BLAKE2s (RFC 7693), keyed or not, digest of 1..32 bytes; the state on the stack. */
typedef struct {
    uint32_t h[8];
    uint32_t t;        /* bytes compressed so far (inputs below 4 GB) */
    uint8_t buf[64];
    uint8_t n;         /* bytes in buf */
    uint8_t outlen;
} sig_blake2s_t;
void sig_blake2s_init(sig_blake2s_t *s, uint8_t outlen, const uint8_t *key, uint8_t keylen);
void sig_blake2s_update(sig_blake2s_t *s, const uint8_t *p, size_t len);
void sig_blake2s_final(sig_blake2s_t *s, uint8_t *out);
/* The 8-byte tag of a signed body without its tag (body[0..len)): BLAKE2s-64
 * keyed with the 32-byte key over direction || device_nonce || gateway_nonce || body. */
void sig_auth_tag(const uint8_t *key, uint8_t direction, const uint8_t *device_nonce,
                  const uint8_t *gateway_nonce, const uint8_t *body, size_t len, uint8_t *tag);
#define SIG__AUTH_ROOM 20u /* counter, nonce and tag: what the transmit buffer holds more */
#else
#define SIG__AUTH_ROOM 0u
#endif

/* ------------------------------------------------------------------------ */
/* Reliable UART mode (PROTOCOL.md section 5), with SIG_CONFIG_RELIABLE = 1   */
/* ------------------------------------------------------------------------ */

#define SIG_FEATURE_RELIABLE 0x01u
#define SIG_FEATURE_AUTH 0x02u

/* Counters of the reliable mode (all 0 without SIG_CONFIG_RELIABLE or a
 * gateway that grants it); they count across sessions. */
typedef struct {
    uint32_t retransmits;       /* frames sent again (a timeout that resends 2 kept frames adds 2) */
    uint32_t duplicates;        /* sequenced frames received again (dropped, ACKed) */
    uint32_t out_of_order;      /* sequenced frames after a gap (dropped, ACKed: go-back-N) */
    uint32_t bad_acks;          /* ACKs of a seq never sent, or without a reliable session */
    uint32_t reliable_failures; /* sessions ended after SIG_CONFIG_RELIABLE_MAX_RETRIES retransmissions */
    uint32_t reliable_dropped;  /* answers the library makes itself (an ERROR, a RESPONSE
                                   NO_SUCH_METHOD / MALFORMED) dropped because the window was full */
    uint32_t busy;              /* sequenced sends refused for a full window: the application's
                                   calls got SIG_ERR_BUSY; reliable_dropped of them were answers
                                   of the library's own */
} sig_reliable_stats_t;

#if SIG_CONFIG_RELIABLE
/* the sequence header (a seq varint of at most 5 bytes) on top of a body */
#define SIG__SEQ_ROOM 5u
/* a kept frame: the body before signing (with the counter's room when signed) */
#define SIG__REL_SLOT (SIG_CONFIG_TX_MAX_BODY + SIG__SEQ_ROOM + (SIG__AUTH_ROOM != 0u ? SIG__AUTH_ROOM - SIG_AUTH_TAG_LEN : 0u))
#else
#define SIG__SEQ_ROOM 0u
#endif

typedef struct sig_device sig_device_t;

/* The transmit buffer frames in place (one write() per frame) unless
 * SIG_CONFIG_TX_IN_PLACE is 0 or a body may hold a run of 254 bytes:
 * then 2 bytes in front (a lone 0x00, the first COBS code) and the
 * delimiter behind. */
#if SIG_CONFIG_TX_IN_PLACE && SIG_CONFIG_TX_MAX_BODY + SIG__AUTH_ROOM + SIG__SEQ_ROOM <= 252
#define SIG__TX_IN_PLACE 1
#define SIG__TX_HEAD 2u
#else
#define SIG__TX_IN_PLACE 0
#define SIG__TX_HEAD 0u
#endif

typedef uint8_t sig_sender_t;     /* sender handle: index of registration */
typedef uint16_t sig_event_ref_t; /* event handle: the event_ref on the wire */

/* A received EVENT or RETAINED, for listeners. Slices point into the receive
 * buffer and are valid during the callback only. flags: 0 for an EVENT;
 * SIG_EVENT_RETAINED for a retained last value the gateway sends when the
 * listener registers (RETAINED, PROTOCOL.md section 4), with SIG_EVENT_STALE
 * too when its sender is not connected now. */
#define SIG_EVENT_RETAINED 0x01u
#define SIG_EVENT_STALE 0x02u
typedef struct {
    sig_bytes_t sender, event, data;
    uint8_t flags;
} sig_event_t;

/* A received REQUEST for one of this device's senders. */
typedef struct {
    uint32_t request_id;
    sig_bytes_t sender, method, data;
} sig_request_t;

/* A RESPONSE to a REQUEST this device sent (status SIG_CODE_TIMEOUT when the
 * local timeout fired; then message and data are empty). */
typedef struct {
    uint32_t request_id;
    uint32_t status;
    sig_bytes_t message, data;
} sig_response_t;

typedef void (*sig_event_cb)(sig_device_t *dev, void *user, const sig_event_t *ev);
/* A request handler answers with sig_device_respond(dev, req->request_id, ...),
 * during the call or later. */
typedef void (*sig_request_cb)(sig_device_t *dev, void *user, const sig_request_t *req);
typedef void (*sig_response_cb)(sig_device_t *dev, void *user, const sig_response_t *resp);

typedef struct {
    const char *name;
    sig_request_cb handler;
} sig_method_t;

/* A sender, described in (usually const, flash) memory the application keeps
 * alive as long as the device: the library stores the pointer only. */
typedef struct {
    const char *name;
    const char *const *events;  /* event names; index i gets its own event_ref */
    uint8_t n_events;
    const sig_method_t *methods;
    uint8_t n_methods;
    sig_request_cb default_handler; /* NULL: none (unknown methods -> NO_SUCH_METHOD) */
    void *user;                     /* passed to the handlers */
    /* REGISTER_SENDER's meta: one pre-encoded CBOR map describing the sender
     * (PROTOCOL.md section 4, "Sender metadata": "retained", "describe", ...),
     * sent as it is (not checked here: the gateway answers a bad one with
     * ERROR); NULL / 0 for none. Read like the names (from flash with
     * SIG_CONFIG_NAMES_IN_FLASH); it must fit the transmit buffer with the rest. */
    const uint8_t *meta;
    size_t meta_len;
    /* SIG_CONFIG_RELIABLE: bit i set = event i's triggers are sequenced in a
     * reliable session (acknowledged, sent again until they are, in order;
     * sig_device_trigger returns SIG_ERR_BUSY while the window is full). The
     * other events stay best effort. Events 32 and up cannot be marked. */
    uint32_t reliable;
} sig_sender_desc_t;

typedef enum {
    SIG_STATUS_HELLO = 1,      /* HELLO sent */
    SIG_STATUS_WELCOME,        /* WELCOME received; registrations sent */
    SIG_STATUS_REGISTERED,     /* SENDER_REGISTERED; ref = sender handle */
    SIG_STATUS_LISTENING,      /* LISTENING; ref = listener handle */
    SIG_STATUS_INVITE,         /* INVITE received: starting over */
    SIG_STATUS_NO_SESSION,     /* ERROR(NO_SESSION) received: starting over */
    SIG_STATUS_LINK_TIMEOUT,   /* nothing received for 3 x keepalive: starting over */
    SIG_STATUS_DATA_DROPPED,   /* EVENT/REQUEST/RESPONSE with data that is not one CBOR item */
    SIG_STATUS_RELIABLE_FAILED /* SIG_CONFIG_RELIABLE: a frame was sent again
                                  SIG_CONFIG_RELIABLE_MAX_RETRIES times without an ACK:
                                  starting over (HELLO) */
} sig_status_t;

typedef void (*sig_status_cb)(sig_device_t *dev, void *user, sig_status_t status, uint32_t ref);
/* An ERROR message from the gateway (code; about = the type of the message it
 * answers, e.g. SIG_MSG_REGISTER_SENDER; ref = the id of that message, e.g.
 * DUPLICATE_SENDER about REGISTER_SENDER with ref = sender_ref = sender
 * handle + 1; message). PROTOCOL.md section 2, "Errors". */
typedef void (*sig_error_cb)(sig_device_t *dev, void *user, uint32_t code, uint32_t about, uint32_t ref,
                             sig_bytes_t message);

typedef struct {
    const char *name;      /* device name in HELLO, 1..255 bytes, kept by pointer */
    uint16_t max_body;     /* announced receive limit; 0 = SIG_CONFIG_MAX_BODY */
    uint16_t keepalive_ms; /* asked for; 0 = the gateway's default */
    sig_platform_t platform;
    sig_status_cb on_status; /* may be NULL */
    sig_error_cb on_error;   /* may be NULL */
    void *user;              /* passed to on_status / on_error */
#if SIG_CONFIG_AUTH
    /* The 32-byte key shared with the gateway's port (kept by pointer; it may
     * be in flash). NULL: this device does not sign. */
    const uint8_t *auth_key;
    /* Writes 8 bytes that never repeat under the key into nonce, for each
     * HELLO (a hardware random generator, or a boot counter kept in flash
     * and a count of HELLOs: PROTOCOL.md section 5). Required with a key. */
    void (*auth_nonce)(void *user, uint8_t *nonce);
#endif
} sig_device_config_t;

/* The device context. Declare one (static or on the stack); fields are
 * private. sizeof(sig_device_t) is all the RAM the library uses. */
struct sig_device {
    /* small fields first: Thumb-1 loads reach byte fields at offsets 0..31 only */
    uint8_t state;
    uint8_t tx_torn;         /* a write failed: send 0x00 first */
    uint8_t spare[2];        /* (free slots are senders[i] == NULL, listeners[i].cb == NULL) */
    uint16_t ping_token;
    uint16_t max_body;       /* ours */
    uint16_t peer_max_body;  /* the gateway's, from WELCOME */
    uint16_t keepalive_req;  /* asked for in HELLO */
    uint16_t keepalive_ms;   /* agreed in WELCOME */
    sig_platform_t plat;
    const char *name;
    sig_status_cb on_status;
    sig_error_cb on_error;
    void *user;
    uint32_t last_rx, last_tx, last_hello;
    uint32_t next_request_id;
    uint32_t data_dropped;
    const sig_sender_desc_t *senders[SIG_CONFIG_MAX_SENDERS];
    struct {
        const char *sender, *event;
        sig_event_cb cb;
        void *user;
    } listeners[SIG_CONFIG_MAX_LISTENERS];
    uint8_t listen_opts[SIG_CONFIG_MAX_LISTENERS]; /* LISTEN options of each listener */
#if SIG_CONFIG_RELIABLE
    /* the reliable mode (sig_reliable.c): a window of kept frames, oldest at rel_head */
    uint8_t rel_on;          /* this session negotiated RELIABLE */
    uint8_t rel_trig;        /* the TRIGGER being sent is of a reliable event */
    uint8_t rel_head, rel_kept, rel_retries;
    uint16_t rel_rto;        /* current retransmission timeout, ms */
    uint16_t rel_len[SIG_CONFIG_RELIABLE_WINDOW];
    uint32_t rel_todo;       /* registrations still to send: bit i sender i, bit
                                SIG_CONFIG_MAX_SENDERS + j listener j (window full) */
    uint32_t rel_expected;   /* next seq accepted from the gateway */
    uint32_t rel_next;       /* next seq sent (0: used up, the session ends) */
    uint32_t rel_deadline;   /* retransmission timer, while frames are kept */
    uint32_t rel_fast;       /* the oldest kept seq of the last fast retransmit (0: none) */
    sig_reliable_stats_t rel_stats;
    uint8_t rel_buf[SIG_CONFIG_RELIABLE_WINDOW][SIG__REL_SLOT];
#endif
    struct {
        uint32_t id, deadline;
        sig_response_cb cb;
        void *user;
    } pending[SIG_CONFIG_MAX_PENDING];
    sig_rx_t rx;
#if SIG_CONFIG_AUTH
    const uint8_t *auth_key;
    void (*auth_nonce)(void *user, uint8_t *nonce);
    uint32_t auth_tx, auth_rx;             /* last counter sent / accepted */
    uint8_t auth_nd[SIG_AUTH_NONCE_LEN];   /* the session's nonces */
    uint8_t auth_ng[SIG_AUTH_NONCE_LEN];
    sig_auth_stats_t auth_stats;
#endif
    uint8_t rx_buf[SIG_CONFIG_MAX_BODY + SIG_CRC_SIZE];
    uint8_t tx_buf[SIG__TX_HEAD + SIG_CONFIG_TX_MAX_BODY + SIG__AUTH_ROOM + SIG__SEQ_ROOM + SIG_CRC_SIZE +
                   SIG__TX_HEAD / 2u];
};

/* The configuration as a file sees it when it includes sig_device.h: the
 * size of sig_device_t and the options that are not sizes. sig_device_init
 * passes the application's to the library, which compares it with its own. */
#define SIG_CONFIG_FINGERPRINT                                                              \
    ((uint32_t)sizeof(sig_device_t) ^ ((uint32_t)SIG_CONFIG_MAX_EVENTS << 18) ^            \
     ((uint32_t)SIG_CONFIG_CBOR_MAX_DEPTH << 24) ^ ((uint32_t)(SIG_CONFIG_NAMES_IN_FLASH != 0) << 28) ^ \
     ((uint32_t)(SIG_CONFIG_CHECK_DATA != 0) << 29) ^ ((uint32_t)(SIG_CONFIG_AUTH != 0) << 17) ^ \
     ((uint32_t)(SIG_CONFIG_RELIABLE != 0) << 16) ^                                          \
     ((uint32_t)(SIG_CONFIG_CHECK_UTF8 != 0) << 30) ^ ((uint32_t)(SIG_CONFIG_FULL_CODEC != 0) << 31))

/* Set up dev from cfg (the device is idle until sig_device_start). Fails with
 * SIG_ERR_CONFIG, before it touches *dev, when the application's
 * SIG_CONFIG_FINGERPRINT is not the library's: a sig_config.h option was set
 * for one and not the other (sig_config.h says how to set them for both);
 * SIG_ERR_ARG for a bad cfg. Call it as sig_device_init(dev, cfg). */
#define sig_device_init(dev, cfg) sig_device_init_checked((dev), (cfg), SIG_CONFIG_FINGERPRINT)
SIG_CHECK sig_err_t sig_device_init_checked(sig_device_t *dev, const sig_device_config_t *cfg,
                                            uint32_t fingerprint);

/* Registrations: allowed any time; while online they are sent at once,
 * otherwise after the next WELCOME (and again after every INVITE). */
SIG_CHECK sig_err_t sig_device_add_sender(sig_device_t *dev, const sig_sender_desc_t *desc,
                                          sig_sender_t *out);
/* Handle of event `index` of a sender, for sig_device_trigger. */
SIG_CHECK sig_err_t sig_device_event(const sig_device_t *dev, sig_sender_t sender,
                                     uint8_t index, sig_event_ref_t *out);
/* A listener: sender / event may be NULL (wildcard, PROTOCOL.md section 4);
 * options: a SIG_LISTEN_POLICY_* value, | SIG_LISTEN_NO_LOCAL (no EVENT for
 * this device's own triggers), sent as LISTEN's options (SIG_ERR_ARG for
 * another bit or policy 3). sig_device_listen is options 0 (drop, own events
 * delivered), which LISTEN carries as nothing: a macro, so no wrapper is linked. */
SIG_CHECK sig_err_t sig_device_listen_opts(sig_device_t *dev, const char *sender, const char *event,
                                           uint8_t options, sig_event_cb cb, void *user, uint8_t *out);
#define sig_device_listen(dev, sender, event, cb, user, out) \
    sig_device_listen_opts((dev), (sender), (event), 0u, (cb), (user), (out))

/* Send a lone 0x00 and HELLO; the session runs from here on. */
SIG_CHECK sig_err_t sig_device_start(sig_device_t *dev);
/* Push received bytes. Complete frames are handled inside the call (the
 * callbacks run in it), so call it from the main loop; from an ISR, queue the
 * bytes in a ring buffer and feed them from the loop. Returns the first
 * SIG_ERR_IO of an answer it had to send, else SIG_OK. */
/* feed, feed_byte, poll and trigger are not SIG_CHECK: a main loop calls
 * them all the time, and what they return (SIG_ERR_IO of an answer or a
 * PING the library sends by itself, SIG_ERR_STATE of a reading taken before
 * WELCOME) is worth counting, not stopping for; forcing `(void)!` on every
 * call taught ignoring everything. Setup calls, request and respond stay
 * SIG_CHECK: their failure means a handle, a registration or an answer is
 * missing. */
sig_err_t sig_device_feed(sig_device_t *dev, const uint8_t *buf, size_t len);
sig_err_t sig_device_feed_byte(sig_device_t *dev, uint8_t byte);
/* Timers: HELLO retry, PING after keepalive_ms without sending, link timeout
 * after 3 x keepalive_ms without a valid frame, request timeouts. Call often,
 * or when sig_device_next_deadline() says. */
sig_err_t sig_device_poll(sig_device_t *dev);
/* Milliseconds until sig_device_poll has something to do (0: now), for a
 * device that sleeps between timers; SIG_NO_DEADLINE when no timer runs
 * (not started, keepalive 0 and no request pending). Received bytes need
 * feeding as well: wake up on the UART too. */
#define SIG_NO_DEADLINE 0xFFFFFFFFu
uint32_t sig_device_next_deadline(const sig_device_t *dev);

/* TRIGGER: data is one CBOR item or len 0 (no data). SIG_ERR_STATE before WELCOME. */
sig_err_t sig_device_trigger(sig_device_t *dev, sig_event_ref_t ev, const uint8_t *data, size_t len);
/* REQUEST to another sender; cb gets the RESPONSE or a local TIMEOUT. */
SIG_CHECK sig_err_t sig_device_request(sig_device_t *dev, const char *sender, const char *method,
                                       const uint8_t *params, size_t len, uint32_t timeout_ms,
                                       sig_response_cb cb, void *user, uint32_t *request_id);
/* RESPONSE to a REQUEST received by a handler. status SIG_CODE_OK with data
 * (CBOR or len 0), or an error code with a message (may be NULL). */
SIG_CHECK sig_err_t sig_device_respond(sig_device_t *dev, uint32_t request_id, uint32_t status,
                                       const char *message, const uint8_t *data, size_t len);

/* Take back a sender (sig_device_add_sender) or a listener
 * (sig_device_listen): while online, UNREGISTER_SENDER(sender_ref) or
 * UNLISTEN(listener_id) is sent. The slot is free at once (even when that
 * message fails; it is then gone with the next session anyway) and taken by
 * the next add_sender / listen, with the same handle and event refs.
 * SIG_ERR_NOT_FOUND for a handle not in use. */
SIG_CHECK sig_err_t sig_device_remove_sender(sig_device_t *dev, sig_sender_t sender);
SIG_CHECK sig_err_t sig_device_unlisten(sig_device_t *dev, uint8_t listener);
/* End it all: while online, UNLISTEN for every listener and UNREGISTER_SENDER
 * for every sender (on a UART this ends the session, PROTOCOL.md section 3);
 * pending requests are dropped without a callback; the device is idle, with
 * no timers. Returns the first error of those messages. Call sig_device_init
 * before using dev again. */
SIG_CHECK sig_err_t sig_device_deinit(sig_device_t *dev);

bool sig_device_online(const sig_device_t *dev);
const sig_rx_stats_t *sig_device_rx_stats(const sig_device_t *dev);
/* Frames dropped by the signature checks (all 0 without SIG_CONFIG_AUTH or a key). */
const sig_auth_stats_t *sig_device_auth_stats(const sig_device_t *dev);
/* The reliable mode's counters (all 0 without SIG_CONFIG_RELIABLE), and
 * whether the open session is reliable (the gateway granted the feature). */
const sig_reliable_stats_t *sig_device_reliable_stats(const sig_device_t *dev);
bool sig_device_reliable(const sig_device_t *dev);
/* Frames sent and not acknowledged yet (0 without a reliable session): 0
 * means the gateway has everything, e.g. before a device sleeps or stops. */
uint8_t sig_device_unacked(const sig_device_t *dev);
/* Agreed keepalive (0 before WELCOME) and the gateway's max_body. */
uint16_t sig_device_keepalive_ms(const sig_device_t *dev);

#ifdef __cplusplus
}
#endif

#endif /* SIG_DEVICE_H */
