# Cross-compiling iocphost plugins (and iocphost itself) for 64-bit Windows
# with mingw-w64 on Linux. Shipped in the SDK beside iocphostConfig.cmake, so
# a plugin author on Linux needs nothing else:
#
#   cmake -S . -B build-win \
#     -DCMAKE_TOOLCHAIN_FILE=<sdk>/share/cmake/iocphost/mingw-w64-x86_64.cmake
#
# find_package(iocphost) then finds the SDK this file came with, and the
# folders of CMAKE_PREFIX_PATH (say, your own Windows libraries) are searched
# too: a cross toolchain looks for packages only under its find roots, so
# each of those folders is made a root. The tree's cmake/mingw-w64-x86_64.cmake
# includes this file and adds what building iocphost itself needs.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(TOOLCHAIN_PREFIX x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${TOOLCHAIN_PREFIX}-gcc)
set(CMAKE_CXX_COMPILER ${TOOLCHAIN_PREFIX}-g++)
set(CMAKE_RC_COMPILER ${TOOLCHAIN_PREFIX}-windres)

# Libraries, headers and packages for Windows only: never the Linux ones of
# this machine. CMAKE_PREFIX_PATH is the user's (a -D on the command line);
# a folder that is a find root is searched as it is.
set(CMAKE_FIND_ROOT_PATH /usr/${TOOLCHAIN_PREFIX} ${CMAKE_PREFIX_PATH})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# The SDK this file is part of (installed: <prefix>/share/cmake/iocphost/).
# An explicit iocphost_DIR is not searched for, so the find roots above do
# not hide it; a -Diocphost_DIR given by the user wins.
if(NOT DEFINED iocphost_DIR AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/iocphostConfig.cmake)
  set(iocphost_DIR ${CMAKE_CURRENT_LIST_DIR} CACHE PATH
      "The folder holding iocphostConfig.cmake")
endif()

# Self-contained DLLs and executables: no libgcc or winpthread DLL to ship.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static -static-libgcc")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static -static-libgcc")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-static -static-libgcc")
