/*
 * sig_version.h - version of the sig device library.
 *
 * The same version as the Python package (pyproject.toml) and every
 * packaging file of this folder (library.properties, library.json,
 * idf_component.yml, CMakeLists.txt); tests/test_firmware_packaging.py
 * checks that they agree. SIG_VERSION_NUMBER compares as an integer:
 *   #if SIG_VERSION_NUMBER >= 0x000200  (0.2.0 or later)
 */
#ifndef SIG_VERSION_H
#define SIG_VERSION_H

#define SIG_VERSION_MAJOR 0
#define SIG_VERSION_MINOR 1
#define SIG_VERSION_PATCH 0
#define SIG_VERSION "0.1.0"
#define SIG_VERSION_NUMBER ((SIG_VERSION_MAJOR << 16) | (SIG_VERSION_MINOR << 8) | SIG_VERSION_PATCH)

#endif /* SIG_VERSION_H */
