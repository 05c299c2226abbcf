"""A graceful stop (SPEC section 9) at its edges, through the real binary:

  - SIGTERM in the middle of a connect flood: sessions that arrive while the
    stop is under way are closed at once, so the host exits long before
    drain_timeout_ms and never reports sessions "still flushing";
  - a plugin that releases its last reference to sessions in on_stopping
    (the holder plugin) does not hang the stop;
  - a plugin thread that broadcasts back to back through the whole stop
    never reaches a freed service (the ASan build turns that into a report).
"""

import socket
import threading
import time
import unittest

import harness
from harness import HostTestCase, Host

DRAIN_TIMEOUT_MS = 20000


class ConnectFlood(threading.Thread):
    """Opens loopback connections without pause (bounded in count and time)
    and keeps them open, reading nothing, until told to stop."""

    def __init__(self, port, limit, seconds):
        super().__init__(daemon=True)
        self.port = port
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.sockets = []
        self.halt = threading.Event()

    def run(self):
        while (not self.halt.is_set() and len(self.sockets) < self.limit and
               time.monotonic() < self.deadline):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect_ex((harness.LOOPBACK, self.port))
            except OSError:
                sock.close()
                continue
            self.sockets.append(sock)

    def close(self):
        self.halt.set()
        self.join(timeout=30)
        for sock in self.sockets:
            sock.close()


class StopEdgesTest(HostTestCase):

    def test_sigterm_during_a_connect_flood_exits_well_before_the_drain_timeout(self):
        port = harness.free_port()
        config = harness.make_config(
            {"echo": {}},
            [harness.server_service("echo", "echo", port, backlog=4096)],
            drain_timeout_ms=DRAIN_TIMEOUT_MS)
        host = Host(self, config, "flood").start()
        floods = [ConnectFlood(port, 1500, 30) for _ in range(2)]
        for flood in floods:
            flood.start()
        try:
            harness.wait_until(
                lambda: sum(len(f.sockets) for f in floods) >= 300, 20,
                "the flood to open 300 connections")
            started = time.monotonic()
            host.stop(timeout=DRAIN_TIMEOUT_MS / 1000 + 10)
            took = time.monotonic() - started
        finally:
            for flood in floods:
                flood.close()
        log = host.log()
        # Idle echo sessions end with our FIN and a linger of at most 2 s
        # for the peer's; a session missed by the stop stayed open until
        # the 20 s drain timeout cut it.
        self.assertNotIn("still flushing", log)
        self.assertLess(took, harness.scaled(8.0),
                        "the stop took %.1f s of a %d ms drain timeout" %
                        (took, DRAIN_TIMEOUT_MS))

    def test_releasing_sessions_in_on_stopping_does_not_hang_the_stop(self):
        port = harness.free_port()
        config = harness.make_config(
            {"holder": {}},
            [harness.server_service("hold", "holder", port)],
            drain_timeout_ms=5000)
        host = Host(self, config, "holder").start()
        # Each session is kept by the plugin after its peer left: the
        # release in on_stopping is the last one and frees it there.
        for _ in range(20):
            harness.connect(port).close()
        harness.wait_until(
            lambda: host.status_json()["services"][0]["sessions"] == 0, 20,
            "the 20 sessions to close")
        host.stop(timeout=20)
        self.assertIn("holder: released", host.log())

    def test_a_plugin_thread_broadcasting_through_the_stop_is_safe(self):
        for round_ in range(3):
            port = harness.free_port()
            config = harness.make_config(
                {"holder": {"broadcast": True}},
                [harness.server_service("hold", "holder", port)],
                drain_timeout_ms=2000)
            host = Host(self, config, "broadcaster-%d" % round_).start()
            clients = [harness.connect(port) for _ in range(5)]
            harness.wait_until(lambda: "tick" in clients[0].recv(64).decode(),
                               10, "the first broadcast")
            host.stop(timeout=20)
            for sock in clients:
                sock.close()
            log = host.log()
            self.assertIn("holder: unloaded after", log)
            self.assertNotIn("ERROR", log)


if __name__ == "__main__":
    unittest.main()
