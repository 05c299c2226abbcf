"""The control endpoint of the Windows build (SPEC section 8): a named pipe,
\\\\.\\pipe\\iocphost-<name>-<hash of runtime_dir>, reached through
iocphost.exe's own commands (Linux's Python cannot open a Wine pipe). The
counterparts of test_control.py's Unix socket tests:

  - `stop` and `status` with no host running exit 3 naming the pipe;
  - a second host with the same name and runtime_dir exits 3 saying another
    instance runs (Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE: the host
    probes for the pipe first), and the first keeps serving and stops;
  - a killed host leaves nothing behind that blocks the next start (a pipe
    dies with its process).
"""

import json
import os
import signal
import unittest

import harness
from harness import HostTestCase, Host


@unittest.skipUnless(harness.WINDOWS, "Windows only: the named pipe "
                     "(Linux: the Unix socket, test_control.py)")
class WindowsControlTest(HostTestCase):

    def output(self, result):
        return "exit %d\n%s%s" % (result.returncode, result.stdout,
                                  result.stderr)

    def echo_config(self, port=None):
        return harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo",
                                    port or harness.free_port())])

    def test_commands_without_a_running_host_exit_3_naming_the_pipe(self):
        host = Host(self, self.echo_config(), "nohost")  # never started
        for command in (["stop"], ["status"], ["status", "--json"],
                        ["reload"]):
            with self.subTest(command=command):
                result = harness.run_cli(command + ["-c", host.config_path])
                self.assertEqual(result.returncode, 3, self.output(result))
                self.assertIn("\\\\.\\pipe\\iocphost-iocphost-test-",
                              result.stderr)

    def test_second_instance_exits_3_and_the_first_keeps_serving(self):
        port = harness.free_port()
        host = Host(self, self.echo_config(port), "first").start()
        second = dict(host.config)
        second["services"] = [harness.server_service(
            "echo", "echo", harness.free_port())]
        second_path = os.path.join(host.dir, "second.json")
        with open(second_path, "w") as f:
            json.dump(second, f)
        result = harness.run_cli(["run", "-c", second_path], timeout=20)
        self.assertEqual(result.returncode, 3, self.output(result))
        self.assertIn("another instance", result.stderr)
        self.assertIn("\\\\.\\pipe\\iocphost-", result.stderr)
        self.assertTrue(host.running())
        self.assertEqual(host.status_json()["state"], "running")
        with harness.connect(port) as sock:
            self.assertEqual(harness.exchange(sock, b"first"), b"first")
        result = harness.run_cli(["stop", "-c", host.config_path], timeout=30)
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("stopped", result.stdout)
        self.assertEqual(host.process.wait(timeout=harness.scaled(10)), 0)

    def test_a_killed_host_does_not_block_the_next_start(self):
        port = harness.free_port()
        host = Host(self, self.echo_config(port), "killed").start()
        host.process.send_signal(signal.SIGKILL)
        host.process.wait(timeout=harness.scaled(10))
        host.start()
        self.assertEqual(host.status_json()["state"], "running")
        with harness.connect(port) as sock:
            self.assertEqual(harness.exchange(sock, b"again"), b"again")
        host.stop()


if __name__ == "__main__":
    unittest.main()
