/* Sizes of the structs tests/test_firmware_bridge.py mirrors with ctypes, so
 * a layout mismatch fails loudly instead of reading garbage. */
#include "sig_device.h"

size_t sigt_sizeof_msg(void);
size_t sigt_sizeof_rx(void);
size_t sigt_sizeof_reg_iter(void);
uint32_t sigt_fingerprint(void);

size_t sigt_sizeof_msg(void)
{
    return sizeof(sig_msg_t);
}

size_t sigt_sizeof_rx(void)
{
    return sizeof(sig_rx_t);
}

size_t sigt_sizeof_reg_iter(void)
{
    return sizeof(sig_reg_iter_t);
}

/* SIG_CONFIG_FINGERPRINT as this library was built (the host profile). */
uint32_t sigt_fingerprint(void)
{
    return SIG_CONFIG_FINGERPRINT;
}
