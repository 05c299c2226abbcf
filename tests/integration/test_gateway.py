"""Two hosts: a gateway (players + a client link to the backend) and a
backend (protocol: plugins/gateway/gateway.c and plugins/backend/backend.c)."""

import random
import re
import unittest

import harness
from harness import HostTestCase, Host, PacketClient, WaitTimeout

GATEWAY_ERROR = 0xFFFF
PLAYERS = 50
PACKETS_PER_PLAYER = 5
REPLY = re.compile(rb"reply:(\d+):(.*)\Z", re.S)


class GatewayTest(HostTestCase):

    def setUp(self):
        self.backend_port = harness.free_port()
        self.players_port = harness.free_port()
        self.backend_config = harness.make_config(
            {"backend": {}},
            [harness.server_service("game", "backend", self.backend_port,
                                    "packet")],
            name="backend")
        self.gateway_config = harness.make_config(
            {"gateway": {"players_service": "players",
                         "backend_service": "backend"}},
            [harness.server_service("players", "gateway", self.players_port,
                                    "packet"),
             harness.client_service(
                 "backend", "gateway", self.backend_port, "packet",
                 sessions=1, connect_timeout_ms=2000,
                 reconnect={"min_delay_ms": 50, "max_delay_ms": 500,
                            "jitter": 0.2})],
            name="gateway")
        self.players = []

    def tearDown(self):
        for player in self.players:
            player.close()

    def start_backend(self, label):
        return Host(self, self.backend_config, label).start()

    def wait_for_routing(self, up, timeout=30.0):
        """Sends probe packets from a fresh player until the gateway answers
        with a backend reply (up) or with its error packet (not up). A probe
        may go unanswered while the link changes state; then we try again."""
        probe = PacketClient(self.players_port)
        try:
            def answered_as_expected():
                probe.send(1, b"probe")
                try:
                    packet = probe.recv(timeout=1.0)
                except WaitTimeout:
                    return False
                self.assertIsNotNone(packet, "the gateway closed a player")
                packet_id, _ = packet
                return (packet_id != GATEWAY_ERROR) == up
            harness.wait_until(answered_as_expected, timeout,
                               "the gateway's backend link to be %s" %
                               ("up" if up else "down"))
        finally:
            probe.close()

    def round_trip(self, player, index, round_):
        """A player sends several packets and must get exactly its own
        replies, in order. Returns the player id the backend saw."""
        rng = random.Random(index * 1000 + round_)
        sent = []
        for k in range(PACKETS_PER_PLAYER):
            packet_id = 10 + k
            payload = b"player%d-round%d-msg%d-" % (index, round_, k) + \
                rng.randbytes(rng.randrange(0, 2000))
            player.send(packet_id, payload)
            sent.append((packet_id, payload))
        seen_ids = set()
        for packet_id, payload in sent:
            got = player.recv(timeout=10.0)
            self.assertIsNotNone(got, "player %d: EOF" % index)
            got_id, got_payload = got
            self.assertEqual(got_id, packet_id, "player %d" % index)
            match = REPLY.match(got_payload)
            self.assertIsNotNone(match, "player %d: %r" %
                                 (index, got_payload[:80]))
            self.assertEqual(match.group(2), payload,
                             "player %d got someone else's reply" % index)
            seen_ids.add(int(match.group(1)))
        self.assertEqual(len(seen_ids), 1, "player %d: several ids" % index)
        return seen_ids.pop()

    def all_players_round_trip(self, round_):
        ids = harness.run_parallel(
            self.round_trip,
            [(player, i, round_) for i, player in enumerate(self.players)],
            timeout=60)
        self.assertEqual(len(set(ids)), PLAYERS, "player ids are unique")
        return ids

    def error_for_everyone(self):
        def one(player, index):
            player.send(20, b"anyone there? %d" % index)
            packet = player.recv(timeout=10.0)
            self.assertIsNotNone(packet, "player %d: EOF" % index)
            packet_id, payload = packet
            self.assertEqual(packet_id, GATEWAY_ERROR,
                             "player %d: %r" % (index, payload[:80]))
            self.assertIn(b"backend", payload)
        harness.run_parallel(one, [(p, i) for i, p in enumerate(self.players)],
                             timeout=60)

    def test_replies_reach_their_players_across_a_backend_restart(self):
        backend = self.start_backend("backend")
        gateway = Host(self, self.gateway_config, "gateway").start()
        self.wait_for_routing(up=True)

        self.players = [PacketClient(self.players_port)
                        for _ in range(PLAYERS)]
        ids_before = self.all_players_round_trip(1)

        backend.stop()
        self.wait_for_routing(up=False)
        self.error_for_everyone()

        restarted = self.start_backend("backend-restarted")
        self.wait_for_routing(up=True)
        ids_after = self.all_players_round_trip(2)
        self.assertEqual(ids_before, ids_after,
                         "players keep their sessions across the restart")

        gateway.stop()
        restarted.stop()

    def renamed_gateway_config(self, settings):
        """The gateway's two services under other names, which only its
        settings tell it."""
        config = self.gateway_config
        config["plugins"][0]["settings"] = settings
        config["services"][0]["name"] = "front"
        config["services"][1]["name"] = "link"
        return config

    def test_gateway_finds_its_services_by_the_names_in_its_settings(self):
        # Read with setting_string: with the default names ("players",
        # "backend") the link would count as a player and nothing would
        # reach the backend.
        config = self.renamed_gateway_config(
            {"players_service": "front", "backend_service": "link"})
        backend = self.start_backend("backend")
        gateway = Host(self, config, "gateway").start()
        self.wait_for_routing(up=True)
        player = PacketClient(self.players_port)
        self.players.append(player)
        self.round_trip(player, 0, 1)
        gateway.stop()
        backend.stop()

    def test_gateway_refuses_a_service_name_that_is_not_a_string(self):
        config = self.renamed_gateway_config(
            {"players_service": 5, "backend_service": "link"})
        host = Host(self, config, "gateway")
        result = harness.run_cli(["run", "-c", host.config_path], timeout=30)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("settings.players_service and settings.backend_service "
                      "must be service names (strings of 1 to 63 bytes)",
                      result.stderr)


if __name__ == "__main__":
    unittest.main()
