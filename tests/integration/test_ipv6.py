"""IPv6 end to end, on the loopback ::1 (addresses are written "[::1]:port").

A server service bound to [::1] accepts and echoes; a packet service on [::1]
names its peer "[::1]:<port>" when it cuts a malformed header; a client
service reaches a server over [::1]. On Linux this is epoll; under Wine it is
IOCP's AcceptEx on an IPv6 listener (the accept socket must have the
listener's family) and ConnectEx from a socket bound to the IPv6 "any"
address, which the IPv4 tests never reach.
"""

import os
import re
import socket
import struct
import sys
import unittest

import harness
from harness import HostTestCase, Host

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "plugins", "hostile"))
import hostile_client as hc  # noqa: E402


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def connect6(port, timeout=5.0):
    s = socket.create_connection(("::1", port), timeout=harness.scaled(timeout))
    s.settimeout(harness.scaled(timeout))
    return s


def accepts6(port):
    try:
        with connect6(port, timeout=0.2):
            return True
    except OSError:
        return False


@unittest.skipUnless(ipv6_loopback(), "this machine has no IPv6 loopback "
                     "(::1); nothing to test")
class Ipv6Test(HostTestCase):

    def test_server_and_client_services_on_ipv6_loopback(self):
        echo_port, packet_port = harness.free_port(), harness.free_port()
        echo = harness.server_service("echo6", "echo", echo_port, "raw")
        echo["address"] = "[::1]:%d" % echo_port
        packets = harness.server_service("echo-pkt6", "hostile", packet_port,
                                         "packet")
        packets["address"] = "[::1]:%d" % packet_port
        client = harness.client_service("sink-v6", "hostile", echo_port,
                                        "raw", sessions=2)
        client["address"] = "[::1]:%d" % echo_port
        config = harness.make_config({"echo": {}, "hostile": {}},
                                     [echo, packets, client])
        host = Host(self, config, "ipv6").start(wait_ports=False)
        harness.wait_until(lambda: accepts6(echo_port) and
                           accepts6(packet_port), 20,
                           "the host to accept on [::1]")

        # Raw echo over IPv6, every byte checked.
        data = os.urandom(200000)
        with connect6(echo_port) as sock:
            self.assertEqual(harness.exchange(sock, data, timeout=30), data)

        # The peer of an accepted IPv6 session, as the host names it.
        with connect6(packet_port) as sock:
            local_port = sock.getsockname()[1]
            sock.sendall(struct.pack("<HH", 2, 1))  # a size under 4
            # The hostile plugin's hello (packet 0xFFFE, the session id),
            # then the end.
            hello = harness.read_until_eof(sock, timeout=10)
            self.assertEqual(hello[:4], struct.pack("<HH", 12, 0xFFFE))
        harness.wait_until(
            lambda: re.search(r"\(\[::1\]:%d\) sent a packet header "
                              r"declaring 2 bytes" % local_port, host.log()),
            10, "the protocol_error line naming [::1]:%d" % local_port)

        # The client service's sessions connect over IPv6 and stay.
        def services():
            return {s["name"]: s for s in host.status_json()["services"]}
        harness.wait_until(lambda: services()["sink-v6"]["sessions"] == 2,
                           20, "both client sessions to connect over ::1")
        stats = services()
        # Each connected once and stayed: no reconnect.
        self.assertEqual(stats["sink-v6"]["connects"], 2)
        self.assertEqual(stats["sink-v6"]["connect_failures"], 0)
        self.assertGreaterEqual(stats["echo6"]["sessions"], 2)
        host.stop()
        summary = hc.summary(host.log())
        self.assertEqual(summary["violations"], 0)


if __name__ == "__main__":
    unittest.main()
