"""The command line (SPEC section 8): exit codes and messages."""

import socket
import json
import os
import shutil
import tempfile
import unittest

import harness
from harness import HostTestCase, Host


class CliTest(HostTestCase):

    def output(self, result):
        return result.stdout + result.stderr

    def test_version_prints_a_version_and_exits_0(self):
        result = harness.run_cli(["--version"])
        self.assertEqual(result.returncode, 0, self.output(result))
        self.assertRegex(self.output(result), r"\d+\.\d+\.\d+")

    def test_help_exits_0_and_names_the_commands(self):
        result = harness.run_cli(["--help"])
        self.assertEqual(result.returncode, 0, self.output(result))
        for command in ("run", "check"):
            self.assertIn(command, self.output(result))

    def test_unknown_command_is_a_usage_error(self):
        result = harness.run_cli(["frobnicate"])
        self.assertEqual(result.returncode, 2, self.output(result))

    @unittest.skipIf(harness.PLUGIN_SUFFIX == ".dll",
                     "Windows services exist on Windows")
    def test_windows_service_commands_are_refused_elsewhere(self):
        for args in (["service", "install"], ["service", "start"]):
            with self.subTest(command=" ".join(args)):
                result = harness.run_cli(args)
                self.assertEqual(result.returncode, 2, self.output(result))
                self.assertIn("not available", self.output(result).lower())
                self.assertIn("systemd", self.output(result).lower())

    def test_control_commands_without_a_running_host_exit_3(self):
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", harness.free_port())])
        folder = tempfile.mkdtemp(prefix="iocphost-cli-")
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        for args in (["status"], ["status", "--json"], ["stop"]):
            with self.subTest(command=" ".join(args)):
                result = harness.run_cli(args + ["-c", path])
                self.assertEqual(result.returncode, 3, self.output(result))
                self.assertIn("no running instance",
                              self.output(result).lower())

    def test_missing_config_file_is_exit_1_naming_it(self):
        path = "/nonexistent/iocphost-test/none.json"
        for command in ("check", "run"):
            with self.subTest(command=command):
                result = harness.run_cli([command, "-c", path])
                self.assertEqual(result.returncode, 1, self.output(result))
                self.assertIn("none.json", self.output(result))

    def test_address_in_use_makes_run_exit_3_naming_the_address(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.bind((harness.LOOPBACK, 0))
            squatter.listen(1)
            port = squatter.getsockname()[1]
            config = harness.make_config(
                {"echo": {}}, [harness.server_service("echo", "echo", port)])
            host = Host(self, config, "in-use")
            result = harness.run_cli(["run", "-c", host.config_path])
            self.assertEqual(result.returncode, 3, self.output(result))
            self.assertIn("127.0.0.1:%d" % port, self.output(result))


if __name__ == "__main__":
    unittest.main()
