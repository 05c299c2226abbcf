"""The plugin API holds to the result table of plugin.h whatever sizes a
plugin passes (issue 20): lengths that wrap size_t are refused, a broadcast
larger than send_queue_limit_bytes is refused before it harms any session,
a broadcast of nothing reaches nobody, and the packet calls on a raw service
say IOCPHOST_E_FRAMING."""

import unittest

import harness
from harness import Host, HostTestCase

LIMIT = 65536
E_INVAL, E_TOOBIG, E_FRAMING = -2, -6, -7


class Client:
    def __init__(self, port):
        self.sock = harness.connect(port, timeout=10)
        self.buffer = b""

    def ask(self, command):
        """Sends one command; returns its result, and the bytes that came
        before the answer (a broadcast's)."""
        self.sock.sendall(command.encode() + b"\n")
        return self.answer(command)

    def answer(self, command):
        prefix = command.encode() + b" "
        while True:
            at = self.buffer.find(prefix)
            end = self.buffer.find(b"\n", at) if at >= 0 else -1
            if end >= 0:
                before = self.buffer[:at]
                result = int(self.buffer[at + len(prefix):end])
                self.buffer = self.buffer[end + 1:]
                return result, before
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise AssertionError("EOF waiting for the answer to %r" %
                                     command)
            self.buffer += chunk

    def receive(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise AssertionError("EOF after %d of %d bytes" %
                                     (len(self.buffer), count))
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def close(self):
        self.sock.close()


class ApiLimitsTest(HostTestCase):

    def setUp(self):
        self.port = harness.free_port()
        config = harness.make_config(
            {"api_probe": {}},
            [harness.server_service("probe", "api_probe", self.port, "raw",
                                    send_queue_limit_bytes=LIMIT)])
        self.host = Host(self, config, "api").start()
        self.clients = [Client(self.port) for _ in range(3)]
        for c in self.clients:
            self.addCleanup(c.close)
            self.assertEqual(c.ask("ping"), (0, b""))

    def all_still_served(self):
        for c in self.clients:
            self.assertEqual(c.ask("ping"), (0, b""))
        self.assertTrue(self.host.running(), "the host died")

    def test_lengths_that_wrap_size_t_are_refused(self):
        first = self.clients[0]
        self.assertEqual(first.ask("broadcast_huge"), (E_TOOBIG, b""))
        self.assertEqual(first.ask("sendv_overflow"), (E_INVAL, b""))
        self.all_still_served()

    def test_a_broadcast_over_the_limit_is_refused_before_harming_anyone(self):
        first = self.clients[0]
        self.assertEqual(first.ask("broadcast %d" % (2 * LIMIT)),
                         (E_TOOBIG, b""))
        self.assertEqual(first.ask("broadcast %d" % (LIMIT + 1)),
                         (E_TOOBIG, b""))
        self.all_still_served()
        # The limit itself is allowed, and reaches everyone.
        result, before = first.ask("broadcast %d" % LIMIT)
        self.assertEqual(result, 3)
        self.assertEqual(before, b"x" * LIMIT)
        for c in self.clients[1:]:
            self.assertEqual(c.receive(LIMIT), b"x" * LIMIT)
        self.all_still_served()
        self.host.stop()
        self.assertNotIn("send_queue_full", self.host.log())

    def test_a_broadcast_of_nothing_reaches_nobody(self):
        self.assertEqual(self.clients[0].ask("broadcast 0"), (0, b""))
        self.all_still_served()

    def test_packet_calls_on_a_raw_service_say_framing(self):
        first = self.clients[0]
        self.assertEqual(first.ask("send_packet"), (E_FRAMING, b""))
        self.assertEqual(first.ask("broadcast_packet"), (E_FRAMING, b""))
        self.all_still_served()


if __name__ == "__main__":
    unittest.main()
