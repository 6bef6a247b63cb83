# Targets (included by ../Makefile): the C test suite on a Cortex-M0 under
# QEMU (-M microbit, nRF51822) and on an AVR under simavr, and the sensor
# example as nRF51 firmware for QEMU, the device of hil/ in CI.
#
#   make target-tests     build both test images (run by tests/test_firmware_targets.py)
#   make target-m0-test   build/targets/m0/test_sig-$(TP).elf, TP = a profile of ../Makefile
#   make target-avr-test  build/targets/avr/test_sig-$(TP).elf and build/targets/simavr_run
#   make target-sensor    build/targets/m0/sig_sensor.elf (examples/sig_sensor on the nRF51)
#   make target-run-m0 / target-run-avr   build and run the suite, print its output
#
# Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm, gcc-avr,
# avr-libc, simavr and libsimavr-dev (see README.md, "Targets").

TB := $(B)/targets
ARM_OBJDUMP ?= arm-none-eabi-objdump
TGT_COMMON := targets/common
TGT_NRF51 := targets/nrf51
TGT_AVR := targets/avr
QEMU_ARM ?= qemu-system-arm
AVR_CC ?= avr-gcc
AVR_MCU ?= atmega2560

# Tests left out, per target, with the reason the runner prints:
#   cbor_float32_shortest     its table of all 65,536 halves is 256 KB of RAM
#   cbor_f64_to_f32_rounding  (AVR) its oracle is the C cast of a 64-bit
#                             double, and avr-gcc's double has 32 bits
TARGET_EXCLUDED_m0 := cbor_float32_shortest
TARGET_EXCLUDED_avr := cbor_float32_shortest cbor_f64_to_f32_rounding
TARGET_WHY_m0 := cbor_float32_shortest (a 256 KB table)
TARGET_WHY_avr := cbor_float32_shortest (a 256 KB table), cbor_f64_to_f32_rounding (needs a 64-bit double as its oracle)
# The suite's configuration on the targets: TP, one of the PROFILES of
# ../Makefile. tests/test_firmware_targets.py builds two: host (256-byte
# bodies, the full codec: every test has something to test) and default (the
# shipped sig_config.h, what a device build gets).
TP ?= host
TARGET_TEST_CONFIG = $(PROFILE_$(TP))
TARGET_TEST_SRC := tests/unittest.c tests/test_codec.c tests/test_session.c tests/test_auth.c tests/test_reliable.c tests/test_util.c tests/ref_cbor.c tests/ref_rx.c tests/gw_codec.c
TARGET_TEST_HDR := tests/unittest.h tests/test_util.h tests/ref_cbor.h tests/ref_rx.h tests/gw_codec.h $(B)/vectors.h
TARGET_INC = -Isrc -I$(B) -I$(TB)/$(1) -Itests -I$(TGT_COMMON)
TARGET_DEFS = -DTARGET_EXCLUDED='"$(TARGET_WHY_$(1))"'
MISMATCH_KINDS := size option header

.PHONY: target-tests target-m0-test target-avr-test target-sensor target-run-m0 target-run-avr

target-tests: target-m0-test target-avr-test

$(TB):
	mkdir -p $(TB)/m0 $(TB)/avr

# The RUN list of tests/test_main.c without the target's excluded tests.
$(TB)/%/target_run_list.h: tests/test_main.c targets/targets.mk | $(TB)
	sed -n 's/^ *RUN(\([a-z0-9_]*\));.*/\1/p' tests/test_main.c | grep -vxF $(TARGET_EXCLUDED_$*:%=-e %) \
	  | sed 's/.*/    RUN(&);/' > $@.tmp
	printf '    printf("not run on this target: %%s\\n", TARGET_EXCLUDED);\n' >> $@.tmp
	mv $@.tmp $@

# ---- Cortex-M0: nRF51822 under QEMU -M microbit ----

M0_ARCH := -mcpu=cortex-m0 -mthumb
M0_CFLAGS := $(M0_ARCH) -Os -g -ffunction-sections -fdata-sections -Wall -Wextra -Werror
M0_LDFLAGS := $(M0_ARCH) -nostartfiles -specs=nano.specs -L$(TGT_NRF51) -Wl,--gc-sections
M0_BOARD := $(TGT_NRF51)/startup.c $(TGT_NRF51)/board.c
M0_TEST_DEPS := $(SRC) $(HDR) $(TARGET_TEST_SRC) $(TARGET_TEST_HDR) $(TB)/m0/target_run_list.h \
  $(TGT_COMMON)/test_runner.c $(TGT_COMMON)/target.h $(M0_BOARD) $(TGT_NRF51)/syscalls.c \
  $(TGT_NRF51)/nrf51.h $(TGT_NRF51)/sections.ld $(TGT_NRF51)/nrf51_test.ld
