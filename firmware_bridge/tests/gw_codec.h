/* tests/gw_codec.c: the full codec (every type, both ways) whatever the profile. */
#ifndef GW_CODEC_H
#define GW_CODEC_H
#include "sig_device.h"
sig_err_t gw_msg_encode(const sig_msg_t *m, uint8_t *buf, size_t cap, size_t *out_len);
sig_err_t gw_msg_decode(const uint8_t *body, size_t len, sig_msg_t *m);
/* what the library of this profile encodes / decodes itself (the others
 * return SIG_ERR_UNSUPPORTED when SIG_CONFIG_FULL_CODEC is 0) */
int lib_encodes(sig_msg_type_t t);
int lib_decodes(uint8_t t);
#endif
