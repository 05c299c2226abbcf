# Runs during `cmake --install` (and CPack's install): writes the sample
# configs and the systemd unit for the prefix being installed to, and
# installs them. Set by cmake/install.cmake: IOCPHOST_SOURCE_CONF,
# IOCPHOST_GENERATED_DIR, IOCPHOST_WINDOWS, IOCPHOST_BINDIR,
# IOCPHOST_PLUGINDIR, IOCPHOST_SYSTEMDUNITDIR.
#
# Where the configs go and what runtime_dir they name:
#   Windows          <prefix>/conf, runtime_dir "run" (conf/run, the host's
#                    own; `iocphost service install -c conf\iocphost.json`)
#   prefix /usr      /etc/iocphost (the .deb), runtime_dir "/run/iocphost"
#   prefix /usr/local  <prefix>/etc/iocphost, runtime_dir "/run/iocphost":
#                    both are what the unit runs (RuntimeDirectory=iocphost)
#   any other prefix <prefix>/etc/iocphost, runtime_dir "run", which the host
#                    creates beside the config (a user's own install)
# Plugin paths are relative to the config when both are under the prefix
# (so the folder can be moved), absolute otherwise.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(IOCPHOST_WINDOWS)
  set(confdir "${prefix}/conf")
  set(runtime_dir "run")
elseif(prefix STREQUAL "/usr")
  set(confdir "/etc/iocphost")
  set(runtime_dir "/run/iocphost")
else()
  set(confdir "${prefix}/etc/iocphost")
  set(runtime_dir "run")
  if(prefix STREQUAL "/usr/local")
    set(runtime_dir "/run/iocphost")
  endif()
endif()
set(plugindir "${prefix}/${IOCPHOST_PLUGINDIR}")
string(FIND "${confdir}/" "${prefix}/" at)
if(at EQUAL 0)
  file(RELATIVE_PATH plugins "${confdir}" "${plugindir}")
else()
  set(plugins "${plugindir}")
endif()

# One folder per install, removed after it: cpack and cmake --install may
# run at the same time from one build.
string(MD5 install_id "$ENV{DESTDIR}|${prefix}")
string(RANDOM LENGTH 8 nonce)
set(out "${IOCPHOST_GENERATED_DIR}/${install_id}-${nonce}")
file(MAKE_DIRECTORY "${out}")
set(configs iocphost.json gateway.json backend.json)
foreach(config ${configs})
  file(READ "${IOCPHOST_SOURCE_CONF}/${config}" text)
  # "../build/plugins/echo/echo" (the build tree's) -> "<plugins>/echo"
  string(REGEX REPLACE "\"\\.\\./build/plugins/([A-Za-z0-9_]+)/[A-Za-z0-9_]+\""
         "\"${plugins}/\\1\"" text "${text}")
  string(REPLACE "\"runtime_dir\": \"run\"" "\"runtime_dir\": \"${runtime_dir}\""
         text "${text}")
  if(text MATCHES "\\.\\./build/" OR NOT text MATCHES "\"runtime_dir\": \"${runtime_dir}\"")
    message(FATAL_ERROR "conf/${config}: its plugin paths or runtime_dir are not "
      "in the form cmake/install_conf.cmake rewrites for the installed layout "
      "(\"../build/plugins/NAME/NAME\", \"runtime_dir\": \"run\"): update one "
      "or the other")
  endif()
  file(WRITE "${out}/${config}" "${text}")
endforeach()
list(TRANSFORM configs PREPEND "${out}/")
# Readable by the owner and the group only: a config may hold secrets in a
# plugin's settings (the .deb gives the group iocphost).
file(INSTALL ${configs} DESTINATION "${confdir}"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)

if(NOT IOCPHOST_WINDOWS)
  file(READ "${IOCPHOST_SOURCE_CONF}/iocphost.service" unit)
  set(bin "${prefix}/${IOCPHOST_BINDIR}/iocphost")
  foreach(pair
      "/usr/local/bin/iocphost|${bin}"
      "/usr/local/lib/iocphost/plugins/|${plugindir}/"
      "/etc/iocphost/iocphost.json|${confdir}/iocphost.json")
    string(REPLACE "|" ";" pair "${pair}")
    list(GET pair 0 from)
    list(GET pair 1 to)
    string(FIND "${unit}" "${from}" at)
    if(at LESS 0)
      message(FATAL_ERROR "conf/iocphost.service no longer names ${from}: "
        "update cmake/install_conf.cmake, which rewrites it for the installed layout")
    endif()
    string(REPLACE "${from}" "${to}" unit "${unit}")
  endforeach()
  file(WRITE "${out}/iocphost.service" "${unit}")
  file(INSTALL "${out}/iocphost.service"
       DESTINATION "${prefix}/${IOCPHOST_SYSTEMDUNITDIR}"
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
file(REMOVE_RECURSE "${out}")
