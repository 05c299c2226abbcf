"""The stall watchdog (SPEC section 15), checked with the staller plugin
(tests/integration/plugins/staller): a plugin callback that runs longer than
watchdog.stall_warn_ms is logged once per stall, naming plugin, generation,
service, session, callback kind and packet id, and counted in the
generation's stalls (status --json and text); watchdog.stall_warn_ms 0
turns it off; fast callbacks are never reported."""

import re
import struct
import unittest

import harness
from harness import HostTestCase, Host

STALL, ECHO = 1, 2
STALL_LINE = re.compile(
    r"stall: plugin (\S+), generation (\d+), service (\S+), session (\d+), "
    r"(\w+) \(packet (\d+)\), running for at least (\d+) ms \(over "
    r"watchdog\.stall_warn_ms (\d+)\)")


class WatchdogTest(HostTestCase):

    def start(self, watchdog=None):
        port = harness.free_port()
        config = harness.make_config(
            {"staller": {}},
            [harness.server_service("play", "staller", port, "packet")],
            threads=2)
        if watchdog is not None:
            config["watchdog"] = watchdog
        host = Host(self, config, "staller").start()
        return host, port

    def stall(self, client, ms):
        """Asks for a stall of ms in on_packet; returns the session id."""
        client.send(STALL, struct.pack("<I", ms))
        packet_id, payload = client.recv(timeout=30)
        self.assertEqual(packet_id, STALL)
        slept, session = struct.unpack("<IQ", payload)
        self.assertEqual(slept, ms)
        return session

    def stall_lines(self, host):
        return STALL_LINE.findall(host.log())

    def generation_stalls(self, host):
        plugin = [p for p in host.status_json()["plugins"]
                  if p["name"] == "staller"][0]
        return [g["stalls"] for g in plugin["generations"]]

    def test_each_stall_is_logged_once_with_what_ran_and_counted(self):
        host, port = self.start({"stall_warn_ms": 100})
        client = harness.PacketClient(port)
        other = harness.PacketClient(port)
        # Fast callbacks are not stalls.
        for i in range(20):
            other.send(ECHO, b"%d" % i)
            self.assertEqual(other.recv(), (ECHO, b"%d" % i))
        self.assertEqual(self.generation_stalls(host), [0])
        session = self.stall(client, 300)
        # The line is written while the stall lasts (the reply comes after
        # it): it is there once the reply is.
        harness.wait_until(lambda: len(self.stall_lines(host)) >= 1, 10,
                           "the first stall's line")
        self.assertEqual(self.generation_stalls(host), [1])
        session_again = self.stall(client, 300)
        self.assertEqual(session_again, session)
        harness.wait_until(lambda: len(self.stall_lines(host)) >= 2, 10,
                           "the second stall's line")
        self.assertEqual(self.generation_stalls(host), [2])
        text = host.control("status")
        self.assertIn("2 stalls", text)
        other.send(ECHO, b"after")
        self.assertEqual(other.recv(), (ECHO, b"after"))
        client.close()
        other.close()
        host.stop()
        # Two stalls of 300 ms, scanned every 25 ms: two lines, no more.
        lines = self.stall_lines(host)
        self.assertEqual(len(lines), 2, "one line per stall:\n%s" %
                         "\n".join(l for l in host.log().splitlines()
                                   if "stall" in l))
        for line in lines:
            plugin, generation, service, session_id, kind, packet, ran, \
                warn = line
            self.assertEqual((plugin, generation, service, kind, packet,
                              warn),
                             ("staller", "1", "play", "on_packet", "1",
                              "100"))
            self.assertEqual(int(session_id), session)
            self.assertGreaterEqual(int(ran), 100)

    def test_stall_warn_ms_0_turns_the_watchdog_off(self):
        host, port = self.start({"stall_warn_ms": 0})
        client = harness.PacketClient(port)
        self.stall(client, 300)
        self.assertEqual(self.generation_stalls(host), [0])
        client.close()
        host.stop()
        self.assertEqual(self.stall_lines(host), [])

    def test_the_default_threshold_is_100_ms(self):
        host, port = self.start()
        client = harness.PacketClient(port)
        self.stall(client, 300)
        harness.wait_until(lambda: len(self.stall_lines(host)) >= 1, 10,
                           "the stall's line")
        client.close()
        host.stop()
        lines = self.stall_lines(host)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0][7], "100")


if __name__ == "__main__":
    unittest.main()