# tests/config_mismatch.c as an application built with other settings (see ../Makefile)
M0_MISMATCH := $(MISMATCH_KINDS:%=$(TB)/m0/$(TP)/mismatch_%.o)
$(TB)/m0/$(TP)/mismatch_%.o: tests/config_mismatch.c $(HDR) tests/user_config/user_cfg_test.h | $(TB)
	mkdir -p $(@D)
	$(ARM_CC) -std=c99 $(M0_CFLAGS) $(TARGET_TEST_CONFIG) $(MISMATCH_$*) -DMISMATCH_FN=mismatch_$* -Isrc -c $< -o $@

target-m0-test: $(TB)/m0/test_sig-$(TP).elf

$(TB)/m0/test_sig-$(TP).elf: $(M0_TEST_DEPS) $(M0_MISMATCH) | $(TB)
	$(ARM_CC) -std=c99 $(M0_CFLAGS) $(TARGET_TEST_CONFIG) $(call TARGET_DEFS,m0) \
	  -DTARGET_NAME='"cortex-m0 nrf51 (qemu microbit), profile $(TP)"' $(call TARGET_INC,m0) -I$(TGT_NRF51) \
	  $(SRC) $(TARGET_TEST_SRC) $(TGT_COMMON)/test_runner.c $(M0_BOARD) $(TGT_NRF51)/syscalls.c $(M0_MISMATCH) $(M0_LDFLAGS) -Tnrf51_test.ld -Wl,--defsym=__stack_size=12288 \
	  -Wl,-Map=$(TB)/m0/test_sig-$(TP).map -lm -o $@
	$(ARM_SIZE) $@

# semihosting for the exit status; the suite's image needs 32 KB of RAM (nrf51_test.ld)
M0_QEMU := $(QEMU_ARM) -M microbit -global nrf51-soc.sram-size=32768 -display none -monitor none \
  -semihosting-config enable=on,target=native -serial stdio

target-run-m0: $(TB)/m0/test_sig-$(TP).elf
	$(M0_QEMU) -kernel $<

# What signing costs on the M0 (PROTOCOL.md section 5): tests/auth_bench.c
# with SIG_CONFIG_AUTH=1 in QEMU, instructions and TRM cycles per stretch.
.PHONY: target-auth-bench
$(TB)/m0/auth_bench.elf: tests/auth_bench.c $(SRC) $(HDR) $(B)/vectors.h $(M0_BOARD) $(TGT_NRF51)/syscalls.c | $(TB)
	$(ARM_CC) -std=c99 $(M0_CFLAGS) -DSIG_CONFIG_AUTH=1 $(call TARGET_INC,m0) -I$(TGT_NRF51) $(SRC) tests/auth_bench.c \
	  $(M0_BOARD) $(TGT_NRF51)/syscalls.c $(M0_LDFLAGS) -Tnrf51_test.ld -o $@
target-auth-bench: $(TB)/m0/auth_bench.elf
	$(PYTHON) tools/auth_cycles.py $(QEMU_ARM) $< $(ARM_OBJDUMP)

# ---- AVR: ATmega2560 with 56 KB of external SRAM, under simavr ----
# The suite keeps its tables in RAM (avr-gcc puts const data in .data: about
# 20 KB of vectors and strings), plus an 8 KB fake UART and a 4 KB stack
# peak: no AVR that simavr models has that much internal SRAM (16 KB at most),
# so the suite runs on an ATmega2560 with its XMEM interface enabled
# (simavr_run --xmem). int and size_t are 16 bits, double is 32 bits: what
# matters for the library.

# The seeded random tests run 1/AVR_UT_SCALE of their iterations (UT_N in
# tests/unittest.h): simavr does about 80 million AVR cycles a second here,
# and the full loops are about 40 billion cycles.
AVR_UT_SCALE ?= 20
AVR_CFLAGS := -mmcu=$(AVR_MCU) -Os -g -ffunction-sections -fdata-sections -Wall -Wextra -DUT_SCALE=$(AVR_UT_SCALE)u
AVR_LDFLAGS := -mmcu=$(AVR_MCU) -Wl,--gc-sections -Wl,--defsym=__stack=0xFFFF -Wl,--defsym=__DATA_REGION_LENGTH__=0xFE00
AVR_TEST_DEPS := $(SRC) $(HDR) $(TARGET_TEST_SRC) $(TARGET_TEST_HDR) $(TB)/avr/target_run_list.h \
  $(TGT_COMMON)/test_runner.c $(TGT_COMMON)/target.h $(TGT_AVR)/board.c
AVR_MISMATCH := $(MISMATCH_KINDS:%=$(TB)/avr/$(TP)/mismatch_%.o)
$(TB)/avr/$(TP)/mismatch_%.o: tests/config_mismatch.c $(HDR) tests/user_config/user_cfg_test.h | $(TB)
	mkdir -p $(@D)
	$(AVR_CC) -std=c99 $(AVR_CFLAGS) $(TARGET_TEST_CONFIG) $(MISMATCH_$*) -DMISMATCH_FN=mismatch_$* -Isrc -c $< -o $@
