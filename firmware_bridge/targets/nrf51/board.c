/*
 * nRF51 platform layer for the targets: UART0 at 115200 8N1 (receive by
 * interrupt into a ring, transmit by polling TXDRDY), TIMER0 as a 1 MHz
 * 32-bit clock with a 10 ms compare interrupt to wake the CPU from WFI, and
 * the end of a run through semihosting (QEMU -semihosting; a board without a
 * debugger has no semihosting: build with TARGET_SEMIHOSTING=0 there).
 *
 * QEMU's nRF51 UART has a 6-byte receive FIFO and takes bytes from its
 * chardev only while the FIFO has room; when the ring here is full the
 * receive interrupt is masked, so the bytes wait in QEMU (and the pty)
 * instead of being dropped. Its transmitter takes one byte at a time: TXD is
 * ignored until TXDRDY says the previous byte left.
 */
#include <stdint.h>

#include "nrf51.h"
#include "target.h"

#ifndef TARGET_SEMIHOSTING
#define TARGET_SEMIHOSTING 1
#endif

#define RX_RING 256u /* a power of two: the indexes wrap with a mask */
#define TICK_US 10000u
#define TX_TIMEOUT_US 100000u

static volatile uint8_t rx_ring[RX_RING];
static volatile uint32_t rx_head, rx_tail; /* head: ISR writes; tail: main reads */
static uint32_t clock_last_us, clock_ms, clock_frac_us;

static uint32_t now_us(void)
{
    TIMER0_CAPTURE(1) = 1u;
    return TIMER0_CC(1);
}

void target_init(void)
{
    TIMER0_MODE = 0u;      /* timer */
    TIMER0_BITMODE = 3u;   /* 32 bit */
    TIMER0_PRESCALER = 4u; /* 16 MHz / 2^4 = 1 MHz */
    TIMER0_CC(0) = TICK_US;
    TIMER0_INTENSET = TIMER_INT_COMPARE(0);
    TIMER0_START = 1u;
    NVIC_ISER = 1u << TIMER0_IRQ;

    UART0_PSELTXD = 24u; /* micro:bit edge connector pins (USB bridge) */
    UART0_PSELRXD = 25u;
    UART0_BAUDRATE = UART_BAUD_115200;
    UART0_ENABLE = UART_ENABLE_ON;
    UART0_STARTTX = 1u;
    UART0_STARTRX = 1u;
    UART0_INTENSET = UART_INT_RXDRDY;
    NVIC_ISER = 1u << UART0_IRQ;
    clock_last_us = now_us();
}

void TIMER0_IRQHandler(void)
{
    TIMER0_COMPARE(0) = 0u;
    TIMER0_CC(0) = TIMER0_CC(0) + TICK_US;
}

#define UART0_INTENCLR REG(UART0_BASE + 0x308u)

void UART0_IRQHandler(void)
{
    while (UART0_RXDRDY) {
        if (rx_head - rx_tail >= RX_RING) {
            UART0_INTENCLR = UART_INT_RXDRDY; /* full: leave the rest in the UART */
            return;
        }
        UART0_RXDRDY = 0u; /* clear first: reading RXD raises it again if more wait */
        rx_ring[rx_head & (RX_RING - 1u)] = (uint8_t)UART0_RXD;
        rx_head++;
    }
}

int target_getc(void)
{
    int c;
    if (rx_head == rx_tail) {
        return -1;
    }
    c = rx_ring[rx_tail & (RX_RING - 1u)];
    rx_tail++;
    UART0_INTENSET = UART_INT_RXDRDY; /* there is room again */
    return c;
}

int target_rx_available(void)
{
    return (int)(rx_head - rx_tail);
}

static int put_byte(uint8_t c)
{
    uint32_t start = now_us();
    UART0_TXDRDY = 0u;
    UART0_TXD = c;
    while (!UART0_TXDRDY) {
        if (now_us() - start > TX_TIMEOUT_US) {
            return 0;
        }
    }
    return 1;
}

void target_putc(uint8_t c)
{
    (void)put_byte(c);
}

size_t target_write(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (!put_byte(p[i])) {
            break;
        }
    }
    return i;
}

uint32_t target_millis(void)
{
    uint32_t now = now_us();
    clock_frac_us += now - clock_last_us;
    clock_last_us = now;
    clock_ms += clock_frac_us / 1000u;
    clock_frac_us %= 1000u;
    return clock_ms;
}

void target_idle(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    if (rx_head == rx_tail) {
        __asm__ volatile("wfi" ::: "memory"); /* a pending interrupt wakes it even masked */
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

#if TARGET_SEMIHOSTING
static void semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
}
#endif

void target_exit(int status)
{
#if TARGET_SEMIHOSTING
    /* SYS_EXIT_EXTENDED (0x20): {ADP_Stopped_ApplicationExit, status} */
    static uint32_t block[2];
    block[0] = 0x20026u;
    block[1] = (uint32_t)status;
    semihost(0x20u, block);
    semihost(0x18u, (const void *)(uintptr_t)(status == 0 ? 0x20026u : 0x20023u)); /* SYS_EXIT */
#else
    (void)status;
#endif
    for (;;) {
        __asm__ volatile("wfi");
    }
}

void target_fault(void)
{
    static const char msg[] = "\r\nFAULT\r\n";
    const char *p;
    for (p = msg; *p; p++) {
        target_putc((uint8_t)*p);
    }
    target_exit(70);
}
