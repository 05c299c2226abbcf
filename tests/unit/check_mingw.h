/* MinGW only (tests/unit/CMakeLists.txt force-includes it): reads Check's
 * format(printf, ...) declarations as gnu_printf. For MinGW's GCC a bare
 * "printf" format means msvcrt's printf, which knows no %zu; the tests and
 * libcheck (built by scripts/windows-deps.sh) use the C99 printf
 * (__USE_MINGW_ANSI_STDIO), so gnu_printf is what the checks must follow. */
#ifndef IOCPHOST_CHECK_MINGW_H
#define IOCPHOST_CHECK_MINGW_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#define printf gnu_printf
#include <check.h>
#undef printf

#endif
