/*
 * The part of the Arduino core that examples/sig_sensor/sig_sensor.ino uses,
 * on the nRF51 target layer (board.c), so that the sketch itself, unchanged,
 * is the firmware QEMU runs: Serial on UART0, millis() on TIMER0, the LED as
 * a variable, analogRead() as a deterministic fake sensor. Not a general
 * Arduino core.
 */
#ifndef TARGET_ARDUINO_H
#define TARGET_ARDUINO_H
#include <stddef.h>
#include <stdint.h>

#include "target.h"

#define HIGH 1
#define LOW 0
#define INPUT 0
#define OUTPUT 1
#define LED_BUILTIN 13
#define A0 14

class HardwareSerial {
public:
    void begin(unsigned long baud) { (void)baud; } /* UART0 runs at 115200 from target_init */
    int available() { return target_rx_available(); }
    int read() { return target_getc(); }
    size_t write(const uint8_t *buf, size_t n) { return target_write(buf, n); }
    size_t write(uint8_t b) { return target_write(&b, 1); }
};

extern HardwareSerial Serial;

static inline uint32_t millis() { return target_millis(); }
void delay(uint32_t ms);
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t value);
int digitalRead(uint8_t pin);
int analogRead(uint8_t pin);

void setup();
void loop();

#endif
