"""Reload refuses what check refuses (SPEC section 10): every generation is
admitted by the one decision `run` and `check` use (the file's and every
folder's owner and write bits, ABI, the descriptor's name equal to the
config's plugin name, the framing callbacks). A refused reload changes
nothing: the running generation keeps serving and the reply names the
reason."""

import os
import shutil
import tempfile
import unittest

import harness
from harness import Host, HostTestCase

OTHER_UID = 65534  # nobody
PLUGIN_DIR = os.path.join(harness.BUILD_DIR, "tests", "integration", "plugins",
                          "versioned")


def built(name):
    path = os.path.join(PLUGIN_DIR, name + harness.PLUGIN_SUFFIX)
    if not os.path.isfile(path):
        raise AssertionError("%s is not built" % path)
    return path


def deploy(source, target):
    """As an operator would: copy beside the target, rename over it."""
    temporary = target + ".new"
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


class ReloadTrustTest(HostTestCase):

    def setUp(self):
        self.deploy_dir = tempfile.mkdtemp(prefix="iocphost-deploy-")
        os.chmod(self.deploy_dir, 0o755)
        self.addCleanup(shutil.rmtree, self.deploy_dir, True)
        self.deployed = os.path.join(self.deploy_dir,
                                     "versioned" + harness.PLUGIN_SUFFIX)
        shutil.copyfile(built("versioned_v1"), self.deployed)
        os.chmod(self.deployed, 0o755)
        self.port = harness.free_port()
        config = harness.make_config(
            {}, [harness.server_service("game", "versioned", self.port,
                                        "packet")])
        config["plugins"] = [{"name": "versioned",
                              "path": os.path.join(self.deploy_dir,
                                                   "versioned"),
                              "settings": {}}]
        self.host = Host(self, config, "reload-trust").start()
        self.player = harness.PacketClient(self.port, timeout=10)

    def stop(self):
        # The player closes first: a peer that never closes holds the
        # host's stop for the linger after its FIN.
        self.player.close()
        self.host.stop()

    def version_of(self, client):
        client.send(2)
        packet_id, payload = client.recv(timeout=10)
        self.assertEqual(packet_id, 2)
        return payload.decode()

    def assert_refused_and_still_serving(self, *reasons):
        reply = self.host.control("reload", timeout=30)
        self.assertFalse(reply.ok, reply)
        self.assertIn("nothing changed", reply)
        for reason in reasons:
            self.assertIn(reason, reply)
        # The session of generation 1 goes on; a new one gets generation 1.
        self.assertEqual(self.version_of(self.player), "1.0.0")
        fresh = harness.PacketClient(self.port, timeout=10)
        try:
            self.assertEqual(self.version_of(fresh), "1.0.0")
        finally:
            fresh.close()
        gens = [p["generations"] for p in self.host.status_json()["plugins"]
                if p["name"] == "versioned"][0]
        self.assertEqual([g["generation"] for g in gens], [1])
        return reply

    def assert_reload_deploys_v2(self):
        reply = self.host.control("reload", timeout=30)
        self.assertTrue(reply.ok, reply)
        self.assertIn("generation 2", reply)

    @harness.posix_only("POSIX modes (Windows relies on ACLs)")
    def test_reload_refuses_a_new_build_in_an_other_writable_folder(self):
        os.chmod(self.deploy_dir, 0o757)  # chmod o+w
        deploy(built("versioned_v2"), self.deployed)
        self.assert_refused_and_still_serving(
            self.deploy_dir, "writable by other users",
            "chmod o-w %s" % self.deploy_dir)
        os.chmod(self.deploy_dir, 0o755)
        self.assert_reload_deploys_v2()
        self.stop()

    @harness.posix_only("POSIX modes (Windows relies on ACLs)")
    def test_reload_refuses_an_other_writable_file(self):
        deploy(built("versioned_v2"), self.deployed)
        os.chmod(self.deployed, 0o757)
        self.assert_refused_and_still_serving(
            self.deployed, "writable by other users",
            "chmod o-w %s" % self.deployed)
        os.chmod(self.deployed, 0o755)
        self.assert_reload_deploys_v2()
        self.stop()

    @harness.posix_only("POSIX owners (Windows relies on ACLs)")
    @unittest.skipUnless(os.geteuid() == 0, "needs root to chown")
    def test_reload_refuses_a_file_owned_by_another_user(self):
        deploy(built("versioned_v2"), self.deployed)
        os.chown(self.deployed, OTHER_UID, OTHER_UID)
        self.assert_refused_and_still_serving(
            self.deployed, "owned by uid %d" % OTHER_UID)
        self.stop()

    def test_reload_refuses_another_plugins_file_under_this_name(self):
        # The chat build copied over the versioned plugin's file.
        deploy(harness.plugin_path("chat"), self.deployed)
        self.assert_refused_and_still_serving(
            'plugin "versioned"', 'descriptor name is "chat"')
        deploy(built("versioned_v2"), self.deployed)
        self.assert_reload_deploys_v2()
        self.stop()

    def test_check_and_run_refuse_a_plugin_named_otherwise_in_its_file(self):
        config = harness.make_config(
            {}, [harness.server_service("zzz", "zzz", harness.free_port())])
        config["plugins"] = [{"name": "zzz",
                              "path": harness.plugin_path("echo"),
                              "settings": {}}]
        host = Host(self, config, "misnamed")
        for command in ("check", "run"):
            result = harness.run_cli([command, "-c", host.config_path])
            self.assertEqual(result.returncode, 1,
                             command + ": " + result.stdout + result.stderr)
            self.assertIn('plugin "zzz"', result.stderr)
            self.assertIn('descriptor name is "echo"', result.stderr)
        self.stop()


if __name__ == "__main__":
    unittest.main()
