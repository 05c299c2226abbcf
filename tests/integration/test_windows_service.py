"""The Windows service (SPEC sections 8, 9 and 11), under Wine's service
manager: the Windows build only.

  - `iocphost service install -c FILE --name NAME` registers the service
    (command line "run -c <absolute config> --service --name NAME", restart
    on failure), `service start` starts it through the service manager and
    returns once it reports RUNNING, which it does only when every listener
    accepts; clients are served;
  - the service manager's param change reloads (hot deploy's trigger);
  - `service stop` asks the service manager to stop it: the service reports
    STOP_PENDING with a rising checkpoint while a session drains (a reader
    that stopped reading keeps it busy until drain_timeout_ms), then STOPPED
    with exit code 0; the log (no console: <runtime_dir>/iocphost.log) tells
    the story;
  - a service whose config has gone bad stops at once, and the service
    manager reports our exit code (1);
  - `service uninstall` removes it; `run --service` outside the service
    manager says what to do instead.

Each test class runs in a Wine prefix of its own (a copy of the build's,
system files hard-linked) with a persistent wineserver (`wineserver -p`), so
the service outlives the commands that start it and nothing is left behind
for the other tests: `wineserver -k` and the prefix is removed at the end.
"""

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
import unittest
import uuid

import harness

WINE = shutil.which("wine")
WINESERVER = shutil.which("wineserver")
SCM_PROBE = os.path.join(harness.BUILD_DIR, "tests", "windows", "scm_probe.exe")


def private_prefix(source, target):
    """A copy of the Wine prefix source: registry files copied, drive_c
    hard-linked (Wine writes its state to the registry files)."""
    os.makedirs(target)
    for entry in os.listdir(source):
        path = os.path.join(source, entry)
        if entry == "drive_c":
            subprocess.run(["cp", "-al", path, os.path.join(target, entry)],
                           check=True)
        elif entry != "wineserver":
            subprocess.run(["cp", "-a", path, target], check=True)


@unittest.skipUnless(harness.WINDOWS, "Windows only: the Windows service "
                     "(Linux runs under systemd: test_systemd_unit.py)")
