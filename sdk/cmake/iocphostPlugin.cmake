# iocphost_add_plugin(<name> <source>...)
# Builds a loadable iocphost plugin: <name>.so on Linux, <name>.dll on Windows,
# no "lib" prefix, only the entry symbol exported.
function(iocphost_add_plugin name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE iocphost::sdk)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden)
endfunction()
