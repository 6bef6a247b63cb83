/* An application file compiled with other sig_config.h settings than the
 * library it is linked with (the Makefile builds it three times into every
 * test binary, see MISMATCH_FN): sig_device_init must fail with
 * SIG_ERR_CONFIG and leave this file's sig_device_t alone. Before the
 * fingerprint check, the library zeroed its own, larger sizeof(sig_device_t)
 * over the application's object (ASan: stack-buffer-overflow). */
#include <string.h>

#include "sig_device.h"

int MISMATCH_FN(size_t *app_size, uint32_t *app_fingerprint);

static bool mm_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    (void)buf;
    (void)len;
    return true;
}

static uint32_t mm_millis(void *ctx)
{
    (void)ctx;
    return 0;
}

/* 1 when init refused with SIG_ERR_CONFIG and wrote nothing. */
int MISMATCH_FN(size_t *app_size, uint32_t *app_fingerprint)
{
    sig_device_t dev; /* this file's idea of the size, on the stack: ASan sees a write past it */
    sig_device_config_t cfg;
    size_t i;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "mismatch";
    cfg.platform.write = mm_write;
    cfg.platform.millis = mm_millis;
    memset(&dev, 0xA5, sizeof dev);
    *app_size = sizeof dev;
    *app_fingerprint = SIG_CONFIG_FINGERPRINT;
    if (sig_device_init(&dev, &cfg) != SIG_ERR_CONFIG) {
        return 0;
    }
    for (i = 0; i < sizeof dev; i++) {
        if (((const uint8_t *)&dev)[i] != 0xA5u) {
            return 0;
        }
    }
    return 1;
}
