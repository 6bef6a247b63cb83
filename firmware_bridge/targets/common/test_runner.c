/*
 * The C test suite on a target: every TEST of tests/test_main.c (the list is
 * generated from it by targets.mk, minus TARGET_EXCLUDED, which this run
 * names), with the same output as the host runner, then the stack
 * high-water mark and the summary line, and the result as the run's exit
 * status (QEMU semihosting, simavr: see targets/avr/simavr_run.c).
 */
#include <stdio.h>
#include <stdlib.h>

#include "target.h"
#include "unittest.h"

int main(void)
{
    target_init();
    printf("target %s, sizeof(int) %u, sizeof(size_t) %u, sizeof(void *) %u, sizeof(double) %u\n",
           TARGET_NAME, (unsigned)sizeof(int), (unsigned)sizeof(size_t), (unsigned)sizeof(void *),
           (unsigned)sizeof(double));
#include "target_run_list.h"
    printf("stack peak %lu of %lu bytes\n", (unsigned long)target_stack_peak(),
           (unsigned long)target_stack_size());
    printf("%d checks\n", ut_checks);
    printf("%d passed, %d failed\n", ut_passed, ut_failed);
    fflush(stdout);
    target_exit(ut_failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
