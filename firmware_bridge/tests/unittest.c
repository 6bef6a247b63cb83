/* The runner's counters and ut_run, shared by the host runner (test_main.c)
 * and the target runner (targets/common/test_runner.c). */
#include "unittest.h"

int ut_checks, ut_current_failed, ut_passed, ut_failed;

void ut_run(const char *name, void (*fn)(void))
{
    int before = ut_checks;
    ut_current_failed = 0;
    fn();
    if (ut_checks == before) {
        printf("FAIL %s: asserted nothing\n", name);
        ut_current_failed = 1;
    }
    if (ut_current_failed) {
        ut_failed++;
        printf("FAIL %s\n", name);
    } else {
        ut_passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}
