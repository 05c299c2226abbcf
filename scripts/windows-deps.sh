#!/usr/bin/env bash
# Builds the Windows (mingw-w64) libraries iocphost needs, cJSON, Check,
# SQLite (for plugins/arena), http-parser and wslay (HTTP requests of the
# metrics endpoint and the WebSocket upgrade; WebSocket frames) and OpenSSL
# (the TLS codec, host/transport/tls.c), from Debian's own source packages,
# into build-win-deps/prefix. Nothing of
# theirs is copied into the repository. Safe to run again: it skips what is
# built already.
#
# It needs deb-src entries; it adds ones that mirror the machine's Debian
# entries (same URIs, suites and components) when none exist.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/build-win-deps"
prefix="$work/prefix"
toolchain="$root/cmake/mingw-w64-x86_64.cmake"

# Bump when the recipe below changes: a prefix built by an older recipe is
# rebuilt.
recipe=6
if [ -f "$prefix/lib/libcjson.a" ] && [ -f "$prefix/lib/libcheck.a" ] &&
   [ -f "$prefix/lib/libsqlite3.a" ] && [ -f "$prefix/lib/libhttp_parser.a" ] &&
   [ -f "$prefix/lib/libwslay.a" ] && [ -f "$prefix/lib/libssl.a" ] &&
   [ "$(cat "$prefix/.recipe" 2>/dev/null)" = "$recipe" ]; then
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need=()
# gcc, make and tclsh make SQLite's amalgamation (sqlite3.c) natively;
# perl and make configure and build OpenSSL.
for p in gcc-mingw-w64-x86-64 dpkg-dev cmake ninja-build gcc make tcl perl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# deb-src entries mirroring the Debian ones, in deb822 or one-line form.
have_src() {
  grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}
if ! have_src; then
  out=/etc/apt/sources.list.d/iocphost-deb-src.sources
  tmp=$(mktemp)
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Keep only stanzas of Debian's own archive; rewrite their type.
    awk 'BEGIN{RS="";ORS="\n\n"} /URIs:[^\n]*debian/ {gsub(/Types:[^\n]*/,"Types: deb-src"); print}' "$f" >> "$tmp"
  done
  if [ -f /etc/apt/sources.list ]; then
    grep -E '^deb [^ ]*debian' /etc/apt/sources.list | sed 's/^deb /deb-src /' > "$tmp.list" || true
    [ -s "$tmp.list" ] && $sudo cp "$tmp.list" /etc/apt/sources.list.d/iocphost-deb-src.list
  fi
  [ -s "$tmp" ] && $sudo cp "$tmp" "$out"
  rm -f "$tmp" "$tmp.list"
  $sudo apt-get update -qq
fi

mkdir -p "$work/src"
cd "$work/src"
# Runs a step with its output kept in $work/step.log, shown only if it fails
# (the third-party builds warn about their own CMake usage; apt-get source
# run as root warns about its sandbox).
quiet() {
  if ! "$@" >"$work/step.log" 2>&1; then
    cat "$work/step.log" >&2
    echo "windows-deps: failed: $*" >&2
    exit 1
  fi
}
fetch() { # package -> unpacked folder
  local dir
  dir=$(find . -maxdepth 1 -type d -name "$1-*" | head -n 1)
  if [ -z "$dir" ]; then
    # A mirror can index a source (a security update, say) before its files
    # arrive: then the newest version that downloads serves.
    if ! apt-get source -qq --download-only "$1" >"$work/step.log" 2>&1; then
      rm -f "$1"_*
      local v
      for v in $(apt-cache showsrc "$1" | sed -n 's/^Version: //p' | sort -rV); do
        apt-get source -qq --download-only "$1=$v" >>"$work/step.log" 2>&1 && break
        rm -f "$1"_*
      done
      ls "$1"_*.dsc >/dev/null 2>&1 ||
        { cat "$work/step.log" >&2; echo "windows-deps: failed: apt-get source $1" >&2; exit 1; }
    fi
    quiet dpkg-source -x --no-check "$(ls "$1"_*.dsc | head -n 1)"
    dir=$(find . -maxdepth 1 -type d -name "$1-*" | head -n 1)
  fi
  echo "$dir"
}

