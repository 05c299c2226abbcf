"""The host's per-session guarantees, checked from inside a plugin
(tests/integration/plugins/order_check): callbacks, timers and posted
functions of one session never overlap and come in order, on a core with
several threads, while 200 clients send and vanish at random."""

import random
import socket
import unittest

import harness
from harness import HostTestCase, Host

CLIENTS = 200
SUMMARY = r"order_check summary:"


class OrderTest(HostTestCase):

    def test_callbacks_never_overlap_and_come_in_order(self):
        port = harness.free_port()
        config = harness.make_config(
            {"order_check": {}},
            [harness.server_service("orders", "order_check", port, "raw",
                                    max_sessions=10000, backlog=511)],
            threads=4)
        host = Host(self, config, "order_check").start()

        def client(index):
            rng = random.Random(index)
            sock = harness.connect(port, timeout=30)
            try:
                # One echoed byte first: the session surely reached
                # on_connected and on_recv before we start misbehaving.
                self.assertEqual(harness.exchange(sock, b"!", timeout=30),
                                 b"!")
                # Many round trips keep the session alive while its timers
                # (every 3 ms) and posted functions (every 1 ms) fire.
                for _ in range(rng.randrange(0, 40)):
                    size = rng.choice([rng.randrange(1, 2048),
                                       rng.randrange(1, 32768)])
                    data = rng.randbytes(size)
                    wanted = rng.choice([len(data), len(data) // 2, 0])
                    harness.exchange(sock, data, expect_len=wanted,
                                     timeout=30)
                ending = rng.choice(["close", "reset", "half_close",
                                     "close_unread"])
                if ending == "reset":
                    sock.send(rng.randbytes(rng.randrange(1, 4096)))
                    harness.abort(sock)
                elif ending == "half_close":
                    sock.shutdown(socket.SHUT_WR)
                    harness.read_until_eof(sock, timeout=30)
                    sock.close()
                elif ending == "close_unread":
                    sock.send(rng.randbytes(rng.randrange(1, 65536)))
                    sock.close()
                else:
                    sock.close()
            finally:
                sock.close()
            return ending

        harness.run_parallel(client, [(i,) for i in range(CLIENTS)],
                             timeout=180)
        host.stop(timeout=60)

        fields = harness.summary_fields(SUMMARY, host.log())
        self.assertIsNotNone(fields, "no order_check summary in the log")
        self.assertEqual(fields["violations"], 0)
        expected = CLIENTS + host.probe_connections
        self.assertEqual(fields["sessions"], expected)
        self.assertEqual(fields["disconnected"], expected)
        self.assertGreaterEqual(fields["callbacks"], 3 * expected)


if __name__ == "__main__":
    unittest.main()
