"""Windows: a plugin that others may replace is refused (the Windows
counterpart of test_hostile_plugin_perms.py; the rule is in
host/app/trust_win.h, its decisions are unit-tested in test_trust_win.c).

A file's DACL is set here through the Windows API
(tests/windows/set_dacl.exe: SetNamedSecurityInfo, then reads the DACL back).
Wine keeps only what a Unix mode can say, so only a grant to Everyone
survives (as the mode's "other" bits): that is what these tests use, and a
test skips, saying so, where the DACL read back lacks it.

  - `check` refuses a plugin file Everyone may write, and a plugin whose
    folder Everyone may add files to, naming the path, Everyone, the right
    and the icacls fix; with the DACL made safe again it passes;
  - `run` and `reload` refuse when the deployed file and runtime_dir (where
    the shadow copies are loaded from) both let Everyone in: whichever of
    the two the host checks, through the same decision, refuses (today the
    loader checks the shadow copy, so runtime_dir; where the deployed file
    is checked before it is copied, that); after a refused reload the
    running generation keeps serving;
  - the shadow folder under runtime_dir is created with a DACL of its own,
    for the host's account, SYSTEM and Administrators only (under
    C:\\ProgramData it would otherwise inherit "Users may add files").
"""

import json
import os
import shutil
import unittest

import harness
from harness import HostTestCase, Host

# Read and execute for Everyone; full control for SYSTEM, Administrators and
# the user the tests (and the host) run as.
SAFE = ("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;CURRENT_USER)"
        "(A;OICI;0x1200a9;;;WD)")
# The same, but Everyone may modify (write, append, delete).
EVERYONE_MODIFIES = ("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
                     "(A;OICI;FA;;;CURRENT_USER)(A;OICI;0x1301bf;;;WD)")


@unittest.skipUnless(harness.WINDOWS, "Windows only: DACLs (Linux: "
                     "test_hostile_plugin_perms.py)")
class WindowsPluginTrustTest(HostTestCase):

    def dacl_tool(self, *args):
        """Runs set_dacl.exe; returns the DACL it reports, as SDDL."""
        tool = os.path.join(harness.BUILD_DIR, "tests", "windows",
                            "set_dacl.exe")
        wine = harness.host_command()[:-1] or ["wine"]
        result = harness.run_program(wine + [tool] + list(args), timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()

    def set_dacl(self, path, sddl, expect_everyone_writes):
        stored = self.dacl_tool(path, sddl)
        # Everyone (WD) with a write bit: FA, or a mask with 0x2 set.
        everyone = [ace for ace in stored.split("(") if ace.endswith(";WD)")]
        writes = any(";FA;" in ace or ";GA;" in ace or ";GW;" in ace or
                     (";0x" in ace and
                      int(ace.split(";")[2], 16) & 0x2) for ace in everyone)
        if writes != expect_everyone_writes:
            self.skipTest("this system did not store the DACL asked for "
                          "(%s); it reports %s" % (sddl, stored))

    def deploy_echo(self, folder_name="plugins"):
        """A copy of the echo plugin in a folder of the test's own, and a
        config that loads it."""
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", port)])
        host = Host(self, config, "trust")
        folder = os.path.join(host.dir, folder_name)
        os.mkdir(folder)
        plugin = os.path.join(folder, "echo.dll")
        shutil.copyfile(harness.plugin_path("echo"), plugin)
        config["plugins"][0]["path"] = plugin
        with open(host.config_path, "w") as f:
            json.dump(config, f)
        self.set_dacl(folder, SAFE, False)
        self.set_dacl(plugin, SAFE, False)
        return host, folder, plugin

    def check(self, host):
        return harness.run_cli(["check", "-c", host.config_path], timeout=30)

    def assert_refused(self, result, *parts):
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        for part in ("refusing to load", "Everyone", "S-1-1-0",
                     "icacls") + parts:
            self.assertIn(part, output)

    def test_check_refuses_a_plugin_file_everyone_may_write(self):
        host, folder, plugin = self.deploy_echo()
        result = self.check(host)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.set_dacl(plugin, EVERYONE_MODIFIES, True)
        result = self.check(host)
        self.assert_refused(result, "the file ", "echo.dll lets ",
                            "write (WD)")
        self.set_dacl(plugin, SAFE, False)
        result = self.check(host)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_check_refuses_a_plugin_whose_folder_everyone_may_add_to(self):
        host, folder, plugin = self.deploy_echo()
        self.set_dacl(folder, EVERYONE_MODIFIES, True)
        result = self.check(host)
        self.assert_refused(result, "its folder ", "add files (WD)",
                            "another DLL")

    def assert_refused_everyone(self, result):
        output = result.stdout + result.stderr
        for part in ("Everyone", "S-1-1-0", "icacls"):
            self.assertIn(part, output)

    def test_run_refuses_an_untrusted_deployment(self):
        host, folder, plugin = self.deploy_echo()
        runtime_dir = os.path.join(host.dir, "run")
        os.mkdir(runtime_dir)
        self.set_dacl(runtime_dir, EVERYONE_MODIFIES, True)
        self.set_dacl(plugin, EVERYONE_MODIFIES, True)
        result = harness.run_cli(["run", "-c", host.config_path], timeout=30)
        # 1 (a refused plugin) or 3 (a refused shadow copy counts as a
        # runtime failure today): what matters is that it refuses.
        self.assertIn(result.returncode, (1, 3),
                      result.stdout + result.stderr)
        self.assert_refused_everyone(result)

    def test_reload_refuses_an_untrusted_deployment(self):
        host, folder, plugin = self.deploy_echo()
        host.start()
        port = host.ports()[0]
        self.set_dacl(os.path.join(host.dir, "run"), EVERYONE_MODIFIES, True)
        self.set_dacl(plugin, EVERYONE_MODIFIES, True)
        # A changed setting makes the reload load a new generation.
        config = dict(host.config)
        config["plugins"] = [dict(config["plugins"][0],
                                  settings={"round": 2})]
        with open(host.config_path, "w") as f:
            json.dump(config, f)
        result = harness.run_cli(["reload", "-c", host.config_path],
                                 timeout=30)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assert_refused_everyone(result)
        self.assertIn("nothing changed", result.stdout + result.stderr)
        with harness.connect(port) as sock:
            self.assertEqual(harness.exchange(sock, b"still"), b"still")
        plugin_status = host.status_json()["plugins"][0]
        self.assertEqual(len(plugin_status["generations"]), 1, plugin_status)
        host.stop()

    def test_the_shadow_folder_is_for_the_host_system_and_admins_only(self):
        host, folder, plugin = self.deploy_echo()
        host.start()
        run = os.path.join(host.dir, "run")
        shadows = [name for name in os.listdir(run)
                   if name.startswith("plugins-")]
        self.assertEqual(len(shadows), 1, os.listdir(run))
        dacl = self.dacl_tool(os.path.join(run, shadows[0]))
        # Wine reports the user, SYSTEM and Everyone (from the Unix mode);
        # Windows the three entries the host set. Nobody else, with any
        # right at all.
        entries = [ace.rstrip(")") for ace in dacl.split("(")[1:]]
        self.assertTrue(entries, dacl)
        for ace in entries:
            fields = ace.split(";")
            if fields[5] in ("SY", "BA", "S-1-5-32-544") or \
                    fields[5].startswith("S-1-5-21-"):
                continue
            self.assertTrue(fields[2] in ("", "0x0"),
                            "the shadow folder grants %s: %s" % (ace, dacl))
        host.stop()


if __name__ == "__main__":
    unittest.main()
