#ifndef REF_RX_H
#define REF_RX_H
#include "sig_device.h"
/* The previous frame decoder, as an oracle for the random tests. */
sig_err_t ref_rx_init(sig_rx_t *rx, uint8_t *buf, size_t buf_len, uint16_t max_body);
bool ref_rx_feed(sig_rx_t *rx, uint8_t byte);
#endif
