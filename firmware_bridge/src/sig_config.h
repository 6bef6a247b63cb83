/*
 * sig_config.h - compile-time sizes of the sig device library.
 *
 * Every option is a macro with a small default. Override them for the
 * library and the application alike, in one of three ways:
 *   - in sig_config_user.h (next to this file; the Arduino IDE way, no flags),
 *   - in a header of your own, named by -DSIG_CONFIG_USER_HEADER='"x.h"'
 *     (then sig_config_user.h is not read),
 *   - on the compiler command line for every file (-DSIG_CONFIG_MAX_BODY=256).
 * Do not define them only in the application before including sig_device.h:
 * the library's own files would not see them. sig_device_init() compares the
 * application's SIG_CONFIG_FINGERPRINT with the library's and fails with
 * SIG_ERR_CONFIG when they differ. All memory the library uses lives in the
 * sig_device_t the application declares; these macros decide its size.
 */
#ifndef SIG_CONFIG_H
#define SIG_CONFIG_H

#ifdef SIG_CONFIG_USER_HEADER
#include SIG_CONFIG_USER_HEADER
#else
#include "sig_config_user.h"
#endif

/* Largest message body this device receives, in bytes (PROTOCOL.md section 1:
 * announced as max_body in HELLO). Receive buffer = SIG_CONFIG_MAX_BODY + 2
 * bytes (body + CRC). Range 3..65535. */
#ifndef SIG_CONFIG_MAX_BODY
#define SIG_CONFIG_MAX_BODY 128
#endif

/* Largest message body this device sends, in bytes. Transmit buffer =
 * SIG_CONFIG_TX_MAX_BODY + 2 bytes. A REGISTER_SENDER with all names of one
 * sender must fit. The gateway's max_body from WELCOME may lower the limit
 * further at run time. Range 16..65535. */
#ifndef SIG_CONFIG_TX_MAX_BODY
#define SIG_CONFIG_TX_MAX_BODY 128
#endif

/* Senders one device can register. */
#ifndef SIG_CONFIG_MAX_SENDERS
#define SIG_CONFIG_MAX_SENDERS 2
#endif

/* Events per sender (event_ref = sender index * this + event index + 1). */
#ifndef SIG_CONFIG_MAX_EVENTS
#define SIG_CONFIG_MAX_EVENTS 8
#endif

/* Listener registrations (LISTEN) one device can hold. */
#ifndef SIG_CONFIG_MAX_LISTENERS
#define SIG_CONFIG_MAX_LISTENERS 4
#endif

/* Outgoing REQUESTs that can wait for their RESPONSE at the same time. */
#ifndef SIG_CONFIG_MAX_PENDING
#define SIG_CONFIG_MAX_PENDING 2
#endif

/* Nesting depth sig_cbor_skip() accepts when it checks that event data is one
 * well-formed CBOR item (arrays, maps, tags, indefinite strings). Each level
 * costs 4 bytes of stack. */
#ifndef SIG_CONFIG_CBOR_MAX_DEPTH
#define SIG_CONFIG_CBOR_MAX_DEPTH 8
#endif

/* 1: check that received EVENT/REQUEST/RESPONSE data is exactly one CBOR item
 * and drop (and count) those that are not, as PROTOCOL.md section 2 asks of a
 * receiver. 0 saves the flash of the CBOR walker; callbacks then see any data. */
#ifndef SIG_CONFIG_CHECK_DATA
#define SIG_CONFIG_CHECK_DATA 1
#endif

/* 1: names and texts received must be valid UTF-8 (INVALID_NAME /
 * MALFORMED otherwise), as PROTOCOL.md section 2 says. 0 saves ~200 bytes of
 * flash: the device compares names byte for byte and never needs to decode
 * them, and the gateway validates every name it forwards. */
#ifndef SIG_CONFIG_CHECK_UTF8
#define SIG_CONFIG_CHECK_UTF8 1
#endif

/* 1: the message codec handles every message type in both directions (the
 * gateway's view too: decode HELLO/REGISTER_SENDER/LISTEN/..., encode
 * WELCOME/EVENT/...). Host tests and the ctypes library build with 1.
 * 0 (default): only what a device sends and receives is compiled in; decoding a
 * peer-to-gateway message returns SIG_ERR_UNSUPPORTED and the session ignores it. */
#ifndef SIG_CONFIG_FULL_CODEC
#define SIG_CONFIG_FULL_CODEC 0
#endif

/* 1: every frame is written with one platform write() call: the transmit
 * buffer gets 3 more bytes and COBS-encodes the frame in place (for a DMA
 * UART, Arduino's Serial.write(buf, n), a socket). 0: a frame is written as
 * several calls (a code byte, then the bytes of its block), straight from the
 * body; also what happens when SIG_CONFIG_TX_MAX_BODY is above 252. */
#ifndef SIG_CONFIG_TX_IN_PLACE
#define SIG_CONFIG_TX_IN_PLACE 1
#endif

