"""`iocphost check` and `run` refuse every broken config of
tests/configs/broken (EXPECTED.tsv: <file>\\t<expected substring>) with
exit 1 and a message naming the file and the problem; nothing listens."""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import HostTestCase

BROKEN_DIR = os.path.join(harness.SOURCE_DIR, "tests", "configs", "broken")
EXPECTED_TSV = os.path.join(BROKEN_DIR, "EXPECTED.tsv")
MIN_ENTRIES = 15


def expected_entries():
    entries = []
    with open(EXPECTED_TSV, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            name, sep, substring = line.partition("\t")
            if not sep or not name or not substring:
                raise AssertionError("%s:%d: expected <file>\\t<substring>" %
                                     (EXPECTED_TSV, number))
            entries.append((name, substring))
    return entries


def ports_named_in(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return sorted({int(p) for p in re.findall(
        r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1?\]):(\d{1,5})\b", text)
        if 0 < int(p) < 65536})


class ConfigCheckTest(HostTestCase):

    def setUp(self):
        self.assertTrue(os.path.isfile(EXPECTED_TSV),
                        "%s is missing: it lists each broken config with the "
                        "text its error must contain" % EXPECTED_TSV)
        self.entries = expected_entries()
        self.assertGreaterEqual(len(self.entries), MIN_ENTRIES,
                                "%s lists too few broken configs" %
                                EXPECTED_TSV)

    def test_check_refuses_each_broken_config_naming_file_and_problem(self):
        # `check` starts nothing: the configs are checked four at a time
        # (under Wine each process start costs a second or more, and the
        # list keeps growing), then judged one by one.
        def check(name):
            path = os.path.join(BROKEN_DIR, name)
            if not os.path.isfile(path):
                return None
            return harness.run_cli(["check", "-c", path])
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(check, [n for n, _ in self.entries]))
        for (name, substring), result in zip(self.entries, results):
            with self.subTest(config=name):
                self.assertIsNotNone(result, "%s missing" %
                                     os.path.join(BROKEN_DIR, name))
                output = result.stdout + result.stderr
                self.assertEqual(result.returncode, 1, output)
                self.assertIn(name, output)
                self.assertIn(substring, output)

    def test_run_refuses_each_broken_config_without_listening(self):
        for name, _ in self.entries:
            with self.subTest(config=name):
                path = os.path.join(BROKEN_DIR, name)
                # A port something else already serves proves nothing.
                ports = [p for p in ports_named_in(path)
                         if not harness.port_accepts(p, timeout=0.05)]
                process = subprocess.Popen(
                    harness.host_command() + ["run", "-c", path],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT)
                listened = []
                try:
                    deadline = time.monotonic() + harness.scaled(20)
                    while process.poll() is None and \
                            time.monotonic() < deadline:
                        listened += [p for p in ports
                                     if harness.port_accepts(p, 0.05)]
                        time.sleep(harness.POLL_INTERVAL)
                finally:
                    if process.poll() is None:
                        process.kill()
                    output, _ = process.communicate(
                        timeout=harness.scaled(10))
                output = output.decode(errors="replace")
                self.assertEqual(process.returncode, 1, output)
                self.assertEqual(listened, [],
                                 "a broken config must start nothing")


class ValidConfigTest(HostTestCase):

    def test_a_valid_config_passes_check(self):
        config = harness.make_config(
            {"echo": {}, "chat": {"presence_interval_ms": 250}},
            [harness.server_service("echo", "echo", harness.free_port()),
             harness.server_service("chat", "chat", harness.free_port(),
                                    "packet")])
        host = harness.Host(self, config, "check")
        result = harness.run_cli(["check", "-c", host.config_path])
        self.assertEqual(result.returncode, 0,
                         result.stdout + result.stderr)

    def test_shipped_configs_pass_check(self):
        """conf/*.json name their plugins as ../build/plugins/...: each is
        checked as shipped, with only that folder replaced by the build
        under test (copied next to nothing else, so a path that does not
        start with ../build/ is made absolute against conf/)."""
        conf = os.path.join(harness.SOURCE_DIR, "conf")
        names = sorted(n for n in os.listdir(conf) if n.endswith(".json"))
        self.assertGreater(len(names), 0, "no conf/*.json to check")
        folder = tempfile.mkdtemp(prefix="iocphost-conf-")
        self.addCleanup(shutil.rmtree, folder, True)
        for name in names:
            with self.subTest(config=name):
                with open(os.path.join(conf, name)) as f:
                    config = json.load(f)
                plugins = config.get("plugins", [])
                self.assertGreater(len(plugins), 0, name)
                for plugin in plugins:
                    path = plugin["path"]
                    if path.startswith("../build/"):
                        path = os.path.join(harness.BUILD_DIR,
                                            path[len("../build/"):])
                    plugin["path"] = os.path.normpath(
                        os.path.join(conf, path))
                copy = os.path.join(folder, name)
                with open(copy, "w") as f:
                    json.dump(config, f, indent=2)
                result = harness.run_cli(["check", "-c", copy])
                self.assertEqual(result.returncode, 0,
                                 result.stdout + result.stderr)


if __name__ == "__main__":
    unittest.main()
