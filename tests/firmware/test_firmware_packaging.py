"""firmware_bridge/ installed the way embedded users install libraries.

* every packaging file states the version of src/sig_version.h (and pyproject's);
* the Arduino sketch builds with Debian's arduino-builder and AVR core against
  the folder installed as an Arduino library (library.properties, src/, examples/);
* the plain CMake build: configure, build (strict warnings), install into a
  temporary prefix, then a consumer found by find_package(sig) and one by
  add_subdirectory, both run; the SIG_CONFIG overrides reach the consumer;
* the ESP-IDF and Zephyr glue (CMakeLists.txt's ESP_PLATFORM branch,
  zephyr/CMakeLists.txt + Kconfig) evaluated by CMake with the SDK's
  registration functions replaced by recorders (neither SDK is installed here);
* `make footprint-table` prints a well-formed table whose Cortex-M0 base row
  agrees with `make footprint`.

Every tool is required: a missing one fails the test (CI installs them,
.ci/run and run-tests list the Debian packages).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
FW = ROOT / "firmware_bridge"
ARDUINO_HW = Path("/usr/share/arduino/hardware")  # Debian's arduino-core-avr
BUILDER_HW = Path("/usr/share/arduino-builder")  # Debian's arduino-builder (ctags recipe)


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run a tool, fail the test with its output if it fails; return the output."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{output[-4000:]}"
    return output


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"missing tools {missing}: see the package list in .ci/run"


def _header_version() -> str:
    text = (FW / "src" / "sig_version.h").read_text(encoding="utf-8")
    keys = ("MAJOR", "MINOR", "PATCH")
    parts = [re.search(rf"#define SIG_VERSION_{k} (\d+)\b", text) for k in keys]
    string = re.search(r'#define SIG_VERSION "([^"]+)"', text)
    assert all(parts) and string, "sig_version.h lacks a SIG_VERSION_* macro"
    numeric = ".".join(m.group(1) for m in parts if m)
    assert string.group(1) == numeric, (string.group(1), numeric)
    return numeric


def test_every_packaging_file_states_the_header_version() -> None:
    version = _header_version()
    assert '#include "sig_version.h"' in (FW / "src" / "sig_device.h").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    props = dict(
        line.split("=", 1)
        for line in (FW / "library.properties").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    idf = (FW / "idf_component.yml").read_text(encoding="utf-8")
    cmake = (FW / "CMakeLists.txt").read_text(encoding="utf-8")
    module = (FW / "zephyr" / "module.yml").read_text(encoding="utf-8")
    stated = {
        "pyproject.toml": pyproject["project"]["version"],
        "library.properties": props["version"],
        "library.json": json.loads((FW / "library.json").read_text(encoding="utf-8"))["version"],
        "idf_component.yml": re.findall(r'^version:\s*"([^"]+)"', idf, re.M),
        "CMakeLists.txt": re.findall(r"project\(sig VERSION (\S+) ", cmake),
        "zephyr/module.yml": re.findall(r"pkg:generic/sig-device@(\S+)", module),
    }
    for name, value in stated.items():
        assert value in (version, [version]), f"{name} states {value}, sig_version.h {version}"


def test_license_is_mit_at_the_root_and_in_the_library_folder() -> None:
    root = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert root.startswith("MIT License") and "Permission is hereby granted" in root
    assert (FW / "LICENSE").read_text(encoding="utf-8") == root
    assert (
        tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["license"]
        == "MIT"
    )
    assert json.loads((FW / "library.json").read_text(encoding="utf-8"))["license"] == "MIT"


def test_manifests_name_files_that_exist() -> None:
    """library.json's headers/examples and library.properties' includes point at real files."""
    manifest = json.loads((FW / "library.json").read_text(encoding="utf-8"))
    src = FW / manifest["build"]["srcDir"]
    for header in manifest["headers"]:
        assert (src / header).is_file(), header
    for example in manifest["examples"]:
        for name in example["files"]:
            assert (FW / example["base"] / name).is_file(), example
    props = (FW / "library.properties").read_text(encoding="utf-8")
    includes = re.search(r"^includes=(.+)$", props, re.M)
    assert includes
    for header in includes.group(1).split(","):
        assert (FW / "src" / header.strip()).is_file(), header
    # Arduino: every sketch example is examples/<name>/<name>.ino
    for ino in (FW / "examples").rglob("*.ino"):
        assert ino.parent.name == ino.stem, ino


def test_arduino_sketch_builds_against_the_installed_library(tmp_path: Path) -> None:
    _need("arduino-builder", "avr-gcc")
    assert (ARDUINO_HW / "arduino" / "avr" / "boards.txt").is_file(), "arduino-core-avr missing"
    assert (BUILDER_HW / "platform.txt").is_file(), "arduino-builder's platform.txt missing"
    # Installed as the Library Manager does it: the library folder, renamed to its name.
    name = re.search(r"^name=(.+)$", (FW / "library.properties").read_text(encoding="utf-8"), re.M)
    assert name
    lib = tmp_path / "libraries" / name.group(1)
    shutil.copytree(FW, lib, ignore=shutil.ignore_patterns("build"))
    build = tmp_path / "build"
    build.mkdir()
    output = _run(
        [
            "arduino-builder",
            "-compile",
            "-warnings",
            "all",
            "-hardware",
            str(ARDUINO_HW),
            "-hardware",
            str(BUILDER_HW),
            "-tools",
            "/usr/bin",
            "-libraries",
            str(tmp_path / "libraries"),
            "-fqbn",
            "arduino:avr:uno",
            "-build-path",
            str(build),
            # Debian's AVR core with its avr-libc: float.h has no DECIMAL_DIG for C++
            "-prefs=compiler.cpp.extra_flags=-DDECIMAL_DIG=17",
            str(lib / "examples" / "sig_sensor" / "sig_sensor.ino"),
        ]
    )
    flash = re.search(r"Sketch uses (\d+) bytes", output)
    ram = re.search(r"Global variables use (\d+) bytes", output)
    assert flash and ram, output[-2000:]
    print(f"sig_sensor for arduino:avr:uno: {flash.group(1)} B flash, {ram.group(1)} B RAM")
    # every library source was compiled from the installed copy, nothing else
    objs = sorted(p.name for p in (build / "libraries" / name.group(1)).glob("*.o"))
    assert objs == sorted(f"{p.name}.o" for p in (FW / "src").glob("*.c")), objs
    assert str(lib / "src") in (build / "includes.cache").read_text(encoding="utf-8")
    assert (build / "sig_sensor.ino.hex").stat().st_size > 0


CONSUMER_C = r"""
#include <stdio.h>
#include <string.h>
#include "sig_device.h"

