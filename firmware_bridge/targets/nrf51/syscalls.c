/* The newlib system calls the test runner's stdio needs: stdout and stderr
 * go to the UART, the heap lies between .bss and the stack (sections.ld),
 * nothing is ever read. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "target.h"

extern char __heap_start__[], __heap_end__[];

int _write(int fd, const char *buf, int n);
int _read(int fd, char *buf, int n);
void *_sbrk(ptrdiff_t incr);
int _close(int fd);
int _fstat(int fd, struct stat *st);
int _isatty(int fd);
int _lseek(int fd, int off, int whence);
void _exit(int status);
int _kill(int pid, int sig);
int _getpid(void);

int _write(int fd, const char *buf, int n)
{
    int i;
    (void)fd;
    for (i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            target_putc('\r');
        }
        target_putc((uint8_t)buf[i]);
    }
    return n;
}

int _read(int fd, char *buf, int n)
{
    (void)fd;
    (void)buf;
    (void)n;
    return 0;
}

void *_sbrk(ptrdiff_t incr)
{
    static char *brk = __heap_start__;
    char *prev = brk;
    if (incr < 0 || incr > __heap_end__ - brk) {
        errno = ENOMEM;
        return (void *)-1;
    }
    brk += incr;
    return prev;
}

int _close(int fd)
{
    (void)fd;
    return -1;
}

int _fstat(int fd, struct stat *st)
{
    (void)fd;
    st->st_mode = S_IFCHR;
    return 0;
}

int _isatty(int fd)
{
    (void)fd;
    return 1;
}

int _lseek(int fd, int off, int whence)
{
    (void)fd;
    (void)off;
    (void)whence;
    return 0;
}

void _exit(int status)
{
    target_exit(status);
}

int _kill(int pid, int sig)
{
    (void)pid;
    (void)sig;
    errno = EINVAL;
    return -1;
}

int _getpid(void)
{
    return 1;
}
