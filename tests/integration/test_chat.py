"""The chat plugin on a packet service (protocol: plugins/chat/chat.c)."""

import socket
import unittest

import harness
from harness import HostTestCase, Host, PacketClient

JOIN, SAY, LEAVE = 1, 2, 3
JOINED, SAID, LEFT, PRESENCE, ERROR = 101, 102, 103, 104, 199
PRESENCE_INTERVAL_MS = 100


def not_presence(packet_id, payload):
    return packet_id != PRESENCE


class ChatTest(HostTestCase):

    def setUp(self):
        self.port = harness.free_port()
        config = harness.make_config(
            {"chat": {"presence_interval_ms": PRESENCE_INTERVAL_MS}},
            [harness.server_service("chat", "chat", self.port, "packet")])
        self.host = Host(self, config, "chat").start()
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            client.close()

    def client(self):
        """A connected client whose session the host has set up: the first
        PRESENCE proves on_connected ran, so broadcasts now reach it."""
        client = PacketClient(self.port)
        self.clients.append(client)
        client.recv_matching(lambda i, p: i == PRESENCE,
                             timeout=5.0 + 10 * PRESENCE_INTERVAL_MS / 1000,
                             what="the first PRESENCE")
        return client

    def expect(self, client, packet_id, payload):
        """The next packet other than PRESENCE is exactly (id, payload)."""
        got = client.recv_matching(not_presence,
                                   what="packet %d %r" % (packet_id, payload))
        self.assertEqual(got, (packet_id, payload))

    def expect_presence(self, client, text):
        client.recv_matching(
            lambda i, p: i == PRESENCE and p == text,
            timeout=5.0 + 10 * PRESENCE_INTERVAL_MS / 1000,
            what="PRESENCE %r" % text)

    def test_say_before_join_gets_an_error(self):
        alone = self.client()
        alone.send(SAY, b"hello?")
        packet_id, payload = alone.recv_matching(not_presence, what="ERROR")
        self.assertEqual(packet_id, ERROR)
        self.assertTrue(payload, "ERROR has a reason text")
        # The session stays usable: JOIN then SAY works.
        alone.send(JOIN, b"late")
        self.expect(alone, JOINED, b"late")
        alone.send(SAY, b"now it works")
        self.expect(alone, SAID, b"late: now it works")
        self.host.stop()

    def test_second_join_and_unknown_id_get_errors(self):
        client = self.client()
        client.send(JOIN, b"ann")
        self.expect(client, JOINED, b"ann")
        client.send(JOIN, b"ann again")
        self.assertEqual(client.recv_matching(not_presence)[0], ERROR)
        client.send(77, b"?")
        self.assertEqual(client.recv_matching(not_presence)[0], ERROR)
        self.host.stop()

    def test_three_clients_join_say_see_presence_and_leave(self):
        names = [b"alice", b"bob", b"carol"]
        clients = [self.client() for _ in names]

        for name, joiner in zip(names, clients):
            joiner.send(JOIN, name)
            for client in clients:
                self.expect(client, JOINED, name)

        for name, speaker in zip(names, clients):
            text = b"hi from " + name
            speaker.send(SAY, text)
            for client in clients:
                self.expect(client, SAID, name + b": " + text)

        # The repeating per-session timer tells everyone who is here.
        for client in clients:
            self.expect_presence(client, b"3 online")

        alice, bob, carol = clients
        carol.send(LEAVE)
        for client in (alice, bob):
            self.expect(client, LEFT, b"carol")
        # LEAVE ends the session: carol's connection reaches EOF.
        self.assertEqual(self.drain_to_eof(carol), [])
        self.expect_presence(alice, b"2 online")

        # A joined client that just disconnects is announced as LEFT too.
        bob.sock.shutdown(socket.SHUT_RDWR)
        self.expect(alice, LEFT, b"bob")
        self.expect_presence(alice, b"1 online")
        self.host.stop()

    def drain_to_eof(self, client):
        """Reads to EOF; returns the packets other than PRESENCE and LEFT
        that came before it."""
        unexpected = []
        for _ in range(10000):
            packet = client.recv(timeout=5.0)
            if packet is None:
                return unexpected
            if packet[0] not in (PRESENCE, LEFT):
                unexpected.append(packet)
        self.fail("no EOF after LEAVE")


if __name__ == "__main__":
    unittest.main()
