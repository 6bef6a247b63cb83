/* A tiny TEST(x) runner (after nanopb tests/common/unittests.h). */
#ifndef UNITTEST_H
#define UNITTEST_H

#include <stdio.h>
#include <string.h>

/* Defined in unittest.c, with ut_run. */
extern int ut_checks, ut_current_failed, ut_passed, ut_failed;

#define CHECK(cond)                                                              \
    do {                                                                         \
        ut_checks++;                                                             \
        if (!(cond)) {                                                           \
            printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);             \
            ut_current_failed = 1;                                               \
        }                                                                        \
    } while (0)

/* CHECK with a label (vector name) printed on failure. */
#define CHECKN(cond, label)                                                      \
    do {                                                                         \
        ut_checks++;                                                             \
        if (!(cond)) {                                                           \
            printf("  FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__, (label), #cond); \
            ut_current_failed = 1;                                               \
        }                                                                        \
    } while (0)

/* Iterations of the seeded random tests, and the counts they must reach: all
 * of them on the host; a slow target (AVR under simavr) builds with
 * -DUT_SCALE=N and runs 1/N of each loop. */
#ifndef UT_SCALE
#define UT_SCALE 1u
#endif
#define UT_N(n) ((n) / (UT_SCALE))

#define TEST(name) void test_##name(void)
#define RUN(name)                                                                \
    do {                                                                         \
        void test_##name(void);                                                  \
        ut_run(#name, test_##name);                                              \
    } while (0)

void ut_run(const char *name, void (*fn)(void));

static inline int bytes_equal(const void *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

#endif
