# Cross-compiling for 64-bit Windows with Debian's mingw-w64:
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake
# Libraries built for Windows by scripts/windows-deps.sh live under
# IOCPHOST_WINDOWS_PREFIX (default: build-win-deps/prefix).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(TOOLCHAIN_PREFIX x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${TOOLCHAIN_PREFIX}-gcc)
set(CMAKE_CXX_COMPILER ${TOOLCHAIN_PREFIX}-g++)
set(CMAKE_RC_COMPILER ${TOOLCHAIN_PREFIX}-windres)

if(NOT IOCPHOST_WINDOWS_PREFIX)
  set(IOCPHOST_WINDOWS_PREFIX ${CMAKE_CURRENT_LIST_DIR}/../build-win-deps/prefix)
endif()
get_filename_component(IOCPHOST_WINDOWS_PREFIX ${IOCPHOST_WINDOWS_PREFIX} ABSOLUTE)
set(CMAKE_FIND_ROOT_PATH /usr/${TOOLCHAIN_PREFIX} ${IOCPHOST_WINDOWS_PREFIX})
set(CMAKE_PREFIX_PATH ${IOCPHOST_WINDOWS_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config must look at the Windows libraries only.
set(ENV{PKG_CONFIG_LIBDIR} ${IOCPHOST_WINDOWS_PREFIX}/lib/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")
# One self-contained .exe: no libgcc/winpthread DLLs to ship beside it.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static -static-libgcc")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static -static-libgcc")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-static -static-libgcc")

# Test programs run under Wine when it is installed (ctest uses the emulator
# for every test whose command is a target). scripts/test.sh windows sets up
# the Wine prefix (WINEPREFIX under the build folder, WINEDEBUG=-all).
find_program(IOCPHOST_WINE wine)
if(IOCPHOST_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${IOCPHOST_WINE})
endif()
