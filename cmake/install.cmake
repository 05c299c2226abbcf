# What `cmake --install` puts where (component "host"; the SDK's rules, the
# component "sdk", are in sdk/CMakeLists.txt).
#
# Linux, GNU install dirs under the prefix:
#   bin/iocphost
#   lib/iocphost/plugins/{echo,chat,gateway,backend}.so   the sample plugins
#   etc/iocphost/*.json      the sample configs, plugin paths pointing at the
#                            installed plugins (/etc/iocphost with prefix /usr)
#   lib/systemd/system/iocphost.service   the unit, pointing at the above
#   share/doc/iocphost/      README.md
# Windows, one self-contained folder (the .zip):
#   bin/iocphost.exe  plugins/*.dll  conf/*.json  share/doc/iocphost/
# and on both the SDK: include/iocphost/, share/cmake/iocphost/,
# share/doc/iocphost/sdk/ (its guide and examples).
include(GNUInstallDirs)

set(IOCPHOST_INSTALL_SAMPLE_PLUGINS echo chat gateway backend)
if(WIN32)
  set(IOCPHOST_INSTALL_PLUGINDIR plugins CACHE STRING
      "Where the sample plugins are installed, relative to the prefix")
else()
  # Private to the host, not a library others link: lib/<package>/ (not the
  # multiarch lib/x86_64-linux-gnu), as Debian does for such plugins.
  set(IOCPHOST_INSTALL_PLUGINDIR lib/iocphost/plugins CACHE STRING
      "Where the sample plugins are installed, relative to the prefix")
  set(IOCPHOST_INSTALL_SYSTEMDUNITDIR lib/systemd/system CACHE STRING
      "Where the systemd unit is installed, relative to the prefix")
endif()

install(TARGETS iocphost RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT host)
foreach(plugin ${IOCPHOST_INSTALL_SAMPLE_PLUGINS})
  install(TARGETS ${plugin}
    LIBRARY DESTINATION ${IOCPHOST_INSTALL_PLUGINDIR} COMPONENT host
    RUNTIME DESTINATION ${IOCPHOST_INSTALL_PLUGINDIR} COMPONENT host)
endforeach()
install(FILES ${PROJECT_SOURCE_DIR}/README.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT host)

# The configs and the unit name installed paths, and those depend on the
# prefix given at install time (cmake --install --prefix, or /usr for the
# .deb), not the one configured: they are written by a script that runs
# during the install (cmake/install_conf.cmake).
string(CONCAT install_conf_code
  "set(IOCPHOST_SOURCE_CONF \"${PROJECT_SOURCE_DIR}/conf\")\n"
  "set(IOCPHOST_GENERATED_DIR \"${PROJECT_BINARY_DIR}/install-conf\")\n"
  "set(IOCPHOST_WINDOWS \"${WIN32}\")\n"
  "set(IOCPHOST_BINDIR \"${CMAKE_INSTALL_BINDIR}\")\n"
  "set(IOCPHOST_PLUGINDIR \"${IOCPHOST_INSTALL_PLUGINDIR}\")\n"
  "set(IOCPHOST_SYSTEMDUNITDIR \"${IOCPHOST_INSTALL_SYSTEMDUNITDIR}\")\n"
  "include(\"${PROJECT_SOURCE_DIR}/cmake/install_conf.cmake\")\n")
install(CODE "${install_conf_code}" COMPONENT host)