cjson=$(fetch cjson)
quiet cmake -S "$cjson" -B "$work/cjson" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DIOCPHOST_WINDOWS_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DBUILD_SHARED_LIBS=OFF -DBUILD_SHARED_AND_STATIC_LIBS=OFF \
  -DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF -DENABLE_CUSTOM_COMPILER_FLAGS=OFF
quiet cmake --build "$work/cjson"
quiet cmake --install "$work/cjson"

# Check formats its messages with the C99 printf, as the tree does (%zu).
check=$(fetch check)
quiet cmake -S "$check" -B "$work/check" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
  -DIOCPHOST_WINDOWS_PREFIX="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="-D__USE_MINGW_ANSI_STDIO=1" \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DCHECK_ENABLE_TESTS=OFF -DBUILD_TESTING=OFF \
  -DCHECK_ENABLE_SUBUNIT=OFF -DENABLE_MEMORY_LEAKING_TESTS=OFF
quiet cmake --build "$work/check"
quiet cmake --install "$work/check"
# Check's CMake build writes the autotools library name (check_pic) into
# check.pc, and installs libcheck.a: point pkg-config at what is there, and
# link statically (the import library would need libcheck.dll at run time).
sed -i 's/-lcheck_pic/-lcheck/' "$prefix/lib/pkgconfig/check.pc"
rm -f "$prefix/lib/libcheck.dll.a" "$prefix/bin/libcheck.dll"
# Without librt, Check compiles a stand-in clock_gettime that always answers
# 0 into libcheck.a, which then wins over winpthreads' real one in every
# test program (pthread_cond_timedwait deadlines expire at once): drop it.
x86_64-w64-mingw32-ar d "$prefix/lib/libcheck.a" clock_gettime.c.obj

# SQLite, for plugins/arena. Debian's source is SQLite's full tree (with
# Debian's patches, applied by dpkg-source); its own build makes the
# one-file amalgamation, sqlite3.c, with native tools (lemon, tclsh). That
# file is compiled for Windows into a static library, which arena.dll links
# (nothing to ship beside it): serialized threading (SQLite's default), no
# loadable extensions.
sqlite=$(fetch sqlite3)
mkdir -p "$work/sqlite3"
(cd "$work/sqlite3" && quiet "$work/src/$sqlite/configure" --disable-tcl &&
 quiet make sqlite3.c)
quiet x86_64-w64-mingw32-gcc -O2 -DSQLITE_THREADSAFE=1 -DSQLITE_OMIT_LOAD_EXTENSION \
  -c "$work/sqlite3/sqlite3.c" -o "$work/sqlite3/sqlite3.obj"
