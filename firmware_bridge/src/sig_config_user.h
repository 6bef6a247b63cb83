/*
 * sig_config_user.h - your settings for the sig device library.
 *
 * sig_config.h includes this file before its defaults, so a macro defined
 * here changes the library AND every file of the application that includes
 * sig_device.h, with no compiler flag. This is the place for Arduino IDE
 * users (who cannot pass -D): edit this copy in the installed library's src/
 * folder. Keep a copy of it: updating the library replaces the folder.
 *
 * With a build system that passes flags (PlatformIO build_flags, CMake,
 * ESP-IDF, Zephyr, make), leave this file alone and either pass the macros
 * themselves (-DSIG_CONFIG_MAX_BODY=256) or name a header of your project:
 *     -DSIG_CONFIG_USER_HEADER='"my_sig_config.h"'
 * which is then included instead of this file.
 *
 * Library and application must see the same settings. Defining a macro only
 * in the sketch, before #include "sig_device.h", does not change the library's
 * own compilation: sig_device_init() then fails with SIG_ERR_CONFIG instead of
 * writing past the application's sig_device_t.
 *
 * Example (uncomment):
 * #define SIG_CONFIG_MAX_BODY 256
 * #define SIG_CONFIG_MAX_LISTENERS 8
 */
#ifndef SIG_CONFIG_USER_H
#define SIG_CONFIG_USER_H

#endif /* SIG_CONFIG_USER_H */
