"""Plugins on disk (Linux): the host refuses a plugin file, or a plugin
folder, that other users may write, with a message naming the path and the
fix; a sticky folder (like /tmp) holding the host user's own file is fine.
`check` and `run` refuse alike, with exit code 1."""

import os
import shutil
import stat
import tempfile
import unittest

import harness
from harness import Host, HostTestCase


@unittest.skipIf(os.name == "nt" or harness.PLUGIN_SUFFIX == ".dll",
                 "POSIX permissions (Windows relies on ACLs)")
class PluginPermissionsTest(HostTestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="iocphost-perms-")
        self.folder = os.path.join(self.dir, "plugins")
        os.mkdir(self.folder, 0o755)
        os.chmod(self.folder, 0o755)
        self.plugin = os.path.join(self.folder, "hostile" +
                                   harness.PLUGIN_SUFFIX)
        shutil.copy(harness.plugin_path("hostile"), self.plugin)
        os.chmod(self.plugin, 0o755)

    def tearDown(self):
        os.chmod(self.folder, 0o755)
        shutil.rmtree(self.dir, ignore_errors=True)

    def config(self, path):
        config = harness.make_config(
            {"hostile": {}},
            [harness.server_service("echo-raw", "hostile",
                                    harness.free_port(), "raw")])
        config["plugins"][0]["path"] = path
        return Host(self, config, "perms")

    def check(self, path=None):
        host = self.config(path or self.plugin)
        return harness.run_cli(["check", "-c", host.config_path])

    def assert_refused(self, result, culprit):
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("refusing to load", result.stderr)
        self.assertIn("writable by other users", result.stderr)
        self.assertIn("chmod o-w %s" % culprit, result.stderr)

    def test_a_private_plugin_loads(self):
        result = self.check()
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_a_world_writable_file_is_refused(self):
        os.chmod(self.plugin, 0o757)
        self.assert_refused(self.check(), self.plugin)
        host = self.config(self.plugin)
        result = harness.run_cli(["run", "-c", host.config_path])
        self.assert_refused(result, self.plugin)

    def test_a_world_writable_folder_is_refused(self):
        os.chmod(self.folder, 0o777)
        self.assert_refused(self.check(), self.folder)

    def test_a_sticky_world_writable_folder_with_our_own_file_loads(self):
        os.chmod(self.folder, 0o777 | stat.S_ISVTX)
        result = self.check()
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_a_link_to_a_world_writable_file_is_refused(self):
        os.chmod(self.plugin, 0o757)
        safe = os.path.join(self.dir, "safe")
        os.mkdir(safe, 0o755)
        os.chmod(safe, 0o755)
        link = os.path.join(safe, "hostile" + harness.PLUGIN_SUFFIX)
        os.symlink(self.plugin, link)
        self.assert_refused(self.check(link), self.plugin)


if __name__ == "__main__":
    unittest.main()
