"""A plugin built out of tree with the SDK's CMake package loads in the real
host and serves (the sdk.out_of_tree test builds it from a folder outside the
repository and leaves it in the build tree)."""

import os
import unittest

import harness
from harness import HostTestCase, Host


class SdkPluginTest(HostTestCase):

    def start_hello(self, settings):
        path = os.path.join(harness.BUILD_DIR, "tests", "fixtures",
                            "sdk_hello", "hello" + harness.PLUGIN_SUFFIX)
        self.assertTrue(os.path.isfile(path),
                        "%s missing: run the sdk.out_of_tree test first" % path)
        port = harness.free_port()
        config = harness.make_config({}, [
            harness.server_service("hello", "hello", port, "raw")])
        config["plugins"] = [{"name": "hello", "path": path,
                              "settings": settings}]
        self.host = Host(self, config, "hello").start()
        return port

    def test_out_of_tree_plugin_loads_and_serves(self):
        port = self.start_hello({})
        with harness.connect(port) as sock:
            back = harness.exchange(sock, b"world", expect_len=len(b"hello world"))
            self.assertEqual(back, b"hello world")
        self.host.stop()
        self.assertIn("plugin hello", self.host.log())

    def test_out_of_tree_plugin_reads_its_settings_with_the_host_getters(self):
        # setting_string("/greeting") through the host's table (ABI 1.2).
        port = self.start_hello({"greeting": "hi \u00e9"})
        expected = "hi \u00e9 world".encode()
        with harness.connect(port) as sock:
            back = harness.exchange(sock, b"world", expect_len=len(expected))
            self.assertEqual(back, expected)
        self.host.stop()


if __name__ == "__main__":
    unittest.main()
