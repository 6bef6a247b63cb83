/*
 * simavr_run - run an AVR ELF in simavr (libsimavr) and return its exit status.
 *
 *   simavr_run [--mcu NAME] [--freq HZ] [--xmem] [--max-cycles N] [--timing] FIRMWARE.elf
 *
 * What Debian's `simavr` program does not: UART0's bytes go to stdout as they
 * are (no colour, no line prefix); the firmware's exit status comes back as
 * ours (the firmware writes 0x80 | status to GPIOR0, then sleeps with
 * interrupts off, which ends the simulation); a cycle budget ends a run that
 * hangs. --xmem gives the MCU 64 KB of data memory: an ATmega2560 with 56 KB
 * of external SRAM on its XMEM interface (a real board option; simavr does
 * not model XMEM itself, so the data memory is simply made that large). The
 * lowest stack pointer seen is printed to stderr, next to the firmware's own
 * painted-stack figure.
 *
 * Exit status: the firmware's (0..127), 124 cycle budget spent, 125 crashed,
 * 126 stopped without an exit status, 2 usage / load error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <simavr/avr_uart.h>
#include <simavr/sim_avr.h>
#include <simavr/sim_elf.h>

#define GPIOR0_ADDR 0x3Eu /* _SFR_IO8(0x1E) */
#define SPL_ADDR 0x5Du
#define SPH_ADDR 0x5Eu

static int timing; /* --timing: the cycle count of every line, on stderr */

static void uart_out(struct avr_irq_t *irq, uint32_t value, void *param)
{
    avr_t *avr = param;
    (void)irq;
    putchar((int)(value & 0xFFu));
    if ((value & 0xFFu) == '\n') {
        fflush(stdout);
        if (timing) {
            fprintf(stderr, "simavr_run: line at cycle %llu\n", (unsigned long long)avr->cycle);
        }
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: simavr_run [--mcu NAME] [--freq HZ] [--xmem] [--max-cycles N] [--timing] FIRMWARE.elf\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *mcu = "atmega2560", *path = NULL;
    unsigned long freq = 16000000ul;
    unsigned long long max_cycles = 20000000000ull;
    int xmem = 0, i, state, rc;
    uint32_t flags = 0;
    uint16_t sp, min_sp = 0xFFFFu;
    elf_firmware_t fw;
    avr_t *avr;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mcu") == 0 && i + 1 < argc) {
            mcu = argv[++i];
        } else if (strcmp(argv[i], "--freq") == 0 && i + 1 < argc) {
            freq = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--max-cycles") == 0 && i + 1 < argc) {
            max_cycles = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--timing") == 0) {
            timing = 1;
        } else if (strcmp(argv[i], "--xmem") == 0) {
            xmem = 1;
        } else if (argv[i][0] != '-' && path == NULL) {
            path = argv[i];
        } else {
            return usage();
        }
    }
    if (path == NULL) {
        return usage();
    }
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(path, &fw) != 0) {
        fprintf(stderr, "simavr_run: cannot load %s\n", path);
        return 2;
    }
    avr = avr_make_mcu_by_name(mcu);
    if (avr == NULL) {
        fprintf(stderr, "simavr_run: unknown mcu %s\n", mcu);
        return 2;
    }
    if (xmem) {
        avr->ramend = 0xFFFFu; /* before avr_init, which sizes the data memory */
    }
    avr_init(avr);
    fw.frequency = (uint32_t)freq;
    avr_load_firmware(avr, &fw);
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~(uint32_t)AVR_UART_FLAG_STDIO; /* we print the bytes ourselves */
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT), uart_out, avr);

    for (;;) {
        state = avr_run(avr);
        sp = (uint16_t)(avr->data[SPL_ADDR] | (avr->data[SPH_ADDR] << 8));
        if (sp < min_sp && avr->cycle > 100u) { /* after the start-up code set SP */
            min_sp = sp;
        }
        if (state == cpu_Done || state == cpu_Crashed || avr->cycle >= max_cycles) {
            break;
        }
    }
    fflush(stdout);
    fprintf(stderr, "simavr_run: %s, %llu cycles, lowest SP 0x%04x (ramend 0x%04x)\n", mcu,
            (unsigned long long)avr->cycle, min_sp, avr->ramend);
    if (avr->cycle >= max_cycles && state != cpu_Done) {
        fprintf(stderr, "simavr_run: cycle budget of %llu spent\n", max_cycles);
        rc = 124;
    } else if (state == cpu_Crashed) {
        fprintf(stderr, "simavr_run: the firmware crashed\n");
        rc = 125;
    } else if (avr->data[GPIOR0_ADDR] & 0x80u) {
        rc = avr->data[GPIOR0_ADDR] & 0x7F;
    } else {
        fprintf(stderr, "simavr_run: stopped without an exit status\n");
        rc = 126;
    }
    avr_terminate(avr);
    return rc;
}
