"""conf/iocphost.service, the systemd unit (SPEC section 11).

  - `systemd-analyze verify` accepts it (with ExecStart pointed at the built
    binary, since nothing is installed under /usr/local here); skipped when
    systemd-analyze is missing;
  - it says what the host needs: Type=notify with NotifyAccess=main, reload
    by SIGHUP, a stop timeout above the drain timeout, the runtime folder
    the config's runtime_dir points at, the hardening it promises;
  - the host, its plugins (dlopen'd) and a graceful stop work under the
    kernel's own MemoryDenyWriteExecute (prctl PR_SET_MDWE, what the unit's
    MemoryDenyWriteExecute=yes asks for); skipped on kernels without it.
"""

import ctypes
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import HostTestCase, Host

UNIT = os.path.join(harness.SOURCE_DIR, "conf", "iocphost.service")
DEFAULT_DRAIN_TIMEOUT_S = 10  # SPEC section 6 default drain_timeout_ms

PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1


def unit_settings(text):
    """{(section, key): [values]} of a unit file."""
    settings = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(";"):
            continue
        match = re.match(r"\[(\w+)\]$", line)
        if match:
            section = match.group(1)
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def seconds(value):
    match = re.fullmatch(r"(\d+)(s|min|ms)?", value)
    if not match:
        raise AssertionError("cannot read %r as a time span" % value)
    number, unit = int(match.group(1)), match.group(2) or "s"
    return {"s": number, "min": 60 * number, "ms": number / 1000.0}[unit]


@harness.posix_only(
    "the systemd unit (Windows: test_windows_service.py)")
class SystemdUnitTest(HostTestCase):

    def setUp(self):
        with open(UNIT) as f:
            self.text = f.read()
        self.settings = unit_settings(self.text)

    def one(self, section, key):
        values = self.settings.get((section, key))
        self.assertIsNotNone(values, "%s= missing from [%s]" % (key, section))
        self.assertEqual(len(values), 1, "%s= given %d times" %
                         (key, len(values)))
        return values[0]

    def test_systemd_analyze_verify_accepts_it(self):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.skipTest("systemd-analyze is not installed")
        binary = harness.host_command()
        if len(binary) != 1:
            self.skipTest("the host is not a plain binary here: %r" % binary)
        folder = tempfile.mkdtemp(prefix="iocphost-unit-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        unit = os.path.join(folder, "iocphost.service")
        with open(unit, "w") as f:
            f.write(self.text.replace("/usr/local/bin/iocphost",
                                      os.path.abspath(binary[0])))
        result = subprocess.run([tool, "verify", unit], capture_output=True,
                                text=True, timeout=harness.scaled(60),
                                stdin=subprocess.DEVNULL)
        about_us = [line for line in
                    (result.stdout + result.stderr).splitlines()
                    if "iocphost" in line]
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(about_us, [], "systemd-analyze verify complained")

    def test_it_says_what_the_host_needs(self):
        self.assertEqual(self.one("Service", "Type"), "notify")
        self.assertEqual(self.one("Service", "NotifyAccess"), "main")
        self.assertEqual(self.one("Service", "ExecStart"),
                         "/usr/local/bin/iocphost run -c "
                         "/etc/iocphost/iocphost.json")
        self.assertEqual(self.one("Service", "ExecReload"),
                         "/bin/kill -HUP $MAINPID")
        self.assertEqual(self.one("Service", "Restart"), "on-failure")
        self.assertGreater(seconds(self.one("Service", "RestartSec")), 0)
        self.assertGreater(seconds(self.one("Service", "TimeoutStopSec")),
                           DEFAULT_DRAIN_TIMEOUT_S + 5)
        # runtime_dir "/run/iocphost" in the config is this folder.
        self.assertEqual(self.one("Service", "RuntimeDirectory"), "iocphost")
        self.assertIn('"runtime_dir": "/run/iocphost"', self.text)
        self.assertEqual(self.one("Service", "User"), "iocphost")
        self.assertEqual(self.one("Service", "Group"), "iocphost")
        self.assertEqual(self.one("Service", "LimitNOFILE"), "1048576")
        self.assertIn("#WatchdogSec=", self.text)
        hardening = {
            "NoNewPrivileges": "yes", "ProtectSystem": "strict",
            "ProtectHome": "yes", "PrivateTmp": "yes",
            "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "RestrictNamespaces": "yes", "LockPersonality": "yes",
            "MemoryDenyWriteExecute": "yes",
            "SystemCallArchitectures": "native",
        }
        for key, value in hardening.items():
            self.assertEqual(self.one("Service", key), value, key)
        # Logs are writable under ProtectSystem=strict.
        self.assertTrue(("Service", "LogsDirectory") in self.settings or
                        ("Service", "ReadWritePaths") in self.settings)
        self.assertEqual(self.one("Install", "WantedBy"), "multi-user.target")

    def test_host_and_plugins_run_under_memory_deny_write_execute(self):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        if libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) < 0:
            self.skipTest("this kernel has no PR_SET_MDWE (Linux >= 6.3)")

        def deny_write_execute():
            if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
                os._exit(120)  # cannot sandbox: fail loudly, never run open

        echo_port, push_port = harness.free_port(), harness.free_port()
        config = harness.make_config(
            {"echo": {}, "pusher": {}},
            [harness.server_service("echo", "echo", echo_port),
             harness.server_service("push", "pusher", push_port)])
        host = Host(self, config, "mdwe")
        host.preexec_fn = deny_write_execute
        host.start()  # fails if the sandbox could not be set (exit 120)
        with harness.connect(echo_port) as sock:
            data = os.urandom(100000)
            self.assertEqual(harness.exchange(sock, data), data)
        with harness.connect(push_port) as sock:
            self.assertGreaterEqual(
                len(harness.exchange(sock, b"", expect_len=65536)), 65536)
        host.stop()
        self.assertNotIn("ERROR", host.log())


if __name__ == "__main__":
    unittest.main()
