#ifndef REF_CBOR_H
#define REF_CBOR_H
#include "sig_device.h"
/* The previous sig_cbor_skip, as an oracle for the random tests. */
sig_err_t ref_cbor_skip(sig_cbor_reader_t *r);
#endif