static bool on_write(void *ctx, const uint8_t *buf, size_t len)
{
    (void)buf;
    *(size_t *)ctx += len;
    return true;
}

static uint32_t on_millis(void *ctx)
{
    (void)ctx;
    return 0;
}

int main(void)
{
    static sig_device_t dev;
    size_t written = 0;
    sig_device_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "consumer";
    cfg.platform.ctx = &written;
    cfg.platform.write = on_write;
    cfg.platform.millis = on_millis;
    if (sig_device_init(&dev, &cfg) != SIG_OK || sig_device_start(&dev) != SIG_OK) {
        return 1;
    }
    printf("version %s %d max_body %d crc %04x wrote %u\n", SIG_VERSION, SIG_VERSION_NUMBER,
           (int)SIG_CONFIG_MAX_BODY, (unsigned)sig_crc16((const uint8_t *)"123456789", 9),
           (unsigned)written);
    return 0;
}
"""

CONSUMER_PACKAGE = """
cmake_minimum_required(VERSION 3.13)
project(consumer C)
find_package(sig {version} CONFIG REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE sig::sig)
"""

CONSUMER_SUBDIR = """
cmake_minimum_required(VERSION 3.13)
project(consumer C)
add_subdirectory({fw} sig)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE sig::sig)
"""


def _consumer(tmp: Path, cmakelists: str, *configure: str) -> str:
    (tmp / "src").mkdir(parents=True)
    (tmp / "src" / "CMakeLists.txt").write_text(cmakelists, encoding="utf-8")
    (tmp / "src" / "main.c").write_text(CONSUMER_C, encoding="utf-8")
    _run(["cmake", "-S", str(tmp / "src"), "-B", str(tmp / "build"), *configure])
    _run(["cmake", "--build", str(tmp / "build")])
    return _run([str(tmp / "build" / "consumer")])


def test_cmake_build_install_and_consumers(tmp_path: Path) -> None:
    _need("cmake", "cc")
    version = _header_version()
    overrides = "-DSIG_CONFIG=SIG_CONFIG_MAX_BODY=200;SIG_CONFIG_MAX_SENDERS=3"
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    _run(["cmake", "-S", str(FW), "-B", str(build), "-DSIG_STRICT=ON", overrides])
    _run(["cmake", "--build", str(build)])
    _run(["cmake", "--install", str(build), "--prefix", str(prefix)])
    headers = sorted(p.name for p in (prefix / "include" / "sig").iterdir())
    assert headers == sorted(
        p.name for p in (FW / "src").glob("*.h") if p.name != "sig_internal.h"
    ), headers
    libdirs = [p for p in prefix.glob("lib*/libsig.a")]
    assert len(libdirs) == 1, list(prefix.rglob("*"))

    expect = re.compile(rf"^version {re.escape(version)} \d+ max_body 200 crc d64e wrote \d+$")
    installed = _consumer(
        tmp_path / "package",
        CONSUMER_PACKAGE.format(version=version),
        f"-DCMAKE_PREFIX_PATH={prefix}",
    )
    assert expect.match(installed.strip()), installed
    assert int(installed.split()[-1]) > 1  # the 0x00 and a HELLO frame went out
    sub = _consumer(tmp_path / "subdir", CONSUMER_SUBDIR.format(fw=FW.as_posix()), overrides)
    assert sub == installed


def _cmake_script(tmp: Path, body: str) -> str:
    script = tmp / "probe.cmake"
    script.write_text(body, encoding="utf-8")
    return _run(["cmake", "-P", str(script)])


def test_esp_idf_branch_registers_the_component(tmp_path: Path) -> None:
    """ESP-IDF evaluates a component's CMakeLists.txt in script mode first
    (requirements expansion), then for real; both go through this recorder."""
    _need("cmake")
    out = _cmake_script(
        tmp_path,
        f"""
