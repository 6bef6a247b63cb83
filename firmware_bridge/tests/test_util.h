#ifndef TEST_UTIL_H
#define TEST_UTIL_H
#include <stdint.h>
#include "sig_device.h"

int slice_eq(sig_bytes_t a, sig_bytes_t b);
/* Field-wise equality; a REGISTER_SENDER may hold lists (decoded) on one
 * side and arrays (to encode) on the other. */
int msg_eq(const sig_msg_t *a, const sig_msg_t *b);
/* Re-encodable copy of a decoded message (REGISTER_SENDER lists -> arrays in
 * the given storage). */
void msg_to_encodable(sig_msg_t *m, sig_event_decl_t *ev, size_t ev_cap, sig_bytes_t *me, size_t me_cap);

/* xorshift32, seeded: deterministic "random" tests. */
uint32_t rnd(void);
void rnd_seed(uint32_t seed);
#endif
