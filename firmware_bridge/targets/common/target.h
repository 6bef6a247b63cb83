/* What the test runner and the example firmware need from a target: a
 * console, an exit status, a clock, and the stack high-water mark. One
 * implementation per target: targets/nrf51/board.c, targets/avr/board.c. */
#ifndef TARGET_H
#define TARGET_H
#include <stddef.h>
#include <stdint.h>

#define TARGET_STACK_PAINT 0xA5A5A5A5u

#ifdef __cplusplus
extern "C" {
#endif

void target_init(void);                /* clock, UART (115200 8N1), console */
void target_putc(uint8_t c);           /* blocking write of one byte */
size_t target_write(const uint8_t *p, size_t n); /* bytes written before a timeout */
int target_getc(void);                 /* a received byte, or -1 */
int target_rx_available(void);         /* received bytes waiting */
uint32_t target_millis(void);          /* free-running, wraps after 49.7 days */
void target_idle(void);                /* sleep until an interrupt (a byte, a tick) */
uint32_t target_stack_peak(void);      /* deepest stack use since reset, bytes */
uint32_t target_stack_size(void);      /* bytes reserved for the stack */
void target_exit(int status) __attribute__((noreturn)); /* end the run with a status */
void target_fault(void) __attribute__((noreturn));      /* a CPU fault: report and stop */

#ifdef __cplusplus
}
#endif
#endif