set(ESP_PLATFORM 1)
macro(idf_component_register)
  cmake_parse_arguments(REG "" "" "SRCS;INCLUDE_DIRS;REQUIRES" ${{ARGN}})
  message(STATUS "SRCS=${{REG_SRCS}}")
  message(STATUS "INCLUDE_DIRS=${{REG_INCLUDE_DIRS}}")
endmacro()
include("{FW.as_posix()}/CMakeLists.txt")
message(STATUS "AFTER_REGISTER_REACHED")
""",
    )
    srcs = re.search(r"SRCS=(.*)", out)
    incs = re.search(r"INCLUDE_DIRS=(.*)", out)
    assert srcs and incs, out
    assert sorted(Path(s).name for s in srcs.group(1).split(";")) == sorted(
        p.name for p in (FW / "src").glob("*.c")
    )
    assert all((FW / d / "sig_device.h").is_file() for d in incs.group(1).split(";"))
    # the branch returned before project() and the other commands a script
    # cannot run (they would have failed the script), and include() came back
    assert "AFTER_REGISTER_REACHED" in out


def test_zephyr_module_glue_covers_every_config_macro(tmp_path: Path) -> None:
    _need("cmake")
    module = (FW / "zephyr" / "module.yml").read_text(encoding="utf-8")
    cmake_dir = re.search(r"^\s+cmake:\s*(\S+)", module, re.M)
    kconfig = re.search(r"^\s+kconfig:\s*(\S+)", module, re.M)
    assert cmake_dir and kconfig and re.search(r"^name:\s*sig$", module, re.M), module
    assert (FW / cmake_dir.group(1) / "CMakeLists.txt").is_file()
    kconfig_text = (FW / kconfig.group(1)).read_text(encoding="utf-8")
    options = re.findall(r"^config (SIG\w*)$", kconfig_text, re.M)
    macros = re.findall(
        r"^#ifndef (SIG_CONFIG_\w+)$",
        (FW / "src" / "sig_config.h").read_text(encoding="utf-8"),
        re.M,
    )
    macros = [m for m in macros if m != "SIG_CONFIG_H"]
    assert macros, "no configuration macros found in sig_config.h"
    # every macro has a Kconfig option CONFIG_SIG_<X> for SIG_CONFIG_<X>
    assert sorted(options) == sorted(["SIG", *(m.replace("SIG_CONFIG_", "SIG_") for m in macros)])
    values = "\n".join(f'set(CONFIG_{o} "{1 if o == "SIG" else 7}")' for o in options)
    out = _cmake_script(
        tmp_path,
        f"""
{values}
function(zephyr_include_directories)
  message(STATUS "INC=${{ARGN}}")
