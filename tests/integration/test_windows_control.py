"""The control endpoint of the Windows build (SPEC section 8): a named pipe,
\\\\.\\pipe\\iocphost-<name>-<hash of runtime_dir>, reached through
iocphost.exe's own commands (Linux's Python cannot open a Wine pipe). The
counterparts of test_control.py's Unix socket tests:

  - `stop` and `status` with no host running exit 3 naming the pipe;
  - a second host with the same name and runtime_dir exits 3 saying another
    instance runs (Wine ignores FILE_FLAG_FIRST_PIPE_INSTANCE: the host
    probes for the pipe first), and the first keeps serving and stops;
  - a killed host leaves nothing behind that blocks the next start (a pipe
    dies with its process);
  - log rotation: a Windows program (cmd's move) renames log.file while the
    host has it open, and `iocphost reopen-logs` starts a new file; every
    line lands in the file that was current when it was written.
"""

import json
import os
import signal
import subprocess
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


    def test_a_renamed_log_file_is_reopened_by_reopen_logs(self):
        config = self.echo_config()
        config["log"]["file"] = "host.log"  # relative to the config's folder
        host = Host(self, config, "logs")
        log_path = os.path.join(host.dir, "host.log")
        rotated = log_path + ".1"
        host.extra_log_paths += [rotated, log_path]
        host.start()

        read = harness.read_text

        harness.wait_until(lambda: " ready" in read(log_path), 10,
                           "the ready line in log.file")
        # The rename is made by a Windows program, so Wine applies Windows'
        # sharing rules: it fails unless the host opened the file with
        # FILE_SHARE_DELETE.
        wine = harness.host_command()[:-1] or ["wine"]
        move = subprocess.run(
            wine + ["cmd", "/c", "move", "/y", "host.log", "host.log.1"],
            cwd=host.dir, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, errors="replace", timeout=harness.scaled(30))
        self.assertTrue(os.path.exists(rotated) and
                        not os.path.exists(log_path),
                        "cmd's move did not rename the open log file: exit "
                        "%d %s%s" % (move.returncode, move.stdout,
                                     move.stderr))
        result = harness.run_cli(["reopen-logs", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("log reopened", result.stdout)
        harness.wait_until(lambda: "reopened" in read(log_path), 10,
                           "a new %s after reopen-logs" % log_path)
        host.stop()
        self.assertIn(" ready", read(rotated))
        self.assertNotIn("stopped", read(rotated))
        self.assertIn("stopped", read(log_path))
        self.assertNotIn(" ready", read(log_path))


if __name__ == "__main__":
    unittest.main()