mkdir -p "$prefix/include" "$prefix/lib/pkgconfig"
rm -f "$prefix/lib/libsqlite3.a"
quiet x86_64-w64-mingw32-ar rcs "$prefix/lib/libsqlite3.a" "$work/sqlite3/sqlite3.obj"
cp "$work/sqlite3/sqlite3.h" "$work/sqlite3/sqlite3ext.h" "$prefix/include/"
cat > "$prefix/lib/pkgconfig/sqlite3.pc" <<EOF
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: SQLite
Description: SQL database engine (static, for mingw-w64, from Debian's source)
Version: $(cat "$work/src/$sqlite/VERSION")
Libs: -L\${libdir} -lsqlite3
Cflags: -I\${includedir}
EOF
# http-parser: one C file and its header (Debian's http-parser source, the
# same code as libhttp-parser-dev on Linux), as a static library.
httpparser=$(fetch http-parser)
mkdir -p "$work/http-parser"
quiet x86_64-w64-mingw32-gcc -O2 -DHTTP_PARSER_STRICT=0 \
  -c "$work/src/$httpparser/http_parser.c" -o "$work/http-parser/http_parser.obj"
rm -f "$prefix/lib/libhttp_parser.a"
quiet x86_64-w64-mingw32-ar rcs "$prefix/lib/libhttp_parser.a" "$work/http-parser/http_parser.obj"
cp "$work/src/$httpparser/http_parser.h" "$prefix/include/"

# wslay 1.1.1, the release Debian's libwslay-dev is on Linux. This mirror
# serves the wslay source package's .dsc but not its tarballs (404), so the
# same release is taken from Debian's aria2 source package, which carries it
# unchanged in deps/wslay. Its four C files become a static library.
aria2=$(fetch aria2)
wslay="$work/src/$aria2/deps/wslay"
grep -q 'AC_INIT(\[wslay\], \[1.1.1\]' "$wslay/configure.ac" ||
  { echo "windows-deps: $wslay is not wslay 1.1.1" >&2; exit 1; }
mkdir -p "$work/wslay" "$prefix/include/wslay"
sed 's/@PACKAGE_VERSION@/1.1.1/' "$wslay/lib/includes/wslay/wslayver.h.in" \
  > "$prefix/include/wslay/wslayver.h"
cp "$wslay/lib/includes/wslay/wslay.h" "$prefix/include/wslay/"
objs=()
for c in wslay_event wslay_frame wslay_net wslay_queue; do
  quiet x86_64-w64-mingw32-gcc -O2 -DHAVE_WINSOCK2_H -I"$prefix/include" \
    -c "$wslay/lib/$c.c" -o "$work/wslay/$c.obj"
  objs+=("$work/wslay/$c.obj")
done
rm -f "$prefix/lib/libwslay.a"
quiet x86_64-w64-mingw32-ar rcs "$prefix/lib/libwslay.a" "${objs[@]}"


# OpenSSL, for the TLS codec (host/transport/tls.c): static libcrypto and
# libssl only, linked into iocphost.exe (with ws2_32 and crypt32). Debian's
# source with its patches; built out of its tree. Only the libraries are
# made (build_libs) and only headers, libraries and .pc files installed
# (install_dev): no apps, tests or manuals (OpenSSL 3.0 has no no-apps or
# no-docs; the targets chosen leave them out). What TLS 1.2/1.3 servers and
# clients never use is left out to save build time on CI's two cores:
# engines and loadable modules (the default and base providers are built
# in), the legacy provider, DTLS, SRP, SCTP, CT, CMP, CMS, time stamps, and
# ciphers no TLS 1.2/1.3 suite offers: about 3 minutes on two cores here,
# about 4 minutes of CPU (4 min 20 s before the last three). TLS 1.0/1.1
# stay compiled in so that a test client can offer them; the codec itself
# never accepts less than TLS 1.2. Built afresh each time (a recipe change).
openssl=$(fetch openssl)
rm -rf "$work/openssl" "$prefix/lib/libssl.a" "$prefix/lib/libcrypto.a"
mkdir -p "$work/openssl"
(cd "$work/openssl" &&
 quiet perl "$work/src/$openssl/Configure" mingw64 \
   --cross-compile-prefix=x86_64-w64-mingw32- --prefix="$prefix" --libdir=lib \
   no-shared no-tests no-module no-legacy no-engine no-dso \
   no-dtls no-srp no-sctp no-ct no-comp no-capieng no-afalgeng no-ui-console \
   no-aria no-bf no-camellia no-cast no-idea no-md4 no-mdc2 no-rc2 no-rc4 \
   no-rc5 no-seed no-sm2 no-sm3 no-sm4 no-whirlpool no-gost no-siphash \
   no-ocb no-srtp no-nextprotoneg no-cmp no-cms no-ts &&
 quiet make -j"$(nproc)" build_libs &&
 quiet make install_dev)
echo "$recipe" > "$prefix/.recipe"
echo "Windows libraries in $prefix"
