/*
 * AVR (ATmega2560 / ATmega1284P / ATmega328P) target layer for the test
 * runner: USART0 as the console, the exit status in GPIOR0 for simavr_run,
 * the stack painted by target_init() and measured by target_stack_peak().
 *
 * With TARGET_XMEM=1 the external memory interface is enabled in .init3,
 * before avr-libc copies .data and clears .bss, and the stack is linked at
 * the top of the 64 KB data space (-Wl,--defsym=__stack=0xFFFF).
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <stdio.h>

#include "target.h"

extern uint8_t __heap_start[]; /* end of .bss (avr-libc's linker script) */
extern uint8_t __stack[];      /* the top of the stack */

#if TARGET_XMEM
void target_xmem_init(void) __attribute__((naked, used, section(".init3")));
void target_xmem_init(void)
{
    XMCRA = _BV(SRE); /* external SRAM, no wait states, one sector */
    XMCRB = 0;
}
#endif

static int uart_put(char c, FILE *f)
{
    (void)f;
    if (c == '\n') {
        target_putc('\r');
    }
    target_putc((uint8_t)c);
    return 0;
}

static FILE console = FDEV_SETUP_STREAM(uart_put, NULL, _FDEV_SETUP_WRITE);

void target_init(void)
{
    volatile uint8_t *p;
    uint8_t *sp = (uint8_t *)SP;
    for (p = __heap_start; p < sp - 16; p++) { /* below this frame */
        *p = (uint8_t)TARGET_STACK_PAINT;
    }
    UBRR0 = 0; /* 16 MHz / 8: 2 Mbit/s with U2X, nothing waits on a real baud rate */
    UCSR0A = _BV(U2X0);
    UCSR0B = _BV(TXEN0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);
    stdout = &console;
    stderr = &console;
}

void target_putc(uint8_t c)
{
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UDR0 = c;
}

uint32_t target_stack_peak(void)
{
    const uint8_t *p = __heap_start;
    while (p <= __stack && *p == (uint8_t)TARGET_STACK_PAINT) {
        p++;
    }
    return (uint32_t)(__stack - p + 1);
}

uint32_t target_stack_size(void)
{
    return (uint32_t)(__stack - __heap_start + 1);
}

void target_exit(int status)
{
    while (!(UCSR0A & _BV(UDRE0))) { /* the last byte leaves */
    }
    GPIOR0 = (uint8_t)(0x80u | ((unsigned)status & 0x7Fu));
    cli();
    set_sleep_mode(SLEEP_MODE_PWR_DOWN);
    sleep_enable();
    for (;;) {
        sleep_cpu(); /* interrupts off: simavr ends the run here */
    }
}

void target_fault(void)
{
    target_exit(70);
}
