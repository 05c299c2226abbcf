#!/usr/bin/env python3
"""package.deb: the Debian packages, installed as an operator installs them.

Makes the .deb packages of this build with cpack (iocphost and
iocphost-dev), installs them with `dpkg -i`, and checks that
  - the files are where README's "Install from the packages" says, owned as
    the host's trust checks need (plugins and their folders root's and
    writable by no one else; /etc/iocphost root:iocphost, 0750/0640);
  - the system user iocphost exists; the unit is installed, points at the
    installed files, and is not enabled;
  - `iocphost check` accepts every shipped config, run as the iocphost user;
  - the installed host, started in the foreground as the iocphost user (not
    through systemd) on the shipped config moved to free loopback ports and
    a runtime_dir of its own, echoes bytes and stops through `iocphost stop`;
  - sdk/examples/hello, as installed under /usr/share/doc, builds against the
    installed SDK with no hints (and for Windows, with the SDK's toolchain
    file, when mingw-w64 is installed);
then removes them with `dpkg --purge` and checks that nothing is left: no
file, folder, user or group of theirs.

Needs root (dpkg): exits 77 (skipped) otherwise. Refuses to run when an
iocphost package is installed already: it never touches an existing install.

  tests/package/deb_test.py <build-dir>
"""

import glob
import json
import os
import pwd
import grp
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

SKIP = 77
PACKAGES = ["iocphost", "iocphost-dev"]
USER = "iocphost"
DEADLINE_S = 30


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def run(command, check=True, **kwargs):
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=300, **kwargs)
    if check and result.returncode != 0:
        fail("%s exited %d:\n%s%s" % (" ".join(command), result.returncode,
                                      result.stdout, result.stderr))
    return result


def as_user(command):
    """The command run as the iocphost user (the unit's User=/Group=)."""
    return ["setpriv", "--reuid", USER, "--regid", USER, "--clear-groups",
            "--"] + command


def installed(package):
    result = run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
    return result.returncode == 0 and "installed" in result.stdout


def dpkg(*args):
    """dpkg, waiting (bounded) while another apt or dpkg holds its lock."""
    deadline = time.monotonic() + 300
    while True:
        result = run(["dpkg"] + list(args), check=False)
        if result.returncode == 0:
            return result
        if "lock" not in result.stderr or time.monotonic() > deadline:
            fail("dpkg %s exited %d:\n%s%s" % (" ".join(args),
                 result.returncode, result.stdout, result.stderr))
        time.sleep(1)  # another dpkg holds the lock: poll until it is free


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expect_mode(path, owner, group, mode):
    st = os.lstat(path)
    got = (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
           stat.S_IMODE(st.st_mode))
    if got != (owner, group, mode):
        fail("%s is %s:%s %04o, expected %s:%s %04o" %
             (path, got[0], got[1], got[2], owner, group, mode))


