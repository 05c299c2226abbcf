"""Settings errors before deploy (plugin ABI 1.2 check_settings, issue 13).

The chat plugin checks its settings (presence_interval_ms: 0..3600000)
without side effects. A bad value is refused by:
  - `iocphost check`, exit 1, naming the config file, the JSON path, the
    plugin, its file and the plugin's own reason;
  - `iocphost run`, before on_load, exit 1;
  - `reload --dry-run` and `reload` of a running instance, exit 1, while the
    running generation keeps serving with its settings; and `check` beside
    that instance says the same.
"""

import json
import unittest

import harness
from harness import HostTestCase, Host, PacketClient

PRESENCE = 104
REASON = ("presence_interval_ms must be an integer from 0 to 3600000 "
          "(milliseconds; 0 turns PRESENCE off), found 99999999")


class SettingsCheckTest(HostTestCase):

    def chat_host(self, interval_ms):
        self.port = harness.free_port()
        config = harness.make_config(
            {"chat": {"presence_interval_ms": interval_ms}},
            [harness.server_service("chat", "chat", self.port, "packet")])
        host = Host(self, config, "settings")
        self.track_host(host)
        return host

    def set_interval(self, host, interval_ms):
        with open(host.config_path) as f:
            config = json.load(f)
        config["plugins"][0]["settings"]["presence_interval_ms"] = interval_ms
        with open(host.config_path, "w") as f:
            json.dump(config, f)

    def assert_refusal(self, text):
        self.assertIn("plugins[0].settings", text)
        self.assertIn('plugin "chat" (', text)
        self.assertIn(harness.plugin_path("chat") if not harness.WINDOWS
                      else "chat.dll", text)
        self.assertIn("refused its settings: " + REASON, text)

    def test_check_and_run_refuse_settings_the_plugin_refuses(self):
        host = self.chat_host(99999999)
        result = harness.run_cli(["check", "-c", host.config_path])
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertTrue(result.stderr.startswith(
            "iocphost: %s: " % host.config_path), result.stderr)
        self.assert_refusal(result.stderr)

        result = harness.run_cli(["run", "-c", host.config_path], timeout=30)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assert_refusal(result.stderr)

        # In range, the same config passes.
        self.set_interval(host, 3600000)
        result = harness.run_cli(["check", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_check_refuses_a_setting_of_another_type_saying_what_it_found(self):
        # check_settings reads them with the typed getters (setting_int and
        # the others on the table it gets): a fraction is no integer, and a
        # string or a bool is no number.
        host = self.chat_host(0)
        for value, found in ((3.5, "3.5"), (-1, "-1"), ("fast", '"fast"'),
                             (True, "true"), ([1000], "an array")):
            with self.subTest(value=value):
                self.set_interval(host, value)
                result = harness.run_cli(["check", "-c", host.config_path])
                self.assertEqual(result.returncode, 1,
                                 result.stdout + result.stderr)
                self.assertIn("refused its settings: presence_interval_ms "
                              "must be an integer from 0 to 3600000 "
                              "(milliseconds; 0 turns PRESENCE off), found " +
                              found, result.stderr)

    def test_reload_refuses_settings_the_plugin_refuses_and_keeps_serving(self):
        host = self.chat_host(50).start()
        client = PacketClient(self.port)
        self.addCleanup(client.close)
        client.recv_matching(lambda i, p: i == PRESENCE, timeout=10,
                             what="PRESENCE every 50 ms")
        self.set_interval(host, 99999999)
        for args in (["reload", "--dry-run"], ["reload"]):
            with self.subTest(command=" ".join(args)):
                reply = host.control(" ".join(args), timeout=30)
                self.assertFalse(reply.ok, reply)
                self.assert_refusal(reply)
        result = harness.run_cli(["check", "-c", host.config_path])
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assert_refusal(result.stderr)

        # Nothing changed: one generation, still sending PRESENCE.
        plugins = host.status_json()["plugins"]
        self.assertEqual([g["generation"] for g in plugins[0]["generations"]],
                         [1])
        client.recv_matching(lambda i, p: i == PRESENCE, timeout=10,
                             what="PRESENCE after the refused reload")
        self.assertIn("reload refused; nothing changed", host.log())
        host.stop()


if __name__ == "__main__":
    unittest.main()