SIMAVR_RUN := $(TB)/simavr_run
SIMAVR_CFLAGS ?= $(shell pkg-config --cflags simavr 2>/dev/null || echo -I/usr/include/simavr)

target-avr-test: $(TB)/avr/test_sig-$(TP).elf $(SIMAVR_RUN)

$(TB)/avr/test_sig-$(TP).elf: $(AVR_TEST_DEPS) $(AVR_MISMATCH) | $(TB)
	$(AVR_CC) -std=c99 $(AVR_CFLAGS) $(TARGET_TEST_CONFIG) $(call TARGET_DEFS,avr) -DTARGET_XMEM=1 \
	  -DTARGET_NAME='"$(AVR_MCU) + 56 KB XMEM (simavr), profile $(TP)"' $(call TARGET_INC,avr) $(SRC) $(TARGET_TEST_SRC) \
	  $(TGT_COMMON)/test_runner.c $(TGT_AVR)/board.c $(AVR_MISMATCH) $(AVR_LDFLAGS) -Wl,-Map=$(TB)/avr/test_sig-$(TP).map -o $@
	avr-size $@

$(SIMAVR_RUN): $(TGT_AVR)/simavr_run.c | $(TB)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror $(SIMAVR_CFLAGS) $< -o $@ -lsimavr

target-run-avr: $(TB)/avr/test_sig-$(TP).elf $(SIMAVR_RUN)
	$(SIMAVR_RUN) --mcu $(AVR_MCU) --xmem $(TB)/avr/test_sig-$(TP).elf

# ---- the sensor example as nRF51 firmware (hil/ runs it in QEMU) ----
# examples/sig_sensor/sig_sensor.ino unchanged, compiled as C++ against
# targets/nrf51/Arduino.h; the library in its shipped configuration
# (sig_config.h defaults). -fstack-usage writes every function's frame to
# build/targets/m0/sensor/*.su, the static side of the stack measurement.
ARM_CXX ?= arm-none-eabi-g++
SENSOR_DIR := $(TB)/m0/sensor
SENSOR_OBJ := $(SRC:src/%.c=$(SENSOR_DIR)/%.o) $(SENSOR_DIR)/startup.o $(SENSOR_DIR)/board.o \
  $(SENSOR_DIR)/arduino.o $(SENSOR_DIR)/sig_sensor.o
SENSOR_CFLAGS := $(M0_CFLAGS) -fstack-usage -I$(TGT_COMMON) -I$(TGT_NRF51) -Isrc
SENSOR_CXXFLAGS := $(SENSOR_CFLAGS) -std=c++11 -fno-exceptions -fno-rtti -fno-threadsafe-statics

target-sensor: $(TB)/m0/sig_sensor.elf

$(SENSOR_DIR)/%.o: src/%.c $(HDR) | $(TB)
	mkdir -p $(SENSOR_DIR)
	$(ARM_CC) -std=c99 $(SENSOR_CFLAGS) -pedantic -c $< -o $@
$(SENSOR_DIR)/%.o: $(TGT_NRF51)/%.c $(TGT_NRF51)/nrf51.h $(TGT_COMMON)/target.h | $(TB)
	mkdir -p $(SENSOR_DIR)
	$(ARM_CC) -std=c99 $(SENSOR_CFLAGS) -c $< -o $@
$(SENSOR_DIR)/arduino.o: $(TGT_NRF51)/arduino.cpp $(TGT_NRF51)/Arduino.h $(TGT_COMMON)/target.h | $(TB)
	mkdir -p $(SENSOR_DIR)
	$(ARM_CXX) $(SENSOR_CXXFLAGS) -c $< -o $@
$(SENSOR_DIR)/sig_sensor.o: examples/sig_sensor/sig_sensor.ino $(TGT_NRF51)/Arduino.h $(HDR) | $(TB)
	mkdir -p $(SENSOR_DIR)
	$(ARM_CXX) $(SENSOR_CXXFLAGS) -x c++ -include Arduino.h -c $< -o $@

$(TB)/m0/sig_sensor.elf: $(SENSOR_OBJ) $(TGT_NRF51)/sections.ld $(TGT_NRF51)/nrf51.ld
	$(ARM_CC) $(M0_LDFLAGS) -Tnrf51.ld -Wl,-Map=$(TB)/m0/sig_sensor.map $(SENSOR_OBJ) -o $@
	$(ARM_NM) $@ | grep -E ' (__StackLimit|__StackTop|__bss_end__)$$' > $(TB)/m0/sig_sensor.syms
	$(ARM_SIZE) $@
