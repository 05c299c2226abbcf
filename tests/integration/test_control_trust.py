"""The control endpoint's trust (Linux): the operator's command believes an
answer only from a server of its own uid, and two instances of one config
never both hold the endpoint, however they race."""

import os
import subprocess
import sys
import tempfile
import shutil
import unittest

import harness
from harness import Host, HostTestCase

OTHER_UID = 65534  # nobody

# A squatter: binds the socket path, becomes another user, then listens (a
# listener's credentials are those it had at listen(2)) and answers every
# request as a host would.
SQUATTER = r"""
import os, socket, sys
path = sys.argv[1]
uid = int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        c.recv(512)
        c.sendall(b"ok\nstopped\n")
    except OSError:
        pass
    c.close()
"""


@harness.posix_only("the Unix control socket (Windows: the named pipe)")
class ControlTrustTest(HostTestCase):

    def config(self, port, runtime_dir):
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", port)])
        config["runtime_dir"] = runtime_dir
        return config

    @unittest.skipUnless(os.geteuid() == 0, "needs root to play another uid")
    def test_stop_refuses_an_answer_from_another_users_endpoint(self):
        runtime_dir = tempfile.mkdtemp(prefix="iocphost-squat-")
        self.addCleanup(shutil.rmtree, runtime_dir, True)
        host = Host(self, self.config(harness.free_port(), runtime_dir),
                    "squatted")
        squatter = subprocess.Popen(
            [sys.executable, "-c", SQUATTER, host.control_path(),
             str(OTHER_UID)], stdout=subprocess.PIPE, text=True)
        self.addCleanup(squatter.wait)
        self.addCleanup(squatter.kill)
        self.assertEqual(squatter.stdout.readline().strip(), "listening")
        for command in ("stop", "status"):
            result = harness.run_cli([command, "-c", host.config_path])
            self.assertEqual(result.returncode, 3,
                             command + ": " + result.stdout + result.stderr)
            self.assertEqual(result.stdout, "")
            self.assertIn("uid %d" % OTHER_UID, result.stderr)
            self.assertIn(host.control_path(), result.stderr)

    def test_a_second_instance_is_refused_while_the_first_runs(self):
        """Even when the first one's socket file was removed (a cleaner of
        /run, a careless operator): the lock decides, not the socket."""
        runtime_dir = tempfile.mkdtemp(prefix="iocphost-lock-")
        self.addCleanup(shutil.rmtree, runtime_dir, True)
        first = Host(self, self.config(harness.free_port(), runtime_dir),
                     "first").start()
        os.unlink(first.control_path())
        second = Host(self, self.config(harness.free_port(), runtime_dir),
                      "second")
        second.start(wait_ports=False)
        harness.wait_until(lambda: second.process.poll() is not None, 10,
                           "the second instance to refuse and exit")
        self.assertEqual(second.process.returncode, 3, second.log())
        self.assertIn("another instance", second.log())
        self.assertIn(".lock", second.log())
        self.assertTrue(first.running())
        first.stop()

    def test_instances_started_at_once_leave_exactly_one_serving(self):
        runtime_dir = tempfile.mkdtemp(prefix="iocphost-race-")
        self.addCleanup(shutil.rmtree, runtime_dir, True)
        for attempt in range(20):
            hosts = [Host(self, self.config(harness.free_port(), runtime_dir),
                          "racer%d.%d" % (attempt, i)) for i in range(8)]
            for host in hosts:
                host.start(wait_ports=False)

            def settled():
                return all(h.process.poll() is not None or
                           harness.port_accepts(h.ports()[0]) for h in hosts)

            harness.wait_until(settled, 30, "every racer to serve or exit")
            running = [h for h in hosts if h.running()]
            self.assertEqual(len(running), 1, "attempt %d: %s serve" % (
                attempt, [h.label for h in running]))
            for host in hosts:
                if host is not running[0]:
                    self.assertEqual(host.process.returncode, 3, host.log())
            # The survivor owns the endpoint: stop reaches it.
            result = harness.run_cli(["stop", "-c", running[0].config_path],
                                     timeout=60)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(running[0].process.wait(
                timeout=harness.scaled(30)), 0)


if __name__ == "__main__":
    unittest.main()