endfunction()
function(zephyr_compile_definitions)
  message(STATUS "DEFS=${{ARGN}}")
endfunction()
function(zephyr_library_named name)
  message(STATUS "LIB=${{name}}")
endfunction()
function(zephyr_library_sources)
  message(STATUS "SRCS=${{ARGN}}")
endfunction()
include("{(FW / cmake_dir.group(1) / "CMakeLists.txt").as_posix()}")
""",
    )
    defs = [d for line in re.findall(r"DEFS=(.*)", out) for d in line.split(";")]
    srcs = re.search(r"SRCS=(.*)", out)
    inc = re.search(r"INC=(.*)", out)
    assert defs and srcs and inc and "LIB=sig" in out, out
    defined = [d.split("=", 1)[0] for d in defs]
    assert sorted(defined) == sorted(macros), set(defined) ^ set(macros)
    assert "SIG_CONFIG_MAX_BODY=7" in defs and "SIG_CONFIG_FULL_CODEC=1" in defs, defs
    assert sorted(Path(s).name for s in srcs.group(1).split(";")) == sorted(
        p.name for p in (FW / "src").glob("*.c")
    )
    assert (Path(inc.group(1)) / "sig_device.h").is_file()


TABLE_ROW = re.compile(
    r"^\| (?P<target>[^|]+?) \| (?P<profile>\w+) \| (?P<text>[\d,]+) \| (?P<data>[\d,]+) "
    r"\| (?P<bss>[\d,]+) \| (?P<flash>[\d,]+) \| (?P<ram>[\d,]+) \| (?P<dev>[\d,]+) \|$"
)


def test_footprint_table_is_well_formed_and_agrees_with_make_footprint(tmp_path: Path) -> None:
    _need("make", "arm-none-eabi-gcc", "avr-gcc")
    out = _run(["make", "-s", "-C", str(FW), f"B={tmp_path}", "footprint-table"])
    rows = [m.groupdict() for m in map(TABLE_ROW.match, out.splitlines()) if m]
    targets = {r["target"] for r in rows}
    assert targets == {"Cortex-M0", "Cortex-M4F", "AVR ATmega328P"}, out
    profiles = {r["profile"] for r in rows}
    assert "base" in profiles and len(rows) == 3 * len(profiles), out
    for r in rows:
        n = {k: int(r[k].replace(",", "")) for k in ("text", "data", "bss", "flash", "ram", "dev")}
        assert n["text"] > 0 and n["dev"] > 0, r
        assert n["flash"] == n["text"] + n["data"] and n["ram"] == n["data"] + n["bss"], r
    m0 = next(r for r in rows if r["target"] == "Cortex-M0" and r["profile"] == "base")
    share = _run(["make", "-s", "-C", str(FW), f"B={tmp_path / 'fp'}", "footprint"])
    flash = re.search(r"LIBRARY SHARE: flash (\d+) B", share)
    size = re.search(r"sizeof\(sig_device_t\) = (\d+) bytes", share)
    assert flash and size, share[-2000:]
    assert int(m0["flash"].replace(",", "")) == int(flash.group(1)), (m0, flash.group(0))
    assert int(m0["dev"].replace(",", "")) == int(size.group(1))
    print(out)
