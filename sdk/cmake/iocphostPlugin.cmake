# iocphost_add_plugin(<name> <source>...)
#
# Builds a loadable iocphost plugin from C (or C++) sources: <name>.so on
# Linux, <name>.dll on Windows, no "lib" prefix, so the file name is what
# the config's "path" names. Only the entry symbol iocphost_plugin_entry is
# exported. On ELF platforms an undefined symbol is a link error (a plugin
# never links against the host, so a reference to a host symbol is a bug
# that would otherwise show only when the host loads the plugin); set
# IOCPHOST_PLUGIN_NO_UNDEFINED to OFF to allow them.
#
# Used in this tree (sdk/CMakeLists.txt includes it) and out of tree
# (find_package(iocphost) includes it): it needs only the target
# iocphost::sdk. The result is an ordinary MODULE library target: add
# sources, include folders and link libraries to it as usual.

set_property(GLOBAL PROPERTY IOCPHOST_PLUGIN_CMAKE_DIR "${CMAKE_CURRENT_LIST_DIR}")

if(NOT DEFINED IOCPHOST_PLUGIN_NO_UNDEFINED)
  set(IOCPHOST_PLUGIN_NO_UNDEFINED ON)
endif()

function(iocphost_add_plugin name)
  if(NOT ARGN)
    message(FATAL_ERROR "iocphost_add_plugin(${name}): no source files given")
  endif()
  if(NOT TARGET iocphost::sdk)
    message(FATAL_ERROR "iocphost_add_plugin(${name}): the target "
      "iocphost::sdk is missing; call find_package(iocphost REQUIRED) first")
  endif()
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE iocphost::sdk)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)

  # ELF with a GNU-compatible linker: export exactly the entry symbol, even
  # from static libraries built without hidden visibility. Not on Windows
  # (mingw-w64 or MSVC), where the version script means nothing: a DLL
  # exports what is marked __declspec(dllexport) (IOCPHOST_EXPORT), and once
  # one symbol is marked, GNU ld exports nothing else either; unresolved
  # symbols are always link errors there.
  if(UNIX AND NOT APPLE AND CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    get_property(dir GLOBAL PROPERTY IOCPHOST_PLUGIN_CMAKE_DIR)
    target_link_options(${name} PRIVATE
      "LINKER:--version-script=${dir}/iocphostPlugin.map")
    set_property(TARGET ${name} APPEND PROPERTY
      LINK_DEPENDS "${dir}/iocphostPlugin.map")
    # Full RELRO, as the host: bound at load, the GOT read-only afterwards.
    target_link_options(${name} PRIVATE "LINKER:-z,relro,-z,now")

    # Clang does not link the sanitizer runtimes into shared objects, so
    # their symbols are undefined there until the host loads the plugin.
    get_property(dir_compile_options DIRECTORY PROPERTY COMPILE_OPTIONS)
    get_property(dir_link_options DIRECTORY PROPERTY LINK_OPTIONS)
    set(all_flags "${CMAKE_C_FLAGS} ${CMAKE_MODULE_LINKER_FLAGS} "
                  "${dir_compile_options} ${dir_link_options}")
    set(sanitized_clang OFF)
    if(CMAKE_C_COMPILER_ID MATCHES "Clang" AND all_flags MATCHES "-fsanitize")
      set(sanitized_clang ON)
    endif()
    if(IOCPHOST_PLUGIN_NO_UNDEFINED AND NOT sanitized_clang)
      target_link_options(${name} PRIVATE "LINKER:--no-undefined")
    endif()
  endif()
endfunction()
