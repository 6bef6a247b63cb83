# footprint-table: the library's share of a linked app (.text/.data/.bss) and
# sizeof(sig_device_t), per target (Cortex-M0, Cortex-M4F, AVR ATmega328P) and
# per profile, as one Markdown table (firmware_bridge/README.md). Needs
# gcc-arm-none-eabi, libnewlib-arm-none-eabi, gcc-avr and avr-libc.
# Profiles are the PROFILES table of tools/footprint_table.py (one line each).
#   make footprint-table                     all targets
#   make footprint-table FP_TARGETS=m0,avr   some of them (m0, m4f, avr)
FP_TARGETS ?= m0,m4f,avr

.PHONY: footprint-table
footprint-table:
	$(PYTHON) tools/footprint_table.py --build $(B)/footprint --only $(FP_TARGETS)
