/* A project's own settings header, named by -DSIG_CONFIG_USER_HEADER (the
 * test of that hook: tests/config_mismatch.c built with it must see 6
 * listeners, so its fingerprint differs from the library's). */
#ifndef USER_CFG_TEST_H
#define USER_CFG_TEST_H
#define SIG_CONFIG_MAX_LISTENERS 6
#endif
