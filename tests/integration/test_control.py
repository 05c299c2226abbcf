"""The control endpoint and the commands that use it (SPEC section 8).

  - `status --json` reports what the test just did: sessions, accepted,
    rejected (max_sessions), bytes in and out, per service; the text `status`
    has a line per service;
  - hygiene of the endpoint: a garbage request, an oversized one, a client
    that says nothing and one that trickles bytes each get an error or are
    dropped, and the host keeps answering the next client within seconds;
  - only the host's user may use it: the socket is 0600 in a 0700 folder,
    and even with the file permissions opened up, another uid is refused by
    the host itself;
  - `iocphost stop` with no host running exits 3 naming the socket; a second
    host with the same name and runtime_dir exits 3 saying another instance
    runs, and the first keeps serving; a socket left by a killed host does
    not block the next start;
  - SIGUSR1 and `iocphost reopen-logs` (the `reopen-logs` request) reopen
    log.file, so rotation by renaming works.
"""

import json
import os
import select
import signal
import socket
import stat
import threading
import time
import unittest

import harness
from harness import HostTestCase, Host

NOBODY = 65534


class ControlTest(HostTestCase):

    def output(self, result):
        return result.stdout + result.stderr

    def start_echo(self, label="control", **service_extra):
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", port, **service_extra)])
        host = Host(self, config, label).start()
        return host, port

    # --- status ------------------------------------------------------------

    def test_status_json_reports_sessions_counters_and_rejections(self):
        echo_port, limited_port = harness.free_port(), harness.free_port()
        limit = 3
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", echo_port),
             harness.server_service("limited", "echo", limited_port,
                                    max_sessions=limit)])
        host = Host(self, config, "status").start()

        def services():
            return {s["name"]: s for s in host.status_json()["services"]}

        # The harness's readiness probes (one per port) have gone.
        harness.wait_until(
            lambda: all(s["sessions"] == 0 for s in services().values()),
            10, "the readiness probes' sessions to end")

        sizes = [1, 1000, 4096, 65536, 100001]
        echo_socks = []
        for size in sizes:
            sock = harness.connect(echo_port)
            echo_socks.append(sock)
            data = os.urandom(size)
            self.assertEqual(harness.exchange(sock, data), data)
        limited_socks = []
        for _ in range(limit):
            sock = harness.connect(limited_port)
            limited_socks.append(sock)
            self.assertEqual(harness.exchange(sock, b"0123456789"),
                             b"0123456789")
        extra = 4
        for index in range(extra):
            # Beyond max_sessions: accepted by the kernel, closed at once by
            # the host, no echo.
            with harness.connect(limited_port) as sock:
                try:
                    sock.sendall(b"anyone?")
                    data = harness.read_until_eof(sock, timeout=10)
                except (ConnectionResetError, BrokenPipeError):
                    data = b""
                self.assertEqual(data, b"", "rejected connection %d got an "
                                 "answer" % index)

        expected = {
            "echo": {"sessions": len(sizes), "accepted": len(sizes) + 1,
                     "rejected": 0, "bytes_in": sum(sizes),
                     "bytes_out": sum(sizes), "max_sessions": 10000},
            "limited": {"sessions": limit, "accepted": limit + 1,
                        "rejected": extra, "bytes_in": 10 * limit,
                        "bytes_out": 10 * limit, "max_sessions": limit},
        }
        last = {}

        def matches():
            last["services"] = services()
            return all(last["services"][name][key] == value
                       for name, fields in expected.items()
                       for key, value in fields.items())

        try:
            harness.wait_until(matches, 10, "status --json to match")
        except harness.WaitTimeout:
            got = {name: {key: last["services"][name][key] for key in fields}
                   for name, fields in expected.items()}
            self.assertEqual(got, expected)

        status = host.status_json()
        if not harness.WINDOWS:  # under Wine: a Windows pid, not Popen's
            self.assertEqual(status["pid"], host.process.pid)
        self.assertEqual(status["name"], config["name"])
        self.assertEqual(status["state"], "running")
        self.assertEqual([p["name"] for p in status["plugins"]], ["echo"])
        self.assertEqual(status["cores"][0]["threads"], 2)

        # The command line says the same, as JSON and as text.
        result = harness.run_cli(["status", "--json", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertEqual(result.stderr, "")
        # Standard output is the JSON document alone (no protocol "ok").
        cli = {s["name"]: s for s in json.loads(result.stdout)["services"]}
        for name, fields in expected.items():
            for key, value in fields.items():
                self.assertEqual(cli[name][key], value, (name, key))
        result = harness.run_cli(["status", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, self.output(result))
        lines = result.stdout.splitlines()
        self.assertTrue(lines[0].startswith("iocphost "), result.stdout)
        for name, fields in expected.items():
            line = [l for l in lines if l.startswith("service %s " % name)]
            self.assertEqual(len(line), 1, result.stdout)
            self.assertIn("sessions %d/%d" % (fields["sessions"],
                                              fields["max_sessions"]), line[0])
            self.assertIn("rejected %d" % fields["rejected"], line[0])
            self.assertIn("bytes in %d out %d" % (fields["bytes_in"],
                                                  fields["bytes_out"]),
                          line[0])

        # Sessions that end are counted by reason.
        for sock in echo_socks + limited_socks:
            sock.close()
        harness.wait_until(
            lambda: all(s["sessions"] == 0 for s in services().values()),
            10, "every session to end")
        echo = services()["echo"]
        # Every one, the harness's readiness probe included, ended by its
        # client's FIN.
        self.assertEqual(sum(echo["disconnects"].values()), echo["accepted"])
        self.assertEqual(echo["disconnects"]["peer_closed"], echo["accepted"],
                         echo["disconnects"])
        host.stop()

    # --- hygiene -----------------------------------------------------------

    def assert_still_answers(self, host, within=5.0):
        started = time.monotonic()
        status = host.status_json(timeout=within)
        self.assertEqual(status["state"], "running")
        return time.monotonic() - started

    @harness.posix_only(
        "raw bytes to the Unix socket (the Windows pipe: "
        "test_windows_control.py)")
    def test_garbage_requests_get_an_error_and_the_host_still_answers(self):
        host, _ = self.start_echo()
        for request in (b"\x00\x01\xff\xfegarbage\n", b"frobnicate\n", b"\n",
                        b"STOP\n", b"stop now\n", b"status --jsonx\n",
                        b"\r\n", b"status\x00--json\n"):
            with self.subTest(request=request):
                reply = harness.control_exchange(host.control_path(),
                                                 request)
                self.assertTrue(reply.startswith(b"error:"), reply)
                self.assertTrue(host.running())
                self.assert_still_answers(host)
        # An error reply names the requests that exist.
        reply = host.control("frobnicate")
        self.assertIn("status", reply)
        host.stop()

    @harness.posix_only(
        "raw bytes to the Unix socket (the Windows pipe: "
        "test_windows_control.py)")
    def test_oversized_request_gets_an_error_and_the_host_still_answers(self):
        host, _ = self.start_echo()
        for data in (b"a" * 100000, b"status " * 20000 + b"\n",
                     b"b" * 257 + b"\n"):
            with self.subTest(size=len(data)):
                reply = harness.control_exchange(host.control_path(), data)
                self.assertTrue(reply.startswith(b"error:"), reply[:200])
                self.assertIn(b"too long", reply)
                self.assert_still_answers(host)
        # 256 bytes is not too long: it is merely unknown.
        reply = harness.control_exchange(host.control_path(),
                                         b"c" * 255 + b"\n")
        self.assertTrue(reply.startswith(b"error: unknown request"), reply)
        host.stop()

    @harness.posix_only("a silent client of the Unix socket (the Windows "
                        "pipe: test_windows_control.py)")
    def test_silent_client_does_not_block_the_next_one(self):
        host, _ = self.start_echo()
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(silent.close)
        silent.connect(host.control_path())
        took = self.assert_still_answers(host, within=5.0)
        self.assertLess(took, harness.scaled(5.0))
        # The silent one was dropped (EOF, no answer).
        silent.settimeout(harness.scaled(5))
        self.assertEqual(silent.recv(100), b"")
        host.stop()

    @harness.posix_only("a trickling client of the Unix socket (the "
                        "Windows pipe: test_windows_control.py)")
    def test_trickling_client_does_not_block_the_next_one_or_the_stop(self):
        # One byte every 0.3 s, never a newline: a per-read timeout alone
        # would let it hold the endpoint for minutes.
        host, _ = self.start_echo()
        trickler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(trickler.close)
        trickler.connect(host.control_path())
        done = threading.Event()
        self.addCleanup(done.set)

        def trickle():
            while not done.is_set():
                try:
                    trickler.send(b"s")
                except OSError:
                    return
                done.wait(0.3)

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        done.wait(0.1)  # let the trickler be served first
        took = self.assert_still_answers(host, within=8.0)
        self.assertLess(took, harness.scaled(5.0))
        # A stop while a client trickles is not held up by it either.
        trickler2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(trickler2.close)
        trickler2.connect(host.control_path())
        trickler2.send(b"s")
        started = time.monotonic()
        host.stop(timeout=10)
        self.assertLess(time.monotonic() - started, harness.scaled(5.0))

    @harness.posix_only("idle clients of the Unix socket")
    def test_idle_clients_do_not_delay_the_next_request(self):
        # Served one at a time, eight idle connections held the endpoint 2 s
        # each: a status behind them waited 16 s and timed out. Each client
        # now holds only its own connection.
        host, _ = self.start_echo()
        idle = []
        for _ in range(8):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(sock.close)
            sock.connect(host.control_path())
            idle.append(sock)
        took = self.assert_still_answers(host, within=5.0)
        self.assertLess(took, harness.scaled(1.0),
                        "status waited %.1f s behind 8 idle clients" % took)
        # The idle ones are still cut at their own deadline.
        for sock in idle:
            sock.settimeout(harness.scaled(5))
            self.assertEqual(sock.recv(100), b"")
        host.stop()

    # --- who may use it ----------------------------------------------------

    @harness.posix_only(
        "Unix file modes (the pipe's security descriptor grants the "
        "host's user only)")
    def test_socket_is_0600_in_a_0700_folder(self):
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", port)])
        host = Host(self, config, "modes")
        host.start()
        path = host.control_path()
        info = os.stat(path)
        self.assertTrue(stat.S_ISSOCK(info.st_mode))
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o600, oct(info.st_mode))
        self.assertEqual(info.st_uid, os.geteuid())
        # The host made runtime_dir: 0700.
        folder = os.stat(os.path.dirname(path))
        self.assertEqual(stat.S_IMODE(folder.st_mode), 0o700,
                         oct(folder.st_mode))
        host.stop()
        self.assertFalse(os.path.exists(path),
                         "the socket file outlived the host")

    @harness.posix_only("Unix file modes")
    def test_an_existing_runtime_dir_keeps_its_mode(self):
        """A runtime_dir others may read but not write is used as it is:
        the host never changes the mode of a folder it did not create
        (test_trust_runtime_dir.py: one others may write is refused)."""
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", port)])
        host = Host(self, config, "keep-mode")
        os.mkdir(os.path.join(host.dir, "run"), 0o755)
        os.chmod(os.path.join(host.dir, "run"), 0o755)
        host.start()
        path = host.control_path()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        folder = os.stat(os.path.dirname(path))
        self.assertEqual(stat.S_IMODE(folder.st_mode), 0o755,
                         oct(folder.st_mode))
        host.stop()

    def other_user_tries(self, path, request=b"stop\n"):
        """Forks a child that becomes uid/gid 65534 (nobody), connects to
        path and sends request; returns what happened as a dict. (A fork,
        not an exec: the interpreter may live where nobody may not read.)"""
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test
            status = 1
            try:
                os.close(reader)
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                out = {}
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(10 * harness.TIMEOUT_SCALE)
                try:
                    sock.connect(path)
                except OSError as error:
                    out["connect_error"] = type(error).__name__
                else:
                    try:
                        sock.sendall(request)
                    except OSError as error:
                        out["send_error"] = type(error).__name__
                    reply = b""
                    try:
                        while True:
                            chunk = sock.recv(4096)
                            if not chunk:
                                break
                            reply += chunk
                    except OSError as error:
                        out["recv_error"] = type(error).__name__
                    out["reply"] = reply.decode("utf-8", "replace")
                os.write(writer, json.dumps(out).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(writer)
        data = b""
        deadline = time.monotonic() + harness.scaled(20)
        while True:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([reader], [], [], max(0, left))
            if not readable:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(reader)
                self.fail("the other user's client hung")
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            data += chunk
        os.close(reader)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0,
                         "the other user's client failed")
        return json.loads(data)

    @harness.posix_only(
        "uids (the pipe's security descriptor grants the host's user "
        "only)")
    def test_another_user_is_refused(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run a client as another user "
                          "(uid 65534); CI runs these tests as root")
        host, port = self.start_echo()
        path = host.control_path()
        # As set up: the 0700 folder and the 0600 socket keep it out.
        outcome = self.other_user_tries(path)
        self.assertEqual(outcome.get("connect_error"), "PermissionError",
                         outcome)
        # With the file permissions opened up, the host's own check (the
        # peer's uid) still refuses it, and a "stop" from it does nothing.
        os.chmod(host.dir, 0o755)
        os.chmod(os.path.dirname(path), 0o755)
        os.chmod(path, 0o666)
        outcome = self.other_user_tries(path)
        self.assertNotIn("connect_error", outcome)
        self.assertTrue(outcome.get("reply", "").startswith(
            "error: permission denied"), outcome)
        self.assertTrue(host.running(), "another user's stop stopped it")
        self.assert_still_answers(host)
        self.assertIn("refused a control client of uid %d" % NOBODY,
                      host.log())
        with harness.connect(port) as sock:
            self.assertEqual(harness.exchange(sock, b"still"), b"still")
        host.stop()

    # --- the commands ------------------------------------------------------

    @harness.posix_only(
        "names the Unix socket (the pipe: test_windows_control.py)")
    def test_stop_without_a_running_host_exits_3_naming_the_socket(self):
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", port)])
        host = Host(self, config, "nohost")  # never started
        for command in (["stop"], ["status"], ["status", "--json"]):
            with self.subTest(command=command):
                result = harness.run_cli(command + ["-c", host.config_path])
                self.assertEqual(result.returncode, 3, self.output(result))
                self.assertIn(host.control_path(), result.stderr)

    @harness.posix_only(
        "the Unix socket file (the pipe: test_windows_control.py)")
    def test_second_instance_exits_3_and_the_first_keeps_serving(self):
        host, port = self.start_echo(label="first")
        # The same name and runtime_dir (the same folder), another port.
        second = dict(host.config)
        second["services"] = [harness.server_service(
            "echo", "echo", harness.free_port())]
        second_path = os.path.join(host.dir, "second.json")
        with open(second_path, "w") as f:
            json.dump(second, f)
        result = harness.run_cli(["run", "-c", second_path], timeout=20)
        self.assertEqual(result.returncode, 3, self.output(result))
        self.assertIn("another instance", self.output(result))
        self.assertIn(host.control_path(), self.output(result))
        # The first one is untouched: its socket, its status, its service.
        self.assertTrue(os.path.exists(host.control_path()))
        self.assertTrue(host.running())
        self.assertEqual(host.status_json()["pid"], host.process.pid)
        with harness.connect(port) as sock:
            self.assertEqual(harness.exchange(sock, b"first"), b"first")
        result = harness.run_cli(["stop", "-c", host.config_path], timeout=30)
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertEqual(host.process.wait(timeout=harness.scaled(10)), 0)

    @harness.posix_only(
        "a socket file left behind (a pipe dies with its process)")
    def test_socket_left_by_a_killed_host_does_not_block_the_next(self):
        host, port = self.start_echo(label="killed")
        host.process.kill()
        host.process.wait(timeout=harness.scaled(10))
        self.assertTrue(os.path.exists(host.control_path()),
                        "expected SIGKILL to leave the socket file")
        host.start()
        self.assertEqual(host.status_json()["pid"], host.process.pid)
        host.stop()

    def test_reload_with_nothing_changed_changes_nothing(self):
        host, port = self.start_echo()
        result = harness.run_cli(["reload", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("plugin echo: unchanged", self.output(result))
        self.assertTrue(host.running())
        self.assert_still_answers(host)
        host.stop()

    # --- log rotation ------------------------------------------------------

    @harness.posix_only("SIGUSR1, and renaming an open file")
    def test_sigusr1_and_reopen_logs_start_a_new_file_after_rename(self):
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("echo", "echo", port)])
        config["log"]["file"] = "host.log"  # relative to the config's folder
        host = Host(self, config, "logs")
        log_path = os.path.join(host.dir, "host.log")
        first, second = log_path + ".1", log_path + ".2"
        host.extra_log_paths += [first, second, log_path]
        host.start()

        read = harness.read_text

        harness.wait_until(lambda: " ready" in read(log_path), 10,
                           "the ready line in log.file")
        # Rotation 1: rename, then SIGUSR1.
        os.rename(log_path, first)
        host.process.send_signal(signal.SIGUSR1)
        harness.wait_until(lambda: "reopened" in read(log_path), 10,
                           "a new %s after SIGUSR1" % log_path)
        # Rotation 2: rename, then `iocphost reopen-logs` (the request).
        os.rename(log_path, second)
        result = harness.run_cli(["reopen-logs", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("log reopened", result.stdout)
        harness.wait_until(lambda: os.path.exists(log_path), 10,
                           "a new %s after reopen-logs" % log_path)
        host.stop()
        # Every line went to the file that was current when it was written.
        self.assertIn(" ready", read(first))
        self.assertNotIn("stopped", read(first))
        self.assertIn("reopened", read(second))
        self.assertNotIn("stopped", read(second))
        self.assertIn("stopped", read(log_path))
        self.assertNotIn(" ready", read(log_path))
        self.assertEqual(read(host.stderr_path).strip(), "",
                         "with log.file set, nothing goes to stderr")


if __name__ == "__main__":
    unittest.main()