@unittest.skipUnless(WINE and WINESERVER, "Wine is not installed")
class WindowsServiceTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        source = os.environ.get("WINEPREFIX") or os.path.expanduser("~/.wine")
        if not os.path.isfile(os.path.join(source, "system.reg")):
            raise unittest.SkipTest("no initialised Wine prefix at %s (run "
                                    "wineboot -i)" % source)
        cls.root = tempfile.mkdtemp(prefix="iocphost-winsvc-")
        cls.prefix = os.path.join(cls.root, "prefix")
        private_prefix(source, cls.prefix)
        cls.env = dict(os.environ, WINEPREFIX=cls.prefix, WINEDEBUG="-all")
        # Persistent: the service outlives the command that started it.
        subprocess.run([WINESERVER, "-p"], env=cls.env, check=True,
                       timeout=harness.scaled(30))
        # Wine's own processes (services.exe, ...) start with the first
        # command that needs them and inherit its output: start them now,
        # writing nowhere, or they would hold a later command's pipes open.
        subprocess.run([WINE, "sc", "query", "iocphost-warm-up"], env=cls.env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=harness.scaled(60))

    @classmethod
    def tearDownClass(cls):
        subprocess.run([WINESERVER, "-k"], env=cls.env,
                       timeout=harness.scaled(30))
        subprocess.run([WINESERVER, "-w"], env=cls.env,
                       timeout=harness.scaled(30))
        shutil.rmtree(cls.root, ignore_errors=True)

    # --- helpers -----------------------------------------------------------

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="svc-", dir=self.root)
        self.name = "iocphost-test-" + uuid.uuid4().hex[:8]
        self.installed = False
        self.addCleanup(self.cleanup)

    def cleanup(self):
        if self.installed:
            self.cli("service", "uninstall", "-c", self.config_path,
                     "--name", self.name)

    def run_command(self, argv, timeout=60):
        return subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True,
                              errors="replace",
                              timeout=harness.scaled(timeout))

    def cli(self, *args, timeout=60):
        # Ours: an exit 1 that says nothing is Wine's start failure, run
        # again (harness.run_program).
        return harness.run_program(harness.host_command() + list(args),
                                   timeout, env=self.env)

    def sc(self, *args):
        return self.run_command([WINE, "sc"] + list(args))

    def probe(self, *args):
        return harness.run_program([WINE, SCM_PROBE] + list(args), 60,
                                   env=self.env)

    def output(self, result):
        return "exit %d\n%s%s" % (result.returncode, result.stdout,
                                  result.stderr)

    def write_config(self, plugins, services, drain_timeout_ms=3000):
        config = harness.make_config(plugins, services,
                                     drain_timeout_ms=drain_timeout_ms)
        config["name"] = self.name
        self.config = config
        self.config_path = os.path.join(self.dir, "config.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        # For `status`: the same name and runtime_dir, nothing else to check.
        self.client_path = os.path.join(self.dir, "client.json")
        with open(self.client_path, "w") as f:
            json.dump({"name": self.name}, f)

    def log(self):
        try:
            with open(os.path.join(self.dir, "run", "iocphost.log"),
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def assert_log(self, text, timeout=10):
        try:
            harness.wait_until(lambda: text in self.log(), timeout,
                               "%r in the service's log" % text)
        except harness.WaitTimeout:
            self.fail("%r not in the service's log:\n%s" % (text, self.log()))

    def install(self):
        result = self.cli("service", "install", "-c", self.config_path,
                          "--name", self.name)
        self.assertEqual(result.returncode, 0, self.output(result))
        self.installed = True
        return result

    def status_json(self):
        result = self.cli("status", "--json", "-c", self.client_path)
        self.assertEqual(result.returncode, 0, self.output(result))
        return json.loads(result.stdout)

    # --- tests -------------------------------------------------------------

    def test_install_start_serve_reload_stop_draining_and_uninstall(self):
        echo_port, push_port = harness.free_port(), harness.free_port()
        self.write_config(
            {"echo": {}, "pusher": {"max_in_flight": 65536}},
            [harness.server_service("echo", "echo", echo_port),
             harness.server_service("push", "pusher", push_port)])

        result = self.install()
        self.assertIn("installed", result.stdout)
        self.assertIn("--service", result.stdout)
        self.assertIn(os.path.basename(self.config_path), result.stdout)
        self.assertNotIn("warning", result.stderr)
        recovery = self.probe("recovery", self.name)
        if recovery.returncode == 0:
            self.assertIn("restart", recovery.stdout)
        else:  # Wine's services.exe accepts failure actions but keeps none
            self.assertIn("error 124", recovery.stderr, self.output(recovery))

        result = self.cli("service", "start", "-c", self.config_path,
                          "--name", self.name)
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("running", result.stdout)
        query = self.sc("query", self.name)
        self.assertIn("RUNNING", query.stdout, self.output(query))
        # RUNNING came after every listener accepted: no wait needed here.
        with harness.connect(echo_port) as sock:
            self.assertEqual(harness.exchange(sock, b"served by a service"),
                             b"served by a service")

        # The service manager's param change is a reload trigger.
        result = self.probe("paramchange", self.name)
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assert_log("the service manager (param change): reload")

        # A reader that stops reading keeps its session busy at the stop.
        reader = harness.connect(push_port, timeout=30)
        self.addCleanup(reader.close)
        header = b""
        while len(header) < 8:
            chunk = reader.recv(8 - len(header))
            self.assertTrue(chunk, "EOF before the session id")
            header += chunk
        last = {"out": -1, "since": time.monotonic()}

        def stalled():
            services = {s["name"]: s for s in self.status_json()["services"]}
            out = services["push"]["bytes_out"]
            now = time.monotonic()
            if out != last["out"]:
                last["out"], last["since"] = out, now
            # 1.5 s: under load one status round trip under Wine can take
            # half a second, and the pusher's own ticks can pause as long.
            return now - last["since"] >= 1.5
        harness.wait_until(stalled, 30, "the pushed stream to stall")

        watch = subprocess.Popen([WINE, SCM_PROBE, "watch", self.name,
                                  str(int(harness.scaled(60) * 1000))],
                                 env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        self.addCleanup(watch.kill)
        ready, _, _ = select.select([watch.stdout], [], [],
                                    harness.scaled(20))
        self.assertTrue(ready, "scm_probe watch printed nothing")
        first = watch.stdout.readline()
        self.assertTrue(first.startswith("RUNNING"), first)
        started = time.monotonic()
        result = self.cli("service", "stop", "-c", self.config_path,
                          "--name", self.name)
        elapsed = time.monotonic() - started
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("stopped", result.stdout)
        out, err = watch.communicate(timeout=harness.scaled(30))
        out = first + out
        self.assertEqual(watch.returncode, 0, out + err)
        states = [line.split() for line in out.splitlines()]
        self.assertEqual(states[0][0], "RUNNING", out)
        self.assertEqual(states[-1][0], "STOPPED", out)
        self.assertIn("win32=0", states[-1], out)
        pending = [int(s[1].split("=")[1]) for s in states
                   if s[0] == "STOP_PENDING"]
        self.assertGreaterEqual(len(pending), 3, out)
        self.assertEqual(pending, sorted(set(pending)),
                         "the checkpoint must rise: " + out)
        hints = [int(s[2].split("=")[1]) for s in states
                 if s[0] == "STOP_PENDING"]
        self.assertTrue(all(h > 0 for h in hints), out)
        # The drain lasted about drain_timeout_ms (3 s), not more.
        self.assertGreater(elapsed, 2.5, out)
        self.assertLess(elapsed, harness.scaled(20), out)
        self.assert_log("the service manager asked to stop: stopping "
                        "gracefully")
        self.assert_log("drain_timeout_ms 3000 passed")
        self.assert_log("[host] stopped")
        query = self.sc("query", self.name)
        self.assertIn("STOPPED", query.stdout, self.output(query))

        result = self.cli("service", "uninstall", "-c", self.config_path,
                          "--name", self.name)
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertIn("uninstalled", result.stdout)
        self.installed = False
        query = self.sc("query", self.name)
        self.assertNotEqual(query.returncode, 0, self.output(query))
        self.assertNotIn("RUNNING", query.stdout)

    def test_a_service_stop_flushes_every_session_then_fin(self):
        """SPEC section 9 through the service manager: 100 clients read a
        known stream; the service is stopped mid-stream; each gets every
        byte the plugin's sends accepted, then a FIN, and each session ends
        with host_stopping."""
        import test_stop  # the stream readers and their checks
        port = harness.free_port()
        self.write_config(
            {"pusher": {"interval_ms": 1, "chunk_bytes": 2048,
                        "max_in_flight": 65536}},
            [harness.server_service("push", "pusher", port, "raw",
                                    max_sessions=1000)],
            drain_timeout_ms=test_stop.DRAIN_TIMEOUT_MS)
        self.install()
        result = self.cli("service", "start", "-c", self.config_path,
                          "--name", self.name)
        self.assertEqual(result.returncode, 0, self.output(result))
        deadline = time.monotonic() + harness.scaled(90)
        readers = [test_stop.StreamReader(port, deadline)
                   for _ in range(test_stop.CLIENTS)]
        for reader in readers:
            reader.start()
        for index, reader in enumerate(readers):
            self.assertTrue(reader.has_data.wait(harness.scaled(30)),
                            "client %d got no data" % index)
        result = self.cli("service", "stop", "-c", self.config_path,
                          "--name", self.name,
                          timeout=test_stop.DRAIN_TIMEOUT_MS / 1000 + 60)
        self.assertEqual(result.returncode, 0, self.output(result))
        for reader in readers:
            reader.join(harness.scaled(30))
        log = self.log()
        logged = {int(m.group(1)): (int(m.group(2)), m.group(3))
                  for m in test_stop.SESSION_LINE.finditer(log)}
        problems = []
        for index, reader in enumerate(readers):
            if reader.end != "fin":
                problems.append("client %d ended with %s after %d bytes" %
                                (index, reader.end, reader.received))
                continue
            accepted, reason = logged.get(reader.session_id, (None, None))
            if reason != "host_stopping" or accepted != reader.received:
                problems.append("client %d (session %s): accepted %s, "
                                "received %d, reason %s" %
                                (index, reader.session_id, accepted,
                                 reader.received, reason))
        self.assertEqual(problems, [], "\n".join(problems[:20]))
        self.assertNotIn("drain_timeout_ms", log)
        query = self.sc("query", self.name)
        self.assertIn("STOPPED", query.stdout, self.output(query))

    def test_a_service_whose_config_went_bad_stops_with_exit_code_1(self):
        self.write_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", harness.free_port())])
        self.install()
        broken = dict(self.config, max_sesions=1)  # a typo: an unknown key
        with open(self.config_path, "w") as f:
            json.dump(broken, f)
        result = self.cli("service", "start", "-c", self.client_path,
                          "--name", self.name)
        self.assertEqual(result.returncode, 3, self.output(result))
        self.assertIn("exit code 1", result.stderr)
        query = self.sc("query", self.name)
        self.assertIn("STOPPED", query.stdout, self.output(query))
        self.assertRegex(query.stdout, r"SERVICE_EXIT_CODE\s*:\s*1\b")

    def test_an_existing_name_is_refused_and_run_service_outside_says_how(
            self):
        self.write_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", harness.free_port())])
        self.install()
        result = self.cli("service", "install", "-c", self.config_path,
                          "--name", self.name)
        self.assertEqual(result.returncode, 3, self.output(result))
        self.assertIn("exists already", result.stderr)
        result = self.cli("run", "-c", self.config_path, "--service",
                          "--name", self.name)
        self.assertEqual(result.returncode, 3, self.output(result))
        self.assertIn("--service is for the service manager", result.stderr)
        result = self.cli("service", "stop", "-c", self.config_path,
                          "--name", "iocphost-no-such-service")
        self.assertEqual(result.returncode, 3, self.output(result))
        self.assertIn("no service named", result.stderr)


if __name__ == "__main__":
    unittest.main()
