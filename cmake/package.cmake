# Packages, with CPack (cpack in the build folder, or `cpack -B <out>`):
#   Linux    two .deb for Debian 12: iocphost (the host, the sample plugins in
#            /usr/lib/iocphost/plugins, the configs in /etc/iocphost, the
#            systemd unit, installed but not enabled, and the system user
#            iocphost made by postinst) and iocphost-dev (the SDK).
#   Windows  one .zip: a self-contained folder (bin/iocphost.exe, plugins/,
#            conf/, the SDK), ready for `iocphost service install`.
# The layout is cmake/install.cmake's, installed with the prefix /usr for
# the .deb whatever CMAKE_INSTALL_PREFIX was configured.
set(CPACK_PACKAGE_NAME iocphost)
set(CPACK_PACKAGE_VENDOR "iocphost")
set(CPACK_PACKAGE_CONTACT "iocphost maintainers <iocphost@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)

if(WIN32)
  set(CPACK_GENERATOR ZIP)
  set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
      "plugin-hosting TCP server for game servers")
  set(CPACK_ARCHIVE_COMPONENT_INSTALL OFF)
  set(CPACK_COMPONENTS_ALL host sdk)
  set(CPACK_PACKAGE_FILE_NAME iocphost-${PROJECT_VERSION}-windows-x86_64)
  set(CPACK_INCLUDE_TOPLEVEL_DIRECTORY ON)
else()
  set(CPACK_GENERATOR DEB)
  set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
  set(CPACK_DEB_COMPONENT_INSTALL ON)
  set(CPACK_COMPONENTS_ALL host sdk)
  set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
  set(CPACK_DEBIAN_PACKAGE_SECTION net)
  set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)

  # Each package's Description: its first line is the summary (no
  # CPACK_PACKAGE_DESCRIPTION_SUMMARY, which CPack would put above both).
  set(CPACK_DEBIAN_HOST_PACKAGE_NAME iocphost)
  set(CPACK_DEBIAN_HOST_DESCRIPTION "plugin-hosting TCP server for game servers
The iocphost host, its sample plugins, example configs in /etc/iocphost
and a systemd unit (installed, not enabled).")
  # The libraries the host links (libc, cJSON) from dpkg-shlibdeps; passwd
  # for useradd in postinst.
  set(CPACK_DEBIAN_HOST_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_HOST_PACKAGE_DEPENDS "passwd")
  # dpkg keeps an operator's edits of these over an upgrade, and removes
  # them at purge.
  file(WRITE ${PROJECT_BINARY_DIR}/debian/conffiles
       "/etc/iocphost/iocphost.json\n/etc/iocphost/gateway.json\n"
       "/etc/iocphost/backend.json\n")
  set(CPACK_DEBIAN_HOST_PACKAGE_CONTROL_EXTRA
      ${PROJECT_BINARY_DIR}/debian/conffiles
      ${PROJECT_SOURCE_DIR}/cmake/debian/postinst
      ${PROJECT_SOURCE_DIR}/cmake/debian/prerm
      ${PROJECT_SOURCE_DIR}/cmake/debian/postrm)
  set(CPACK_DEBIAN_HOST_PACKAGE_CONTROL_STRICT_PERMISSION ON)

  set(CPACK_DEBIAN_SDK_PACKAGE_NAME iocphost-dev)
  set(CPACK_DEBIAN_SDK_PACKAGE_ARCHITECTURE all)
  set(CPACK_DEBIAN_SDK_PACKAGE_SECTION devel)
  set(CPACK_DEBIAN_SDK_DESCRIPTION "SDK to build iocphost plugins
The plugin header, the CMake package (find_package(iocphost),
iocphost_add_plugin()), a mingw-w64 toolchain file for Windows plugins,
the SDK guide and an example plugin.")
endif()

include(CPack)
