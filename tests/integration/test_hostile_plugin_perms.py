"""Plugins on disk (Linux): the host refuses a plugin file, a folder on its
way from the root, or a link (the link and its target) that anyone but the
host's user and root may change (another owner; group or other write), with
a message naming the path and the fix; a sticky folder (like /tmp) holding
the host user's own file is fine. `check` and `run` refuse alike, with exit
code 1 (reload: test_reload_trust.py)."""

import os
import re
import shutil
import stat
import tempfile
import unittest

import harness
from harness import Host, HostTestCase

OTHER_UID = 65534  # nobody: another user, played by root in CI


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
        # "chmod o-w X", or "chmod go-w X" when the group may write too.
        self.assertRegex(result.stderr,
                         r"chmod g?o-w %s\b" % re.escape(culprit))

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

    def assert_refused_naming(self, result, *parts):
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("refusing to load", result.stderr)
        for part in parts:
            self.assertIn(part, result.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to chown")
    def test_a_file_owned_by_another_user_is_refused(self):
        # Theirs, 0644, in their own 0755 folder: they can change it.
        os.chown(self.plugin, OTHER_UID, OTHER_UID)
        os.chmod(self.plugin, 0o644)
        os.chown(self.folder, OTHER_UID, OTHER_UID)
        self.assert_refused_naming(self.check(), self.folder,
                                   "owned by uid %d" % OTHER_UID)
        os.chown(self.folder, 0, 0)
        self.assert_refused_naming(self.check(), self.plugin,
                                   "owned by uid %d" % OTHER_UID)

    def test_a_group_writable_file_in_a_group_writable_folder_is_refused(self):
        os.chmod(self.plugin, 0o775)
        self.assert_refused_naming(self.check(), self.plugin,
                                   "writable by its group",
                                   "chmod g-w %s" % self.plugin)
        os.chmod(self.plugin, 0o755)
        os.chmod(self.folder, 0o775)
        self.assert_refused_naming(self.check(), self.folder,
                                   "writable by its group",
                                   "chmod g-w %s" % self.folder)

    def test_a_safe_folder_under_an_other_writable_folder_is_refused(self):
        os.chmod(self.dir, 0o777)
        self.assert_refused(self.check(), self.dir)

    def test_a_link_in_an_other_writable_folder_is_refused(self):
        # The target is safe; the link is not: anyone may replace it.
        shared = os.path.join(self.dir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        link = os.path.join(shared, "hostile" + harness.PLUGIN_SUFFIX)
        os.symlink(self.plugin, link)
        self.assert_refused(self.check(link), shared)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to chown")
    def test_a_link_owned_by_another_user_is_refused(self):
        link = os.path.join(self.folder, "link" + harness.PLUGIN_SUFFIX)
        os.symlink(self.plugin, link)
        os.lchown(link, OTHER_UID, OTHER_UID)
        self.assert_refused_naming(self.check(link), link,
                                   "owned by uid %d" % OTHER_UID)

    def test_a_relative_link_to_a_safe_file_loads(self):
        link = os.path.join(self.folder, "link" + harness.PLUGIN_SUFFIX)
        os.symlink(os.path.join("..", "plugins",
                                "hostile" + harness.PLUGIN_SUFFIX), link)
        result = self.check(link)
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
