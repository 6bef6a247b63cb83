/*
 * posix_device - a sensor board on a serial port (or a pty), using only the
 * public API of sig_device.h.
 *
 *   posix_device --port PATH [--baud N] [--name NAME] [--sender NAME]
 *                [--interval-ms N] [--count N] [--keepalive-ms N] [--counter]
 *
 * Device name and sender name default to "sensor1". The sender declares the
 * events "temperature" (float32, every interval), "#alarm" (every 10th
 * reading, same value) and "echo"; it answers the request "get_temp" (the last
 * temperature) and any other method with a default handler (the method name
 * as text). It listens to ("timer", "tick") and triggers "echo" with the same
 * data. After --count readings (0 = forever) it exits 0. --counter sends the
 * reading's number (1, 2, 3, ... as a CBOR int) as "temperature" instead.
 *
 * Built with SIG_CONFIG_RELIABLE=1 (build/posix_device_reliable) it asks for
 * the reliable UART mode and marks "temperature" reliable ("#alarm" and
 * "echo" stay best effort): a reading the window has no room for
 * (SIG_ERR_BUSY) is tried again until it goes, an answer too, and "done"
 * waits until the gateway has acknowledged everything.
 *
 * stdout, one flushed line per notable thing:
 *   hello | welcome | registered SENDER | listening SENDER EVENT
 *   trigger temperature VALUE | trigger #alarm VALUE
 *   event SENDER EVENT VALUE | echo VALUE | request METHOD
 *   error CODE MESSAGE | invite | no_session | link_timeout | data_dropped N
 *   reliable_failed       (16 retransmissions without an ACK: starting over)
 *   reliable retransmits N duplicates N ... (before "done", built with the mode)
 *   tty_error REASON        (then exit status 2)
 *   done                    (after --count readings, exit status 0)
 * VALUE is the CBOR data as text: an int, a float (%g), "text" in quotes,
 * true/false/null, "-" for no data, or hex:... for anything else.
 *
 * The tty going away (EOF, EIO, POLLHUP, a failed write) ends the program with
 * "tty_error ..." and exit status 2: a supervisor (systemd, the test) restarts
 * it. An INVITE from the gateway makes the library start over with HELLO and
 * every registration, printed as "invite", "hello", "welcome", ...
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "sig_device.h"

static int tty_fd = -1;
static int tty_broken;
static const char *tty_reason = "";
static float last_temp;
static sig_event_ref_t ev_echo;
static const char *sender_name = "sensor1";
/* an answer the window had no room for (SIG_ERR_BUSY): sent again from the loop */
static struct {
    int waiting;
    uint32_t id;
    uint8_t data[SIG_MAX_NAME + 3];
    size_t n;
} deferred;

static void line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- platform ---- */

static bool tty_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    while (len > 0) {
        ssize_t n = write(tty_fd, buf, len);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {tty_fd, POLLOUT, 0};
            if (poll(&p, 1, 1000) <= 0 || (p.revents & (POLLERR | POLLHUP))) {
                tty_broken = 1;
                tty_reason = "write timeout";
                return false;
            }
        } else {
            tty_broken = 1;
            tty_reason = strerror(errno);
            return false;
        }
    }
    return true;
}

static uint32_t mono_millis(void *ctx)
{
    struct timespec ts;
    (void)ctx;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static speed_t baud_of(long b)
{
    switch (b) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
    case 230400: return B230400;
#ifdef B460800
    case 460800: return B460800;
#endif
#ifdef B921600
    case 921600: return B921600;
#endif
    default: return 0;
    }
}

static int open_tty(const char *path, long baud)
{
    struct termios t;
    speed_t sp = baud_of(baud);
    int fd;
    if (sp == 0) {
        fprintf(stderr, "unsupported baud %ld\n", baud);
        return -1;
    }
    fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        t.c_cflag |= CLOCAL | CREAD;
        t.c_cc[VMIN] = 0;
        t.c_cc[VTIME] = 0;
        cfsetispeed(&t, sp);
        cfsetospeed(&t, sp);
        if (tcsetattr(fd, TCSANOW, &t) != 0) {
            fprintf(stderr, "tcsetattr %s: %s\n", path, strerror(errno));
        }
    }
    return fd;
}

/* ---- printing CBOR values ---- */

