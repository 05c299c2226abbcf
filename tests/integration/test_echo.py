"""The echo plugin on a raw service: every byte comes back, in order."""

import random
import socket
import unittest

import harness
from harness import HostTestCase, Host


SIZES = [1, 2, 7, 100, 1460, 4096, 65535, 65536, 65537, 300001, 1 << 20]


class EchoTest(HostTestCase):

    def start_echo(self, threads=2):
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", port, "raw")],
            threads=threads)
        self.host = Host(self, config, "echo").start()
        return port

    def test_every_client_gets_back_exactly_its_bytes_up_to_1_mib(self):
        port = self.start_echo()

        def client(index):
            rng = random.Random(index)
            with harness.connect(port, timeout=30) as sock:
                for size in SIZES:
                    data = rng.randbytes(size)
                    back = harness.exchange(sock, data, timeout=60)
                    self.assertEqual(len(back), size,
                                     "client %d size %d" % (index, size))
                    if back != data:
                        first = next(i for i in range(size)
                                     if back[i] != data[i])
                        self.fail("client %d size %d: first wrong byte at "
                                  "offset %d" % (index, size, first))
            return True

        harness.run_parallel(client, [(i,) for i in range(8)], timeout=120)
        self.host.stop()

    def test_many_small_writes_come_back_in_order(self):
        port = self.start_echo()
        with harness.connect(port) as sock:
            expected = bytearray()
            received = bytearray()
            for i in range(2000):
                chunk = b"%d," % i
                expected += chunk
                received += harness.exchange(sock, chunk, expect_len=0)
            received += harness.exchange(
                sock, b"", expect_len=len(expected) - len(received))
            self.assertEqual(bytes(received), bytes(expected))
        self.host.stop()

    def test_half_closed_client_gets_its_bytes_then_eof(self):
        # Like `printf hello | nc -q1 127.0.0.1 PORT`.
        port = self.start_echo()
        with harness.connect(port) as sock:
            sock.sendall(b"hello")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(harness.read_until_eof(sock), b"hello")
        self.host.stop()

    def test_many_half_closed_clients_each_get_their_bytes_then_eof(self):
        port = self.start_echo(threads=4)

        def client(index):
            rng = random.Random(1000 + index)
            data = rng.randbytes(rng.randrange(1, 100000))
            with harness.connect(port, timeout=30) as sock:
                # Read part of the echo before the FIN, the rest after it.
                early = harness.exchange(sock, data,
                                         expect_len=len(data) // 2)
                sock.shutdown(socket.SHUT_WR)
                late = harness.read_until_eof(sock, timeout=15)
            self.assertEqual(early + late, data, "client %d" % index)

        harness.run_parallel(client, [(i,) for i in range(50)], timeout=60)
        self.host.stop()

    def test_client_that_resets_does_not_disturb_others(self):
        port = self.start_echo()
        with harness.connect(port) as steady:
            for round_ in range(20):
                rude = harness.connect(port)
                rude.sendall(b"x" * 100000)
                harness.abort(rude)
                data = b"round %d" % round_
                self.assertEqual(harness.exchange(steady, data), data)
        self.host.stop()


if __name__ == "__main__":
    unittest.main()
