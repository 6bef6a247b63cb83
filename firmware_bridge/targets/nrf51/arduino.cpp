/* The Arduino functions of Arduino.h, and main(): setup() once, then loop()
 * forever, sleeping (WFI) between two loops until a byte or the 10 ms tick
 * arrives, so that QEMU idles instead of spinning a host core. */
#include "Arduino.h"

HardwareSerial Serial;

static uint8_t led;
static uint16_t sensor_step;

void delay(uint32_t ms)
{
    uint32_t start = millis();
    while (millis() - start < ms) {
        target_idle();
    }
}

void pinMode(uint8_t pin, uint8_t mode)
{
    (void)pin;
    (void)mode;
}

void digitalWrite(uint8_t pin, uint8_t value)
{
    if (pin == LED_BUILTIN) {
        led = value;
    }
}

int digitalRead(uint8_t pin)
{
    return pin == LED_BUILTIN ? led : LOW;
}

int analogRead(uint8_t pin)
{
    (void)pin;
    sensor_step = (uint16_t)((sensor_step + 1u) % 10u);
    return 200 + 5 * sensor_step; /* 19.55 .. 23.95 degrees in the sketch's scale */
}

int main()
{
    target_init();
    setup();
    for (;;) {
        loop();
        target_idle();
    }
}
