/*
 * Start-up code for the nRF51 (Cortex-M0), no vendor SDK: the vector table,
 * the reset handler (copy .data, zero .bss, paint the stack, run main) and a
 * fault handler.
 *
 * The stack (__StackLimit .. __StackTop, see sections.ld) is painted with
 * TARGET_STACK_PAINT before main runs, so the deepest the stack ever went is
 * the lowest word that no longer holds the paint: target_stack_peak() here,
 * or anyone reading the RAM from outside (the hil rig reads it from QEMU).
 */
#include <stdint.h>

#include "target.h"

extern uint32_t __data_start__[], __data_end__[], __data_load__[];
extern uint32_t __bss_start__[], __bss_end__[];
extern uint32_t __StackTop[], __StackLimit[];
extern void (*__init_array_start[])(void), (*__init_array_end[])(void);

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);
void UART0_IRQHandler(void) __attribute__((weak, alias("Default_Handler")));
void TIMER0_IRQHandler(void) __attribute__((weak, alias("Default_Handler")));

/* 16 system vectors and the nRF51's 32 interrupts (UART0 = 2, TIMER0 = 8). */
__attribute__((section(".vectors"), used)) static void (*const vectors[48])(void) = {
    (void (*)(void))(uintptr_t)__StackTop,
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    [11] = Default_Handler, /* SVCall */
    [14] = Default_Handler, /* PendSV */
    [15] = Default_Handler, /* SysTick */
    [16 + 2] = UART0_IRQHandler,
    [16 + 8] = TIMER0_IRQHandler,
};

void Reset_Handler(void)
{
    uint32_t *p, *src = __data_load__;
    uint32_t *sp;
    for (p = __data_start__; p < __data_end__; p++) {
        *p = *src++;
    }
    for (p = __bss_start__; p < __bss_end__; p++) {
        *p = 0;
    }
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    /* volatile: a loop the compiler turns into a memset() call would paint
     * over memset's own frame */
    for (p = __StackLimit; p < sp; p++) { /* everything below this frame */
        *(volatile uint32_t *)p = TARGET_STACK_PAINT;
    }
    {
        void (**f)(void);
        for (f = __init_array_start; f < __init_array_end; f++) {
            (*f)();
        }
    }
    target_exit(main());
}

uint32_t target_stack_peak(void)
{
    const uint32_t *p = __StackLimit;
    while (p < __StackTop && *p == TARGET_STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)__StackTop - (uintptr_t)p);
}

uint32_t target_stack_size(void)
{
    return (uint32_t)((uintptr_t)__StackTop - (uintptr_t)__StackLimit);
}

void Fault_Handler(void)
{
    target_fault();
}

void Default_Handler(void)
{
    target_fault();
}