static void value_text(sig_bytes_t data, char *out, size_t cap)
{
    sig_cbor_reader_t r;
    int64_t i;
    double d;
    bool b;
    sig_bytes_t s;
    size_t k, n = 0;
    if (data.len == 0) {
        snprintf(out, cap, "-");
        return;
    }
    sig_cbor_reader_init(&r, data.ptr, data.len);
    if (sig_cbor_get_int(&r, &i) == SIG_OK && sig_cbor_at_end(&r)) {
        snprintf(out, cap, "%lld", (long long)i);
        return;
    }
    sig_cbor_reader_init(&r, data.ptr, data.len);
    if (sig_cbor_get_double(&r, &d) == SIG_OK && sig_cbor_at_end(&r)) {
        snprintf(out, cap, "%g", d);
        return;
    }
    sig_cbor_reader_init(&r, data.ptr, data.len);
    if (sig_cbor_get_bool(&r, &b) == SIG_OK && sig_cbor_at_end(&r)) {
        snprintf(out, cap, "%s", b ? "true" : "false");
        return;
    }
    sig_cbor_reader_init(&r, data.ptr, data.len);
    if (sig_cbor_get_null(&r) == SIG_OK && sig_cbor_at_end(&r)) {
        snprintf(out, cap, "null");
        return;
    }
    sig_cbor_reader_init(&r, data.ptr, data.len);
    if (sig_cbor_get_text(&r, &s) == SIG_OK && sig_cbor_at_end(&r)) {
        snprintf(out, cap, "\"%.*s\"", (int)s.len, (const char *)s.ptr);
        return;
    }
    n = (size_t)snprintf(out, cap, "hex:");
    for (k = 0; k < data.len && n + 3 < cap; k++) {
        n += (size_t)snprintf(out + n, cap - n, "%02x", data.ptr[k]);
    }
}

/* ---- callbacks ---- */

static const char *const EVENTS[] = {"temperature", "#alarm", "echo"};

static void on_status(sig_device_t *dev, void *user, sig_status_t st, uint32_t ref)
{
    (void)dev;
    (void)user;
    switch (st) {
    case SIG_STATUS_HELLO: line("hello"); break;
    case SIG_STATUS_WELCOME: line("welcome"); break;
    case SIG_STATUS_REGISTERED: line("registered %s", sender_name); break;
    case SIG_STATUS_LISTENING: line("listening timer tick"); break;
    case SIG_STATUS_INVITE: line("invite"); break;
    case SIG_STATUS_NO_SESSION: line("no_session"); break;
    case SIG_STATUS_LINK_TIMEOUT: line("link_timeout"); break;
    case SIG_STATUS_DATA_DROPPED: line("data_dropped %lu", (unsigned long)ref); break;
    case SIG_STATUS_RELIABLE_FAILED: line("reliable_failed"); break;
    }
}

static void on_error(sig_device_t *dev, void *user, uint32_t code, uint32_t about, uint32_t ref,
                     sig_bytes_t msg)
{
    (void)dev;
    (void)user;
    (void)about;
    (void)ref;
    line("error %lu %.*s", (unsigned long)code, (int)msg.len, (const char *)msg.ptr);
}

static void on_tick(sig_device_t *dev, void *user, const sig_event_t *ev)
{
    char v[128];
    sig_err_t e;
    (void)user;
    value_text(ev->data, v, sizeof v);
    line("event %.*s %.*s %s", (int)ev->sender.len, (const char *)ev->sender.ptr, (int)ev->event.len,
         (const char *)ev->event.ptr, v);
    e = sig_device_trigger(dev, ev_echo, ev->data.ptr, ev->data.len);
    if (e == SIG_OK) {
        line("echo %s", v);
    }
}

/* RESPONSE OK with data; kept for later when the reliable window is full. */
static sig_err_t answer(sig_device_t *dev, uint32_t id, const uint8_t *data, size_t n)
{
    sig_err_t e = sig_device_respond(dev, id, SIG_CODE_OK, NULL, data, n);
    if (e == SIG_ERR_BUSY && !deferred.waiting && n <= sizeof deferred.data) {
        deferred.waiting = 1;
        deferred.id = id;
        memcpy(deferred.data, data, n);
        deferred.n = n;
        return SIG_OK;
    }
    return e;
}

static void on_get_temp(sig_device_t *dev, void *user, const sig_request_t *req)
{
    uint8_t buf[8];
    size_t n = 0;
    sig_cbor_writer_t w;
    (void)user;
    line("request get_temp");
    sig_cbor_writer_init(&w, buf, sizeof buf);
    sig_cbor_put_float32(&w, last_temp);
    if (sig_cbor_finish(&w, &n) != SIG_OK || answer(dev, req->request_id, buf, n) != SIG_OK) {
        line("respond_failed get_temp");
    }
}

