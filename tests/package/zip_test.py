#!/usr/bin/env python3
"""package.zip: the Windows .zip, unpacked and run as a Windows user would.

Makes the .zip of this (mingw-w64) build with cpack, unpacks it into an
empty folder, and checks that
  - it is one self-contained folder: bin/iocphost.exe, plugins/*.dll,
    conf/*.json whose plugin paths and runtime_dir are relative to conf/
    (so the folder works wherever it is unpacked, and
    `iocphost service install -c <folder>\\conf\\iocphost.json` finds them),
    and the SDK (include/, share/cmake/iocphost/, share/doc/iocphost/sdk/);
  - `iocphost.exe check` accepts every shipped config, under Wine;
  - the unpacked iocphost.exe, on the shipped config moved to free loopback
    ports, echoes bytes and stops through `iocphost.exe stop`.

  tests/package/zip_test.py <build-dir> <wine>
(with WINEPREFIX and WINEDEBUG in the environment, as ctest sets them)
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

DEADLINE_S = 60  # Wine starts processes slowly


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def run(command, check=True, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL, **kwargs)
    if check and result.returncode != 0:
        fail("%s exited %d:\n%s%s" % (" ".join(command), result.returncode,
                                      result.stdout, result.stderr))
    return result


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_layout(root):
    expected = ["bin/iocphost.exe", "include/iocphost/plugin.h",
                "share/cmake/iocphost/iocphostConfig.cmake",
                "share/cmake/iocphost/mingw-w64-x86_64.cmake",
                "share/doc/iocphost/README.md",
                "share/doc/iocphost/sdk/README.md",
                "share/doc/iocphost/sdk/examples/hello/hello.c"]
    expected += ["plugins/%s.dll" % p
                 for p in ["echo", "chat", "gateway", "backend"]]
    expected += ["conf/%s.json" % c
                 for c in ["iocphost", "gateway", "backend"]]
    missing = [p for p in expected
               if not os.path.isfile(os.path.join(root, p))]
    if missing:
        fail("the .zip lacks %s" % ", ".join(missing))
    for config in glob.glob(os.path.join(root, "conf", "*.json")):
        with open(config) as f:
            text = json.load(f)
        if text["runtime_dir"] != "run":
            fail("%s: runtime_dir %r is not the folder's own \"run\"" %
                 (config, text["runtime_dir"]))
        for plugin in text["plugins"]:
            if plugin["path"] != "../plugins/" + plugin["name"]:
                fail("%s: plugin %s has path %r, not ../plugins/%s" %
                     (config, plugin["name"], plugin["path"], plugin["name"]))
    print("ok: one self-contained folder: bin, plugins, conf, SDK")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    build_dir, wine = os.path.abspath(sys.argv[1]), sys.argv[2]
    # Not /tmp: Wine reads a sticky world-writable folder as "Everyone may
    # delete what it holds", and the host rightly refuses plugins below it.
    parent = os.environ.get("IOCPHOST_TEST_TMPDIR")
    if parent:
        os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix="iocphost-zip-", dir=parent)
    host = None
    try:
        out = os.path.join(work, "packages")
        run(["cpack", "-G", "ZIP", "-B", out,
             "--config", os.path.join(build_dir, "CPackConfig.cmake")])
        zips = glob.glob(os.path.join(out, "*.zip"))
        if len(zips) != 1:
            fail("cpack made %r, expected one .zip" % zips)
        unpacked = os.path.join(work, "unpacked")
        os.mkdir(unpacked)
        run(["cmake", "-E", "tar", "xf", zips[0]], cwd=unpacked)
        folders = os.listdir(unpacked)
        if len(folders) != 1:
            fail("the .zip holds %r, not one folder" % folders)
        root = os.path.join(unpacked, folders[0])
        print("ok: %s unpacks to %s/" % (os.path.basename(zips[0]),
                                         folders[0]))
        check_layout(root)

        exe = os.path.join(root, "bin", "iocphost.exe")
        for config in ["iocphost", "gateway", "backend"]:
            path = os.path.join(root, "conf", config + ".json")
            run([wine, exe, "check", "-c", path])
        print("ok: iocphost.exe check accepts the shipped configs")

        # The shipped config on free ports, beside it (same relative paths).
        with open(os.path.join(root, "conf", "iocphost.json")) as f:
            config = json.load(f)
        ports = {}
        for service in config["services"]:
            ports[service["name"]] = free_port()
            service["address"] = "127.0.0.1:%d" % ports[service["name"]]
        config["name"] = "zip-test-%d" % os.getpid()
        config_file = os.path.join(root, "conf", "zip-test.json")
        with open(config_file, "w") as f:
            json.dump(config, f, indent=2)
        log_path = os.path.join(work, "host.log")
        with open(log_path, "w") as log:
            host = subprocess.Popen([wine, exe, "run", "-c", config_file],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log)
        deadline = time.monotonic() + DEADLINE_S
        sock = None
        while sock is None:
            if host.poll() is not None:
                fail("iocphost.exe exited %d before serving:\n%s" %
                     (host.returncode, open(log_path).read()))
            if time.monotonic() > deadline:
                fail("iocphost.exe did not accept on port %d within %d s:\n%s"
                     % (ports["echo"], DEADLINE_S, open(log_path).read()))
            try:
                sock = socket.create_connection(("127.0.0.1", ports["echo"]),
                                                timeout=DEADLINE_S)
            except ConnectionRefusedError:
                time.sleep(0.05)  # not listening yet: poll again
        with sock:
            data = b"hello from the unpacked zip\n" * 100
            sock.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        if got != data:
            fail("the unpacked echo.dll sent back %d of %d bytes" %
                 (len(got), len(data)))
        print("ok: the unpacked iocphost.exe echoes (port %d)" % ports["echo"])

        run([wine, exe, "stop", "-c", config_file])
        try:
            code = host.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            fail("iocphost.exe did not stop within %d s" % DEADLINE_S)
        if code != 0:
            fail("iocphost.exe exited %d after stop:\n%s" %
                 (code, open(log_path).read()))
        print("ok: iocphost.exe stop stopped it, exit 0")
    finally:
        if host is not None and host.poll() is None:
            host.kill()
            host.wait()
        shutil.rmtree(work, ignore_errors=True)
    print("PASS: the .zip unpacks, checks and serves under Wine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
