/* Internal helpers shared by the library's .c files; not part of the API. */
#ifndef SIG_INTERNAL_H
#define SIG_INTERNAL_H

#include "sig_device.h"

/* Body writer: sig_cbor_writer_t with a sticky error, every put checks
 * `n > cap - len` before it writes. */
typedef sig_cbor_writer_t sig_wr_t;

void sig__put_raw(sig_wr_t *w, const uint8_t *p, size_t n);
void sig__put_u8(sig_wr_t *w, uint8_t b);
void sig__put_varint(sig_wr_t *w, uint32_t v);
/* name: 1..255 bytes (optional: 0 allowed); else SIG_ERR_INVALID_NAME. */
void sig__put_name(sig_wr_t *w, const uint8_t *p, size_t n, bool optional);
void sig__put_text(sig_wr_t *w, const uint8_t *p, size_t n);
size_t sig__strlen(const char *s);

#endif
