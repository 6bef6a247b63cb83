// sig_sensor: the posix_device example on an Arduino, over Serial, using only
// the public API of sig_device.h. Install firmware_bridge as a library (its
// src/ folder holds the headers and sources), or copy src/* next to this sketch.
//
// Sender "sensor1": event "temperature" (float32, every INTERVAL_MS), channel
// event "#alarm" (every 10th reading), "echo" (the data of every timer/tick
// event it hears); requests "get_temp" (last temperature) and a default
// handler (answers the method name as text). The library starts over with
// HELLO and every registration on INVITE, ERROR(NO_SESSION) and link timeout.
// Serial carries the protocol, so there is no debug printing: the LED shows
// the session state instead (on = WELCOME received). Each frame goes out as
// one Serial.write(buf, n) (SIG_CONFIG_TX_IN_PLACE, the default). Settings:
// edit sig_config_user.h in the library's src/ folder (the IDE passes no -D);
// sig_device_init fails with SIG_ERR_CONFIG if sketch and library disagree.

extern "C" {
#include "sig_device.h"
}

static const uint32_t BAUD = 115200;
static const uint32_t INTERVAL_MS = 1000;

static sig_device_t dev;
static sig_event_ref_t ev_temp, ev_alarm, ev_echo;
static float last_temp;
static uint32_t readings, next_reading;

static bool serial_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    return Serial.write(buf, len) == len;
}

static uint32_t board_millis(void *ctx)
{
    (void)ctx;
    return millis();
}

static void on_status(sig_device_t *d, void *user, sig_status_t st, uint32_t ref)
{
    (void)d;
    (void)user;
    (void)ref;
    if (st == SIG_STATUS_WELCOME) {
        digitalWrite(LED_BUILTIN, HIGH);
    } else if (st == SIG_STATUS_HELLO) {
        digitalWrite(LED_BUILTIN, LOW);
    }
}

static void on_tick(sig_device_t *d, void *user, const sig_event_t *ev)
{
    (void)user;
    sig_device_trigger(d, ev_echo, ev->data.ptr, ev->data.len);
}

static void on_get_temp(sig_device_t *d, void *user, const sig_request_t *req)
{
    uint8_t buf[8];
    size_t n = 0;
    sig_cbor_writer_t w;
    (void)user;
    sig_cbor_writer_init(&w, buf, sizeof buf);
    sig_cbor_put_float32(&w, last_temp);
    if (sig_cbor_finish(&w, &n) == SIG_OK) {
        (void)!sig_device_respond(d, req->request_id, SIG_CODE_OK, NULL, buf, n);
    }
}

static void on_default(sig_device_t *d, void *user, const sig_request_t *req)
{
    uint8_t buf[64];
    size_t n = 0;
    sig_cbor_writer_t w;
    (void)user;
    sig_cbor_writer_init(&w, buf, sizeof buf);
    sig_cbor_put_text(&w, (const char *)req->method.ptr, req->method.len);
    if (sig_cbor_finish(&w, &n) == SIG_OK) {
        (void)!sig_device_respond(d, req->request_id, SIG_CODE_OK, NULL, buf, n);
    } else {
        (void)!sig_device_respond(d, req->request_id, SIG_CODE_HANDLER_ERROR, "name too long", NULL, 0);
    }
}

static const char *const EVENTS[] = {"temperature", "#alarm", "echo"};
static const sig_method_t METHODS[] = {{"get_temp", on_get_temp}};
static const sig_sender_desc_t SENSOR = {"sensor1", EVENTS, 3, METHODS, 1, on_default, NULL, NULL, 0, 0};

void setup()
{
    pinMode(LED_BUILTIN, OUTPUT);
    Serial.begin(BAUD);
    sig_device_config_t cfg = {};
    cfg.name = "sensor1";
    cfg.keepalive_ms = 2000;
    cfg.platform.write = serial_write;
    cfg.platform.millis = board_millis;
    cfg.on_status = on_status;
    sig_sender_t s;
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_add_sender(&dev, &SENSOR, &s) != SIG_OK ||
        sig_device_event(&dev, s, 0, &ev_temp) != SIG_OK || sig_device_event(&dev, s, 1, &ev_alarm) != SIG_OK ||
        sig_device_event(&dev, s, 2, &ev_echo) != SIG_OK ||
        sig_device_listen(&dev, "timer", "tick", on_tick, NULL, NULL) != SIG_OK) {
        for (;;) { // configuration error: blink fast
            digitalWrite(LED_BUILTIN, !digitalRead(LED_BUILTIN));
            delay(100);
        }
    }
    (void)!sig_device_start(&dev);
    next_reading = millis() + INTERVAL_MS;
}

void loop()
{
    // Serial buffers received bytes in its ISR; feed them from the loop.
    while (Serial.available() > 0) {
        sig_device_feed_byte(&dev, (uint8_t)Serial.read());
    }
    sig_device_poll(&dev);
    if (sig_device_online(&dev) && (int32_t)(millis() - next_reading) >= 0) {
        uint8_t data[8];
        size_t n = 0;
        sig_cbor_writer_t w;
        next_reading += INTERVAL_MS;
        readings++;
        last_temp = analogRead(A0) * (100.0f / 1023.0f); // any sensor
        sig_cbor_writer_init(&w, data, sizeof data);
        sig_cbor_put_float32(&w, last_temp);
        if (sig_cbor_finish(&w, &n) == SIG_OK) {
            sig_device_trigger(&dev, ev_temp, data, n);
            if (readings % 10 == 0) {
                sig_device_trigger(&dev, ev_alarm, data, n);
            }
        }
    }
}