static void on_default(sig_device_t *dev, void *user, const sig_request_t *req)
{
    uint8_t buf[SIG_MAX_NAME + 3];
    size_t n = 0;
    sig_cbor_writer_t w;
    (void)user;
    line("request %.*s", (int)req->method.len, (const char *)req->method.ptr);
    sig_cbor_writer_init(&w, buf, sizeof buf);
    sig_cbor_put_text(&w, (const char *)req->method.ptr, req->method.len);
    if (sig_cbor_finish(&w, &n) != SIG_OK || answer(dev, req->request_id, buf, n) != SIG_OK) {
        line("respond_failed %.*s", (int)req->method.len, (const char *)req->method.ptr);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: posix_device --port PATH [--baud N] [--name NAME] [--sender NAME]\n"
                    "                    [--interval-ms N] [--count N] [--keepalive-ms N] [--counter]\n"
                    "                    [--key-file FILE]   (built with SIG_CONFIG_AUTH=1)\n");
}

#if SIG_CONFIG_AUTH
/* Signed frames (PROTOCOL.md section 5): the key from a file of 64 hex
 * digits, a nonce per HELLO from /dev/urandom. */
static uint8_t auth_key[SIG_AUTH_KEY_LEN];

static int read_key(const char *path)
{
    char hex[2 * SIG_AUTH_KEY_LEN + 1];
    unsigned i, b;
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(hex, 1, 2 * SIG_AUTH_KEY_LEN, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    hex[n] = '\0';
    for (i = 0; n == 2 * SIG_AUTH_KEY_LEN && i < SIG_AUTH_KEY_LEN; i++) {
        if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
            return 0;
        }
        auth_key[i] = (uint8_t)b;
    }
    return n == 2 * SIG_AUTH_KEY_LEN;
}

static void urandom_nonce(void *user, uint8_t *nonce)
{
    FILE *f = fopen("/dev/urandom", "rb");
    (void)user;
    if (f == NULL || fread(nonce, 1, SIG_AUTH_NONCE_LEN, f) != SIG_AUTH_NONCE_LEN) {
        fprintf(stderr, "no /dev/urandom: cannot make a nonce\n");
        exit(2);
    }
    fclose(f);
}
#endif

static int tty_gone(const char *why)
{
    line("tty_error %s", why);
    return 2;
}