/* 1 (AVR): every string the application gives the library is in flash
 * (PROGMEM / PSTR): the device name, sender, event and method names, listen
 * filters, the sender and method of sig_device_request and the message of
 * sig_device_respond. The library reads them with pgm_read_byte, so on an
 * ATmega they take no RAM. The descriptions themselves (sig_sender_desc_t,
 * the events[] and methods[] arrays) stay in RAM. sig_bytes_eq() still
 * compares with a string in RAM. Elsewhere flash is plain memory and this
 * changes nothing. */
#ifndef SIG_CONFIG_NAMES_IN_FLASH
#define SIG_CONFIG_NAMES_IN_FLASH 0
#endif

/* 1: signed frames (PROTOCOL.md section 5): with a key in
 * sig_device_config_t every frame carries a counter and a BLAKE2s-64 tag, 12
 * bytes more (20 in HELLO). Adds the BLAKE2s code (about 1 KB of flash on a
 * Cortex-M0, README "Signed frames"), 64 bytes to sig_device_t (20 of
 * them in its transmit buffer); signing or checking a frame takes about 240
 * bytes of stack. 0 (default): no signing code at all. */
#ifndef SIG_CONFIG_AUTH
#define SIG_CONFIG_AUTH 0
#endif

/* 1: the reliable UART mode (PROTOCOL.md section 5, "Reliable UART mode"):
 * HELLO asks for feature 0x01; in a session the gateway grants it, the
 * registrations, REQUESTs, RESPONSEs, ERRORs and the triggers of the events a
 * sender marks reliable (sig_sender_desc_t.reliable) are numbered, kept until
 * the gateway acknowledges them and sent again until it does; received
 * numbered frames are acknowledged, duplicates and frames after a gap dropped
 * (go-back-N: no receive buffer). Adds src/sig_reliable.c and
 * SIG_CONFIG_RELIABLE_WINDOW x (SIG_CONFIG_TX_MAX_BODY + 5) bytes of kept
 * frames (+ 12 each with SIG_CONFIG_AUTH) and about 66 more to sig_device_t
 * (README "Reliable UART mode"). 0 (default): none of it. */
#ifndef SIG_CONFIG_RELIABLE
#define SIG_CONFIG_RELIABLE 0
#endif

/* Frames sent and not yet acknowledged at most (the window); while it is full
 * a sequenced send returns SIG_ERR_BUSY. 2: a request and a response. */
#ifndef SIG_CONFIG_RELIABLE_WINDOW
#define SIG_CONFIG_RELIABLE_WINDOW 2
#endif

/* Initial retransmission timeout, ms; it doubles after each retransmission,
 * up to 8 times this, and is reset by an ACK that acknowledges something. */
#ifndef SIG_CONFIG_RELIABLE_RTO_MS
#define SIG_CONFIG_RELIABLE_RTO_MS 200
#endif

/* Retransmissions without progress after which the session ends (HELLO,
 * SIG_STATUS_RELIABLE_FAILED): 16, as the gateway (23.8 s with 200 ms). */
#ifndef SIG_CONFIG_RELIABLE_MAX_RETRIES
#define SIG_CONFIG_RELIABLE_MAX_RETRIES 16
#endif

/* Milliseconds between HELLOs while no WELCOME has come, when the device asked
 * for keepalive_ms = 0 (otherwise keepalive_ms is used). */
#ifndef SIG_CONFIG_HELLO_RETRY_MS
#define SIG_CONFIG_HELLO_RETRY_MS 2000u
#endif

#if SIG_CONFIG_MAX_BODY < 3 || SIG_CONFIG_MAX_BODY > 65535
#error "SIG_CONFIG_MAX_BODY must be within 3..65535"
#endif
#if SIG_CONFIG_TX_MAX_BODY < 16 || SIG_CONFIG_TX_MAX_BODY > 65535
#error "SIG_CONFIG_TX_MAX_BODY must be within 16..65535"
#endif
#if SIG_CONFIG_RELIABLE && (SIG_CONFIG_RELIABLE_WINDOW < 1 || SIG_CONFIG_RELIABLE_WINDOW > 255 || \
                            SIG_CONFIG_RELIABLE_RTO_MS < 4 || SIG_CONFIG_RELIABLE_RTO_MS > 8191 || \
                            SIG_CONFIG_RELIABLE_MAX_RETRIES > 255 || SIG_CONFIG_MAX_SENDERS + SIG_CONFIG_MAX_LISTENERS > 32)
#error "SIG_CONFIG_RELIABLE: WINDOW 1..255, RTO_MS 4..8191, MAX_RETRIES <= 255, MAX_SENDERS + MAX_LISTENERS <= 32"
#endif
#if SIG_CONFIG_MAX_SENDERS < 1 || SIG_CONFIG_MAX_EVENTS < 1 || \
    SIG_CONFIG_MAX_SENDERS * SIG_CONFIG_MAX_EVENTS > 65535
#error "SIG_CONFIG_MAX_SENDERS and SIG_CONFIG_MAX_EVENTS must be >= 1"
#endif

#endif /* SIG_CONFIG_H */
