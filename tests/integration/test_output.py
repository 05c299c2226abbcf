"""Output that tools can read (SPEC section 8, issue 13).

  - `iocphost status --json` prints exactly one JSON document: Python's
    json and `jq` accept standard output as it is, byte for byte, on Linux
    and under Wine (where the console's line ends are CRLF);
  - every command that asks the running host (status, reload, reload
    --dry-run, reopen-logs, stop) prints its answer only: never the control
    protocol's "ok" line, nothing on standard error, exit 0; an error reply
    prints nothing on standard output, the reason on standard error, exit 1;
    `check` beside a running instance shows what a reload would do without
    the protocol's line;
  - a stop through the control endpoint logs that trigger once, not also a
    SIGTERM it raised itself;
  - paths in the log and in status are normalised: a plugin configured as
    ".../plugins/echo/../echo/echo.so" is shown as ".../plugins/echo/echo.so".
"""

import json
import os
import re
import shutil
import subprocess
import unittest

import harness
from harness import HostTestCase, Host

# The control protocol's status line, as it would look on either platform.
PROTOCOL_LINE = re.compile(r"^(ok|error:.*)\r?$", re.MULTILINE)


class OutputTest(HostTestCase):

    def start_echo(self, **config_changes):
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", harness.free_port())])
        config.update(config_changes)
        host = Host(self, config, "output")
        self.track_host(host)
        return host.start()

    def raw_cli(self, args, timeout=20.0):
        """The command's standard output as bytes, untranslated (under Wine
        the console's CRLF line ends arrive as they are)."""
        return harness.run_host_command(args, timeout, text=False)

    def assert_answer_only(self, result, what):
        out = result.stdout.decode("utf-8", "replace")
        err = result.stderr.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, "%s: %s%s" % (what, out, err))
        self.assertEqual(err, "", "%s wrote to stderr" % what)
        self.assertIsNone(PROTOCOL_LINE.search(out),
                          "%s printed a protocol line: %r" % (what, out))
        return out

    def test_status_json_is_one_json_document_for_json_and_jq(self):
        host = self.start_echo()
        result = self.raw_cli(["status", "--json", "-c", host.config_path])
        out = self.assert_answer_only(result, "status --json")
        status = json.loads(result.stdout)  # the bytes, as a pipe has them
        self.assertEqual(status["state"], "running")
        self.assertEqual([s["name"] for s in status["services"]], ["echo"])
        jq = shutil.which("jq")
        if jq is None:
            self.fail("jq is not installed (scripts/deps.sh installs it)")
        piped = subprocess.run([jq, "-e", "."], input=result.stdout,
                               capture_output=True,
                               timeout=harness.scaled(10))
        self.assertEqual(piped.returncode, 0,
                         "jq refused: %s\n%r" % (piped.stderr, out[:300]))
        self.assertEqual(json.loads(piped.stdout), status)
        host.stop()

    def test_every_control_command_prints_its_answer_only(self):
        host = self.start_echo()
        for args, expect in ((["status"], "service echo "),
                             (["reload"], "plugin echo: unchanged"),
                             (["reload", "--dry-run"],
                              "plugin echo: unchanged"),
                             (["reopen-logs"], "log reopened")):
            with self.subTest(command=" ".join(args)):
                out = self.assert_answer_only(
                    self.raw_cli(args + ["-c", host.config_path]),
                    " ".join(args))
                self.assertIn(expect, out)

        # `check` beside the running instance: its own verdict, then what a
        # reload would do, without the protocol's "ok" in between.
        out = self.assert_answer_only(
            self.raw_cli(["check", "-c", host.config_path]), "check")
        self.assertEqual(
            out.replace("\r\n", "\n").splitlines()[1:],
            ["a reload of the running instance would answer:",
             "plugin echo: unchanged"])

        result = self.raw_cli(["stop", "-c", host.config_path], timeout=30)
        out = self.assert_answer_only(result, "stop")
        self.assertEqual(out.replace("\r\n", "\n"), "stopping\nstopped\n")
        self.assertEqual(host.process.wait(timeout=harness.scaled(10)), 0)

    def test_an_error_reply_goes_to_stderr_with_exit_1(self):
        host = self.start_echo()
        # A config that no longer validates: the host refuses the reload.
        with open(host.config_path) as f:
            config = json.load(f)
        config["services"][0]["max_sesions"] = 5
        with open(host.config_path, "w") as f:
            json.dump(config, f)
        for args in (["reload"], ["reload", "--dry-run"]):
            with self.subTest(command=" ".join(args)):
                result = harness.run_cli(args + ["-c", host.config_path])
                self.assertEqual(result.returncode, 1,
                                 result.stdout + result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertTrue(result.stderr.startswith(
                    "iocphost: reload: the config is invalid; nothing "
                    "changed: "), result.stderr)
                self.assertIn("max_sesions", result.stderr)
                self.assertNotIn("error: ", result.stderr)
        self.assertEqual(host.status_json()["state"], "running")
        host.process.send_signal(harness.STOP_SIGNAL)
        self.assertEqual(host.process.wait(timeout=harness.scaled(30)), 0)

    def test_a_stop_through_the_endpoint_logs_its_trigger_once(self):
        host = self.start_echo()
        result = harness.run_cli(["stop", "-c", host.config_path], timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(host.process.wait(timeout=harness.scaled(10)), 0)
        log = host.log()
        stopping = [line for line in log.splitlines()
                    if "stopping gracefully" in line]
        self.assertEqual(len(stopping), 1, log)
        self.assertIn("stop requested through the control endpoint",
                      stopping[0])
        self.assertNotIn("SIGTERM", log)

    def test_paths_in_the_log_and_status_are_normalised(self):
        built = harness.plugin_path("echo")
        folder, file = os.path.split(built)
        # ".../plugins/echo/../echo/echo.so": the same file, with noise.
        noisy = os.path.join(folder, "..", os.path.basename(folder), ".",
                             file)
        host = self.start_echo()
        host.stop()
        with open(host.config_path) as f:
            config = json.load(f)
        config["plugins"][0]["path"] = noisy
        with open(host.config_path, "w") as f:
            json.dump(config, f)
        host.start()
        shown = [p["path"] for p in host.status_json()["plugins"]]
        loaded = re.findall(r"plugin echo \S+ \(generation 1\) loaded from "
                            r"(.*?)\r?$", host.log(), re.MULTILINE)
        self.assertEqual(len(loaded), 2, host.log())  # both starts
        for path in shown + loaded:
            self.assertNotRegex(path, r"(^|[/\\])\.\.?([/\\]|$)", path)
            self.assertTrue(path.endswith(file), path)
        if not harness.WINDOWS:
            self.assertEqual(shown, [built])
            self.assertEqual(loaded[-1], built)
        host.stop()


if __name__ == "__main__":
    unittest.main()