int main(int argc, char **argv)
{
    const char *port = NULL, *name = "sensor1", *key_file = NULL;
    long baud = 115200, interval = 1000, count = 0, keepalive = 2000;
    static sig_device_t dev;
    sig_device_config_t cfg;
    sig_sender_desc_t desc;
    static const sig_method_t methods[] = {{"get_temp", on_get_temp}};
    sig_sender_t s;
    sig_event_ref_t ev_temp, ev_alarm;
    uint32_t next_reading = 0;
    long readings = 0;
    int i, counter = 0, pending = 0, finished = 0;
    uint8_t data[8];
    size_t data_n = 0;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--counter") == 0) {
            counter = 1;
            continue;
        }
        if (v == NULL) {
            usage();
            return 1;
        }
        if (strcmp(a, "--port") == 0) {
            port = v;
        } else if (strcmp(a, "--baud") == 0) {
            baud = strtol(v, NULL, 10);
        } else if (strcmp(a, "--name") == 0) {
            name = v;
        } else if (strcmp(a, "--sender") == 0) {
            sender_name = v;
        } else if (strcmp(a, "--interval-ms") == 0) {
            interval = strtol(v, NULL, 10);
        } else if (strcmp(a, "--count") == 0) {
            count = strtol(v, NULL, 10);
        } else if (strcmp(a, "--keepalive-ms") == 0) {
            keepalive = strtol(v, NULL, 10);
        } else if (strcmp(a, "--key-file") == 0) {
            key_file = v;
        } else {
            usage();
            return 1;
        }
        i++;
    }
    if (port == NULL || interval < 1 || count < 0 || keepalive < 0 || keepalive > 65535) {
        usage();
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    tty_fd = open_tty(port, baud);
    if (tty_fd < 0) {
        return tty_gone("open");
    }

    memset(&cfg, 0, sizeof cfg);
    cfg.name = name;
    cfg.keepalive_ms = (uint16_t)keepalive;
    cfg.platform.write = tty_write;
    cfg.platform.millis = mono_millis;
    cfg.on_status = on_status;
    cfg.on_error = on_error;
#if SIG_CONFIG_AUTH
    if (key_file != NULL) {
        if (!read_key(key_file)) {
            fprintf(stderr, "--key-file %s: not 64 hex digits\n", key_file);
            return 1;
        }
        cfg.auth_key = auth_key;
        cfg.auth_nonce = urandom_nonce;
    }
#else
    if (key_file != NULL) {
        fprintf(stderr, "--key-file needs a build with SIG_CONFIG_AUTH=1\n");
        return 1;
    }
#endif
    memset(&desc, 0, sizeof desc);
    desc.name = sender_name;
    desc.events = EVENTS;
    desc.n_events = 3;
    desc.methods = methods;
    desc.n_methods = 1;
    desc.default_handler = on_default;
    desc.reliable = 0x01u; /* "temperature" (with SIG_CONFIG_RELIABLE; ignored without) */
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_add_sender(&dev, &desc, &s) != SIG_OK ||
        sig_device_event(&dev, s, 0, &ev_temp) != SIG_OK || sig_device_event(&dev, s, 1, &ev_alarm) != SIG_OK ||
        sig_device_event(&dev, s, 2, &ev_echo) != SIG_OK ||
        sig_device_listen(&dev, "timer", "tick", on_tick, NULL, NULL) != SIG_OK) {
        fprintf(stderr, "bad device configuration (names 1..255 bytes)\n");
        return 1;
    }
    if (sig_device_start(&dev) != SIG_OK || tty_broken) {
        return tty_gone(tty_reason);
    }
    next_reading = mono_millis(NULL) + (uint32_t)interval;

    for (;;) {
        struct pollfd p = {tty_fd, POLLIN, 0};
        uint8_t buf[256];
        int pr = poll(&p, 1, 10);
        sig_err_t e;
        if (pr < 0 && errno != EINTR) {
            return tty_gone(strerror(errno));
        }
        if (pr > 0 && (p.revents & POLLIN)) {
            ssize_t n = read(tty_fd, buf, sizeof buf);
            if (n == 0) {
                return tty_gone("eof");
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return tty_gone(strerror(errno));
            }
            if (n > 0 && sig_device_feed(&dev, buf, (size_t)n) == SIG_ERR_IO) {
                return tty_gone(tty_reason);
            }
        } else if (pr > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
            return tty_gone("hangup");
        }
        e = sig_device_poll(&dev);
        if (e == SIG_ERR_IO || tty_broken) {
            return tty_gone(tty_reason);
        }
        if (deferred.waiting && sig_device_online(&dev) &&
            sig_device_respond(&dev, deferred.id, SIG_CODE_OK, NULL, deferred.data, deferred.n) != SIG_ERR_BUSY) {
            deferred.waiting = 0; /* sent (or failed for good) */
        }
        if (finished) {
            if (sig_device_unacked(&dev) == 0u && !deferred.waiting) {
#if SIG_CONFIG_RELIABLE
                const sig_reliable_stats_t *rs = sig_device_reliable_stats(&dev);
                line("reliable retransmits %lu duplicates %lu out_of_order %lu bad_acks %lu failures %lu dropped %lu "
                     "busy %lu",
                     (unsigned long)rs->retransmits, (unsigned long)rs->duplicates, (unsigned long)rs->out_of_order,
                     (unsigned long)rs->bad_acks, (unsigned long)rs->reliable_failures,
                     (unsigned long)rs->reliable_dropped, (unsigned long)rs->busy);
#endif
                line("done"); /* every reliable frame acknowledged (at once without the mode) */
                return 0;
            }
        } else if (sig_device_online(&dev) && (pending || (int32_t)(mono_millis(NULL) - next_reading) >= 0)) {
            sig_cbor_writer_t w;
            if (!pending) { /* a new reading; a pending one waits for room in the window */
                next_reading += (uint32_t)interval;
                readings++;
                last_temp = 20.0f + (float)(readings % 10) * 0.25f;
                sig_cbor_writer_init(&w, data, sizeof data);
                if (counter) {
                    sig_cbor_put_int(&w, readings);
                } else {
                    sig_cbor_put_float32(&w, last_temp);
                }
                pending = sig_cbor_finish(&w, &data_n) == SIG_OK;
            }
            e = pending ? sig_device_trigger(&dev, ev_temp, data, data_n) : SIG_ERR_ARG;
            if (e != SIG_ERR_BUSY) {
                pending = 0;
                if (e == SIG_OK && counter) {
                    line("trigger temperature %ld", readings);
                } else if (e == SIG_OK) {
                    line("trigger temperature %g", (double)last_temp);
                }
                if (readings % 10 == 0 && sig_device_trigger(&dev, ev_alarm, data, data_n) == SIG_OK) {
                    if (counter) {
                        line("trigger #alarm %ld", readings);
                    } else {
                        line("trigger #alarm %g", (double)last_temp);
                    }
                }
                finished = count > 0 && readings >= count;
            }
            if (tty_broken) {
                return tty_gone(tty_reason);
            }
        } else if (!sig_device_online(&dev) && !pending) {
            next_reading = mono_millis(NULL) + (uint32_t)interval;
        }
    }
}
