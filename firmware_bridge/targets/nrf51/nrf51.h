/* The few nRF51 registers the target layer uses (nRF51 Series Reference
 * Manual v3.0: UART 29, TIMER 19; Cortex-M0 NVIC and SCB). No vendor SDK. */
#ifndef TARGET_NRF51_H
#define TARGET_NRF51_H
#include <stdint.h>

#define REG(addr) (*(volatile uint32_t *)(addr))

/* UART0 (IRQ 2) */
#define UART0_BASE 0x40002000u
#define UART0_STARTRX REG(UART0_BASE + 0x000u)
#define UART0_STARTTX REG(UART0_BASE + 0x008u)
#define UART0_RXDRDY REG(UART0_BASE + 0x108u)
#define UART0_TXDRDY REG(UART0_BASE + 0x11Cu)
#define UART0_INTENSET REG(UART0_BASE + 0x304u)
#define UART0_ENABLE REG(UART0_BASE + 0x500u)
#define UART0_PSELTXD REG(UART0_BASE + 0x50Cu)
#define UART0_PSELRXD REG(UART0_BASE + 0x514u)
#define UART0_RXD REG(UART0_BASE + 0x518u)
#define UART0_TXD REG(UART0_BASE + 0x51Cu)
#define UART0_BAUDRATE REG(UART0_BASE + 0x524u)
#define UART_INT_RXDRDY (1u << 2)
#define UART_ENABLE_ON 4u
#define UART_BAUD_115200 0x01D7E000u
#define UART0_IRQ 2u

/* TIMER0 (IRQ 8) */
#define TIMER0_BASE 0x40008000u
#define TIMER0_START REG(TIMER0_BASE + 0x000u)
#define TIMER0_CAPTURE(n) REG(TIMER0_BASE + 0x040u + 4u * (n))
#define TIMER0_COMPARE(n) REG(TIMER0_BASE + 0x140u + 4u * (n))
#define TIMER0_INTENSET REG(TIMER0_BASE + 0x304u)
#define TIMER0_MODE REG(TIMER0_BASE + 0x504u)
#define TIMER0_BITMODE REG(TIMER0_BASE + 0x508u)
#define TIMER0_PRESCALER REG(TIMER0_BASE + 0x510u)
#define TIMER0_CC(n) REG(TIMER0_BASE + 0x540u + 4u * (n))
#define TIMER_INT_COMPARE(n) (1u << (16u + (n)))
#define TIMER0_IRQ 8u

/* Cortex-M0 NVIC */
#define NVIC_ISER REG(0xE000E100u)

#endif
