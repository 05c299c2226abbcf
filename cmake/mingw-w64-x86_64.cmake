# Cross-compiling iocphost for 64-bit Windows with Debian's mingw-w64:
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake
# The compiler, find roots and static linking are the SDK's toolchain
# (sdk/cmake/mingw-w64-x86_64.cmake, what plugin authors use); this adds the
# Windows libraries iocphost itself needs, built by scripts/windows-deps.sh
# under IOCPHOST_WINDOWS_PREFIX (default: build-win-deps/prefix), and Wine.
include(${CMAKE_CURRENT_LIST_DIR}/../sdk/cmake/mingw-w64-x86_64.cmake)

if(NOT IOCPHOST_WINDOWS_PREFIX)
  set(IOCPHOST_WINDOWS_PREFIX ${CMAKE_CURRENT_LIST_DIR}/../build-win-deps/prefix)
endif()
get_filename_component(IOCPHOST_WINDOWS_PREFIX ${IOCPHOST_WINDOWS_PREFIX} ABSOLUTE)
list(APPEND CMAKE_FIND_ROOT_PATH ${IOCPHOST_WINDOWS_PREFIX})
list(APPEND CMAKE_PREFIX_PATH ${IOCPHOST_WINDOWS_PREFIX})
# pkg-config must look at the Windows libraries only.
set(ENV{PKG_CONFIG_LIBDIR} ${IOCPHOST_WINDOWS_PREFIX}/lib/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")

# Test programs run under Wine when it is installed (ctest uses the emulator
# for every test whose command is a target). scripts/test.sh windows sets up
# the Wine prefix (WINEPREFIX under the build folder, WINEDEBUG=-all).
find_program(IOCPHOST_WINE wine)
if(IOCPHOST_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${IOCPHOST_WINE})
endif()
