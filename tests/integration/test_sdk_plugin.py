"""A plugin built out of tree with the SDK's CMake package loads in the real
host and serves (the sdk.out_of_tree test builds it from a folder outside the
repository and leaves it in the build tree)."""

import os
import unittest

import harness
from harness import HostTestCase, Host


class SdkPluginTest(HostTestCase):

    def test_out_of_tree_plugin_loads_and_serves(self):
        path = os.path.join(harness.BUILD_DIR, "tests", "fixtures",
                            "sdk_hello", "hello" + harness.PLUGIN_SUFFIX)
        self.assertTrue(os.path.isfile(path),
                        "%s missing: run the sdk.out_of_tree test first" % path)
        port = harness.free_port()
        config = harness.make_config({}, [
            harness.server_service("hello", "hello", port, "raw")])
        config["plugins"] = [{"name": "hello", "path": path, "settings": {}}]
        self.host = Host(self, config, "hello").start()
        with harness.connect(port) as sock:
            back = harness.exchange(sock, b"world", expect_len=len(b"hello world"))
            self.assertEqual(back, b"hello world")
        self.host.stop()
        self.assertIn("plugin hello", self.host.log())


if __name__ == "__main__":
    unittest.main()
