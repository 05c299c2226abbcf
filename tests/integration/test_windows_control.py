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
    line lands in the file that was current when it was written;
  - hygiene of the pipe, as test_control.py's of the socket, through
    tests/windows/pipe_client.exe: a garbage request (a NUL included) or an
    oversized one gets an error; a client that says nothing, one that
    trickles a byte at a time and one that asks for a reply larger than the
    pipe's buffer and never reads are dropped within the request and reply
    deadlines, while the next client is answered and a stop is not held up.
"""

import json
import os
import re
import select
import signal
import subprocess
import time
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
        # Wine's server holds a killed process's sockets a moment longer:
        # until they close, the next start's readiness probe would be
        # answered by the dead host's listener, before the new one is up.
        harness.wait_until(lambda: not harness.port_accepts(port), 10,
                           "the killed host's listener to close")
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



# The endpoint's deadlines (control_win.c): the request must arrive within
# CLIENT_TIMEOUT_MS, the reply be taken within REPLY_TIMEOUT_MS.
CLIENT_TIMEOUT = 2.0
REPLY_TIMEOUT = 2.0


def pipe_client_command(*args):
    tool = os.path.join(harness.BUILD_DIR, "tests", "windows",
                        "pipe_client.exe")
    wine = harness.host_command()[:-1] or ["wine"]
    return wine + [tool] + [str(a) for a in args]


@unittest.skipUnless(harness.WINDOWS, "Windows only: the named pipe "
                     "(Linux: the Unix socket, test_control.py)")
class WindowsControlHygieneTest(HostTestCase):
    """test_control.py's garbage, oversized, silent and trickling clients,
    against the pipe; and a client that never reads its reply."""

    def start_echo(self, services=1):
        ports = [harness.free_port() for _ in range(services)]
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo%d" % i, "echo", port)
             for i, port in enumerate(ports)])
        host = Host(self, config, "hygiene")
        # The pipe's name, as the host's own client computes it: asked
        # before the host runs, the command names it in its error.
        result = harness.run_cli(["status", "-c", host.config_path])
        self.assertEqual(result.returncode, 3, result.stderr)
        found = re.search(r"(\\\\\.\\pipe\\[^\s(]+)", result.stderr)
        self.assertIsNotNone(found, result.stderr)
        self.pipe = found.group(1)
        return host.start()

    def exchange(self, *args):
        """Runs pipe_client to its end; returns its stdout (bytes)."""
        result = harness.run_program(pipe_client_command(*args), timeout=30,
                                     text=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def start_client(self, *args):
        """Starts pipe_client and returns once it holds the pipe."""
        client = subprocess.Popen(
            pipe_client_command(*args), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(self.end_client, client)
        deadline = time.monotonic() + harness.scaled(20)
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([client.stderr], [], [],
                                           max(0, left))
            self.assertTrue(readable, "pipe_client did not connect")
            byte = os.read(client.stderr.fileno(), 1)
            self.assertTrue(byte, "pipe_client ended: %r" % line)
            line += byte
        self.assertEqual(line, b"connected\n")
        return client

    def end_client(self, client):
        if client.poll() is None:
            client.kill()
        client.communicate(timeout=harness.scaled(10))

    def client_result(self, client, timeout=30):
        out, _ = client.communicate(timeout=harness.scaled(timeout))
        return out.decode("utf-8", "replace")

    def assert_dropped_within(self, text, seconds):
        found = re.match(r"dropped after (\d+) ms", text)
        self.assertIsNotNone(found, text)
        self.assertLessEqual(int(found.group(1)) / 1000.0,
                             harness.scaled(seconds), text)

    def assert_still_answers(self, host, within=5.0):
        started = time.monotonic()
        self.assertEqual(host.status_json(timeout=within)["state"], "running")
        took = time.monotonic() - started
        self.assertLess(took, harness.scaled(within))
        return took

    def test_garbage_requests_get_an_error_and_the_host_still_answers(self):
        host = self.start_echo()
        for request in (r"\x00\x01\xff\xfegarbage\n", r"frobnicate\n",
                        r"\n", r"STOP\n", r"stop now\n",
                        r"status --jsonx\n", r"\r\n", r"status\0--json\n",
                        r"status\0junk\n",
                        r"stop\0\n"):  # last: before the fix, it stopped
            with self.subTest(request=request):
                reply = self.exchange("send", self.pipe, request)
                self.assertTrue(reply.startswith(b"error:"), reply[:200])
                self.assertTrue(host.running())
                self.assert_still_answers(host)
        reply = self.exchange("send", self.pipe, r"status\0junk\n")
        self.assertIn(b"NUL", reply)
        host.stop()

    def test_oversized_request_gets_an_error_and_the_host_still_answers(self):
        host = self.start_echo()
        for args in (("repeat", self.pipe, 100000, "a"),
                     ("repeat", self.pipe, 20000, "status "),
                     ("send", self.pipe, "b" * 257 + r"\n")):
            with self.subTest(args=args[:1] + args[2:3]):
                reply = self.exchange(*args)
                self.assertTrue(reply.startswith(b"error:"), reply[:200])
                self.assertIn(b"too long", reply)
                self.assert_still_answers(host)
        # 256 bytes is not too long: it is merely unknown.
        reply = self.exchange("send", self.pipe, "c" * 255 + r"\n")
        self.assertTrue(reply.startswith(b"error: unknown request"), reply)
        host.stop()

    def test_silent_client_does_not_block_the_next_one(self):
        host = self.start_echo()
        silent = self.start_client("silent", self.pipe, 20000)
        self.assert_still_answers(host)
        self.assert_dropped_within(self.client_result(silent),
                                   CLIENT_TIMEOUT + 2)
        host.stop()

    def test_trickling_client_is_cut_by_the_request_deadline(self):
        # One byte every 0.3 s, never a newline: a deadline per read alone
        # would let it hold the endpoint for over a minute.
        host = self.start_echo()
        trickler = self.start_client("trickle", self.pipe, 300, "s")
        self.assert_still_answers(host)
        self.assert_dropped_within(self.client_result(trickler),
                                   CLIENT_TIMEOUT + 2)
        # A stop while a client trickles is not held up by it either.
        self.start_client("trickle", self.pipe, 300, "s")
        started = time.monotonic()
        host.stop(timeout=20)
        self.assertLess(time.monotonic() - started, harness.scaled(8))

    def test_a_client_that_never_reads_its_reply_does_not_hold_the_pipe(self):
        # Enough services that `status --json` outgrows the pipe's 4 KiB
        # buffer, so the reply's write waits for a reader that never reads.
        host = self.start_echo(services=24)
        reply = self.exchange("send", self.pipe, r"status --json\n")
        self.assertGreater(len(reply), 3 * 4096, "the reply fits the buffer")
        self.start_client("noread", self.pipe, 60000, r"status --json\n")
        # The reply's deadline passes; the next client is answered.
        self.assert_still_answers(host, within=REPLY_TIMEOUT + 5)
        self.assert_still_answers(host)
        # And a stop is not held up by another one that never reads.
        self.start_client("noread", self.pipe, 60000, r"status --json\n")
        started = time.monotonic()
        host.stop(timeout=30)
        self.assertLess(time.monotonic() - started,
                        harness.scaled(REPLY_TIMEOUT + 6))


if __name__ == "__main__":
    unittest.main()
