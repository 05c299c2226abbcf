"""runtime_dir (Linux): the host keeps its control socket, its lock and the
shadow copies of its plugins there, so it starts only when that folder is
its own: owned by the host's user, writable by no one else, on a path that
only the host's user and root can change. It never changes the mode of a
folder it did not create, never follows a link while cleaning up, and a
stale shadow folder of its own pid (a container's pid 1 after an OOM kill)
does not keep it from starting.

Other users are played by uid 65534 (`nobody`): the test runs as root in CI
and chowns folders to it, or runs the host itself as that uid."""

import os
import shutil
import stat
import tempfile
import unittest

import harness
from harness import Host, HostTestCase

OTHER_UID = 65534  # nobody
# kill(pid, 0) says "no such process" for a pid above the kernel's maximum.
DEAD_PID = 4194305


def as_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


@harness.posix_only("POSIX owners and modes (Windows relies on ACLs)")
@unittest.skipUnless(as_root(), "needs root to play another user (chown)")
class RuntimeDirTrustTest(HostTestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="iocphost-rtdir-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.port = harness.free_port()

    def make_host(self, runtime_dir=None, label="rtdir"):
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", self.port)])
        if runtime_dir is not None:
            config["runtime_dir"] = runtime_dir
        return Host(self, config, label)

    def assert_refused(self, host, *parts):
        """The host exits 3 before serving, naming each of parts."""
        host.start(wait_ports=False)
        harness.wait_until(lambda: host.process.poll() is not None, 10,
                           "the host to refuse its runtime_dir and exit")
        self.assertEqual(host.process.returncode, 3, host.log())
        log = host.log()
        for part in parts:
            self.assertIn(part, log)
        self.assertFalse(harness.port_accepts(self.port))
        return log

    def echo_once(self):
        with harness.connect(self.port) as sock:
            self.assertEqual(harness.exchange(sock, b"ping"), b"ping")

    def test_a_runtime_dir_inside_another_users_open_folder_is_refused(self):
        # The attacker's `mkdir -m777 /tmp/x`; the host is told x/run.
        shared = os.path.join(self.tmp, "x")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        os.chown(shared, OTHER_UID, OTHER_UID)
        host = self.make_host(os.path.join(shared, "run"))
        self.assert_refused(host, shared, "runtime_dir",
                            "owned by uid %d" % OTHER_UID)
        # Nothing was created in it, and its mode is as it was.
        self.assertEqual(os.listdir(shared), [])
        self.assertEqual(stat.S_IMODE(os.stat(shared).st_mode), 0o777)

    def test_a_runtime_dir_owned_by_another_user_is_refused(self):
        theirs = os.path.join(self.tmp, "theirs")
        os.mkdir(theirs, 0o700)
        os.chown(theirs, OTHER_UID, OTHER_UID)
        host = self.make_host(theirs)
        self.assert_refused(host, theirs, "owned by uid %d" % OTHER_UID)
        self.assertEqual(os.listdir(theirs), [])

    def test_a_shared_sticky_runtime_dir_is_refused_and_its_mode_kept(self):
        # Like /tmp: the host must never make it drwx------.
        shared = os.path.join(self.tmp, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)
        host = self.make_host(shared)
        self.assert_refused(host, shared, "writable by other users",
                            "chmod go-w")
        self.assertEqual(stat.S_IMODE(os.stat(shared).st_mode), 0o1777)
        self.assertEqual(os.listdir(shared), [])

    def test_a_group_writable_runtime_dir_is_refused_and_its_mode_kept(self):
        mine = os.path.join(self.tmp, "mine")
        os.mkdir(mine)
        os.chmod(mine, 0o770)
        host = self.make_host(mine)
        self.assert_refused(host, mine, "writable by its group")
        self.assertEqual(stat.S_IMODE(os.stat(mine).st_mode), 0o770)

    def test_a_runtime_dir_under_an_open_parent_is_refused(self):
        # The runtime_dir is the host's own, but a folder above it is open
        # to everyone, who could rename it away and put theirs in its place.
        open_parent = os.path.join(self.tmp, "open")
        os.mkdir(open_parent)
        os.chmod(open_parent, 0o777)
        runtime_dir = os.path.join(open_parent, "run")
        os.mkdir(runtime_dir, 0o700)
        host = self.make_host(runtime_dir)
        self.assert_refused(host, open_parent, "writable by other users")

    def test_the_host_creates_a_private_runtime_dir_and_serves(self):
        runtime_dir = os.path.join(self.tmp, "a", "b", "run")
        host = self.make_host(runtime_dir).start()
        self.echo_once()
        self.assertEqual(stat.S_IMODE(os.stat(runtime_dir).st_mode), 0o700)
        for name in os.listdir(runtime_dir):
            st = os.lstat(os.path.join(runtime_dir, name))
            self.assertEqual(st.st_uid, os.geteuid(), name)
            self.assertEqual(stat.S_IMODE(st.st_mode) & 0o022, 0, name)
        host.stop()

    def test_the_stale_shadow_cleanup_never_follows_a_link(self):
        runtime_dir = os.path.join(self.tmp, "run")
        os.mkdir(runtime_dir, 0o700)
        victim = os.path.join(self.tmp, "victim")
        os.mkdir(victim)
        kept = os.path.join(victim, "precious.txt")
        with open(kept, "w") as f:
            f.write("keep me\n")
        link = os.path.join(runtime_dir,
                            "plugins-iocphost-test-%d" % DEAD_PID)
        os.symlink(victim, link)
        stale = os.path.join(runtime_dir,
                             "plugins-iocphost-test-%d" % (DEAD_PID + 1))
        os.mkdir(stale, 0o700)
        with open(os.path.join(stale, "echo.1.so"), "w") as f:
            f.write("left by a dead instance\n")
        host = self.make_host(runtime_dir).start()
        self.echo_once()
        self.assertTrue(os.path.exists(kept), "the cleanup followed the link")
        self.assertFalse(os.path.lexists(link))
        self.assertFalse(os.path.lexists(stale))
        host.stop()

    def test_a_read_only_shadow_folder_of_the_hosts_own_pid_is_replaced(self):
        """The host runs as uid 65534 (root would write through a read-only
        mode): a killed run left plugins-<name>-<pid> with a read-only copy,
        and the new host has that same pid, as pid 1 in a container does."""
        host = self.make_host()
        runtime_dir = os.path.join(host.dir, "run")
        os.mkdir(runtime_dir, 0o700)
        os.chown(runtime_dir, OTHER_UID, OTHER_UID)
        os.chmod(host.dir, 0o755)
        os.chmod(host.config_path, 0o644)

        def leave_a_stale_folder_then_become_nobody():
            stale = os.path.join(runtime_dir,
                                 "plugins-iocphost-test-%d" % os.getpid())
            os.mkdir(stale, 0o700)
            copy = os.path.join(stale, "echo.1.so")
            with open(copy, "w") as f:
                f.write("a copy left by the killed run\n")
            os.chmod(copy, 0o400)
            os.chown(copy, OTHER_UID, OTHER_UID)
            os.chmod(stale, 0o500)
            os.chown(stale, OTHER_UID, OTHER_UID)
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)

        host.preexec_fn = leave_a_stale_folder_then_become_nobody
        host.start()
        self.echo_once()
        shadows = [n for n in os.listdir(runtime_dir)
                   if n.startswith("plugins-")]
        self.assertEqual(shadows, ["plugins-iocphost-test-%d" %
                                   host.process.pid])
        host.stop()


if __name__ == "__main__":
    unittest.main()