def check_layout():
    expect_mode("/usr/bin/iocphost", "root", "root", 0o755)
    for folder in ["/usr/lib/iocphost", "/usr/lib/iocphost/plugins"]:
        expect_mode(folder, "root", "root", 0o755)
    for plugin in ["echo", "chat", "gateway", "backend"]:
        expect_mode("/usr/lib/iocphost/plugins/%s.so" % plugin,
                    "root", "root", 0o644)
    expect_mode("/etc/iocphost", "root", USER, 0o750)
    for config in ["iocphost", "gateway", "backend"]:
        path = "/etc/iocphost/%s.json" % config
        expect_mode(path, "root", USER, 0o640)
        with open(path) as f:
            text = json.load(f)
        if text["runtime_dir"] != "/run/iocphost":
            fail("%s: runtime_dir is %r, not the unit's /run/iocphost" %
                 (path, text["runtime_dir"]))
        for plugin in text["plugins"]:
            if not plugin["path"].startswith("/usr/lib/iocphost/plugins/"):
                fail("%s: plugin %s has path %r, not the installed plugin" %
                     (path, plugin["name"], plugin["path"]))
    for header in ["/usr/include/iocphost/plugin.h",
                   "/usr/share/cmake/iocphost/iocphostConfig.cmake",
                   "/usr/share/cmake/iocphost/mingw-w64-x86_64.cmake",
                   "/usr/share/doc/iocphost/sdk/README.md"]:
        if not os.path.isfile(header):
            fail("iocphost-dev did not install %s" % header)

    user = pwd.getpwnam(USER)
    if user.pw_uid >= 1000 or user.pw_shell != "/usr/sbin/nologin":
        fail("the iocphost user is not a system user without a shell: %r" %
             (user,))

    unit = "/usr/lib/systemd/system/iocphost.service"
    with open(unit) as f:
        lines = f.read().splitlines()
    execstart = [l for l in lines if l.startswith("ExecStart=")]
    if execstart != ["ExecStart=/usr/bin/iocphost run -c "
                     "/etc/iocphost/iocphost.json"]:
        fail("%s: %r does not run the installed host and config" %
             (unit, execstart))
    enabled = glob.glob("/etc/systemd/system/*.wants/iocphost.service")
    if enabled:
        fail("the package enabled the unit (%s); it must only install it" %
             enabled)
    tool = shutil.which("systemd-analyze")
    if tool:
        result = run([tool, "verify", unit], check=False)
        about_us = [l for l in (result.stdout + result.stderr).splitlines()
                    if "iocphost" in l]
        if result.returncode != 0 or about_us:
            fail("systemd-analyze verify %s:\n%s%s" %
                 (unit, result.stdout, result.stderr))
    print("ok: files, owners, modes, user and unit as documented")


def check_configs():
    for config in ["iocphost", "gateway", "backend"]:
        path = "/etc/iocphost/%s.json" % config
        result = run(as_user(["/usr/bin/iocphost", "check", "-c", path]),
                     check=False)
        if result.returncode != 0:
            fail("iocphost check -c %s as %s exited %d:\n%s%s" %
                 (path, USER, result.returncode, result.stdout, result.stderr))
    print("ok: iocphost check accepts the shipped configs (as %s)" % USER)


