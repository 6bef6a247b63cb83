/* The gateway's side of the message codec, for the tests and the codec
 * fuzzer: sig_wire.c compiled once more with SIG_CONFIG_FULL_CODEC=1, its
 * functions renamed gw_*, so a test binary of a device profile (FULL_CODEC=0,
 * where the library cannot encode EVENT or WELCOME) still has a fake gateway
 * that frames every message type. sig_msg_t does not depend on the profile;
 * every other option (UTF-8 check, sizes) is the profile's. */
#undef SIG_CONFIG_FULL_CODEC
#define SIG_CONFIG_FULL_CODEC 1
#define sig__put_name gw__put_name
#define sig__put_raw gw__put_raw
#define sig__put_text gw__put_text
#define sig__put_u8 gw__put_u8
#define sig__put_varint gw__put_varint
#define sig__rx_parse gw__rx_parse
#define sig__utf8_ok gw__utf8_ok
#define sig__varint gw__varint
#define sig_msg_decode gw_msg_decode
#define sig_msg_encode gw_msg_encode
#define sig_reg_iter_init gw_reg_iter_init
#define sig_reg_next_event gw_reg_next_event
#define sig_reg_next_method gw_reg_next_method
#define sig_varint_decode gw_varint_decode
#define sig_varint_encode gw_varint_encode
#include "../src/sig_wire.c"