def echo_round_trip(work):
    """The installed host on the shipped config, moved to free ports."""
    with open("/etc/iocphost/iocphost.json") as f:
        config = json.load(f)
    ports = {}
    for service in config["services"]:
        ports[service["name"]] = free_port()
        service["address"] = "127.0.0.1:%d" % ports[service["name"]]
    run_dir = os.path.join(work, "run")
    os.mkdir(run_dir, 0o700)
    user = pwd.getpwnam(USER)
    os.chown(run_dir, user.pw_uid, user.pw_gid)
    config["runtime_dir"] = run_dir
    config_file = os.path.join(work, "iocphost.json")
    with open(config_file, "w") as f:
        json.dump(config, f, indent=2)
    os.chmod(config_file, 0o644)

    log_path = os.path.join(work, "host.log")
    with open(log_path, "w") as log:
        host = subprocess.Popen(
            as_user(["/usr/bin/iocphost", "run", "-c", config_file]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        sock = None
        while sock is None:
            if host.poll() is not None:
                fail("the installed host exited %d before serving:\n%s" %
                     (host.returncode, open(log_path).read()))
            if time.monotonic() > deadline:
                fail("the installed host did not accept on port %d within "
                     "%d s:\n%s" % (ports["echo"], DEADLINE_S,
                                    open(log_path).read()))
            try:
                sock = socket.create_connection(("127.0.0.1", ports["echo"]),
                                                timeout=DEADLINE_S)
            except ConnectionRefusedError:
                time.sleep(0.05)  # not listening yet: poll again
        with sock:
            data = b"hello from the installed package\n" * 100
            sock.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        if got != data:
            fail("the installed echo plugin sent back %d of %d bytes" %
                 (len(got), len(data)))
        print("ok: the installed host echoes (port %d)" % ports["echo"])

        result = run(as_user(["/usr/bin/iocphost", "stop", "-c",
                              config_file]), check=False)
        if result.returncode != 0:
            fail("iocphost stop exited %d:\n%s%s" %
                 (result.returncode, result.stdout, result.stderr))
        try:
            code = host.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            fail("the installed host did not stop within %d s" % DEADLINE_S)
        if code != 0:
            fail("the installed host exited %d after stop:\n%s" %
                 (code, open(log_path).read()))
        print("ok: iocphost stop stopped it, exit 0")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


def build_hello(work):
    """The installed example against the installed SDK, no hints."""
    source = os.path.join(work, "hello")
    shutil.copytree("/usr/share/doc/iocphost/sdk/examples/hello", source)
    builds = [("linux", [], "hello.so")]
    if shutil.which("x86_64-w64-mingw32-gcc"):
        builds.append(("windows", [
            "-DCMAKE_TOOLCHAIN_FILE="
            "/usr/share/cmake/iocphost/mingw-w64-x86_64.cmake"], "hello.dll"))
    else:
        print("note: x86_64-w64-mingw32-gcc is not installed: hello.dll "
              "against the installed SDK not tried")
    for name, args, output in builds:
        build = os.path.join(work, "hello-" + name)
        run(["cmake", "-S", source, "-B", build,
             "-DCMAKE_BUILD_TYPE=Release"] + args)
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            found = [l.strip() for l in f if l.startswith("iocphost_DIR")]
        if found != ["iocphost_DIR:PATH=/usr/share/cmake/iocphost"]:
            fail("hello (%s) found the SDK at %r, not the installed one" %
                 (name, found))
        run(["cmake", "--build", build])
        if not os.path.isfile(os.path.join(build, output)):
            fail("building hello against the installed SDK made no %s" %
                 output)
        print("ok: hello builds against the installed SDK (%s: %s)" %
              (name, output))


def check_removed(files, user_before):
    for package in PACKAGES:
        if installed(package) or run(["dpkg-query", "-W", package],
                                     check=False).returncode == 0:
            fail("%s is still known to dpkg after --purge" % package)
    left = [p for p in files if os.path.lexists(p) and
            not os.path.isdir(p)]
    for folder in ["/etc/iocphost", "/usr/lib/iocphost",
                   "/usr/include/iocphost", "/usr/share/cmake/iocphost",
                   "/usr/share/doc/iocphost", "/var/log/iocphost"]:
        if os.path.lexists(folder):
            left.append(folder)
    if left:
        fail("dpkg --purge left behind: %s" % ", ".join(left))
    if not user_before:
        for lookup, kind in [(pwd.getpwnam, "user"), (grp.getgrnam, "group")]:
            try:
                lookup(USER)
                fail("dpkg --purge left the %s %s behind" % (kind, USER))
            except KeyError:
                pass
    print("ok: dpkg --purge removed every file, folder, user and group")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    build_dir = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        print("SKIP: installing a .deb needs root (dpkg -i); CI runs as "
              "root. Run this test as root to try the packages.")
        return SKIP
    for tool in ["dpkg", "cpack", "setpriv", "dpkg-shlibdeps"]:
        if not shutil.which(tool):
            fail("%s is missing (scripts/deps.sh installs it)" % tool)
    there = [p for p in PACKAGES if installed(p)]
    if there:
        fail("%s installed on this machine already; this test installs "
             "and purges its own build and leaves an existing install alone: "
             "dpkg --purge %s, then run it again" %
             (" and ".join(there) + (" is" if len(there) == 1 else " are"),
              " ".join(there)))
    try:
        pwd.getpwnam(USER)
        user_before = True
    except KeyError:
        user_before = False

    work = tempfile.mkdtemp(prefix="iocphost-deb-")
    os.chmod(work, 0o755)  # the iocphost user reads its config here
    try:
        out = os.path.join(work, "packages")
        run(["cpack", "-G", "DEB", "-B", out,
             "--config", os.path.join(build_dir, "CPackConfig.cmake")])
        debs = sorted(glob.glob(os.path.join(out, "*.deb")))
        names = sorted(os.path.basename(d).split("_")[0] for d in debs)
        if names != sorted(PACKAGES):
            fail("cpack made %s, expected %s" % (names, PACKAGES))
        try:
            dpkg("-i", *debs)
            print("ok: dpkg -i %s" % " ".join(os.path.basename(d)
                                                for d in debs))
            files = run(["dpkg", "-L"] + PACKAGES).stdout.split()
            check_layout()
            check_configs()
            echo_round_trip(work)
            build_hello(work)
        finally:
            dpkg("--purge", *PACKAGES)
        check_removed(files, user_before)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS: the .deb installs, serves and purges cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
