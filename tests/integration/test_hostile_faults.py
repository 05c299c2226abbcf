"""Faults against the real host (SPEC sections 2, 3 and 7): resets at random
points, half-closed peers, a plugin that misbehaves in every callback (the
hostile plugin's chaos services), and a backend killed with SIGKILL under a
gateway. Every byte the host accepted from a send is either delivered or
its session ends with a reason that says why; the plugin sees no broken
guarantee; no sanitizer reports (these tests run in the ASan and TSan
builds too). Seeds are fixed: a failure replays."""

import os
import random
import re
import socket
import struct
import sys
import threading
import time
import unittest

import harness
from harness import Host, HostTestCase, PacketClient, WaitTimeout

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "plugins", "hostile"))
import hostile_client as hc  # noqa: E402

CLEAN = ("local", "peer_closed")  # reasons that claim every byte arrived


def received_until_eof(sock, timeout=20.0):
    """Bytes read until EOF; a reset ends the count early (returns
    (bytes, True) for a clean EOF, (bytes, False) for a reset)."""
    total = 0
    deadline = time.monotonic() + harness.scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout("no EOF within %.1fs (%d bytes)" %
                              (harness.scaled(timeout), total))
        sock.settimeout(left)
        try:
            chunk = sock.recv(262144)
        except ConnectionResetError:
            return total, False
        except socket.timeout:
            continue
        if not chunk:
            return total, True
        total += len(chunk)


class FaultsTest(HostTestCase):

    def start_host(self, **extra):
        self.ports = {name: harness.free_port()
                      for name in ("echo-pkt", "echo-raw", "chaos-pkt")}
        services = [
            harness.server_service("echo-pkt", "hostile",
                                   self.ports["echo-pkt"], "packet"),
            harness.server_service("echo-raw", "hostile",
                                   self.ports["echo-raw"], "raw"),
            harness.server_service("chaos-pkt", "hostile",
                                   self.ports["chaos-pkt"], "packet",
                                   send_queue_limit_bytes=256 * 1024),
        ]
        config = harness.make_config({"hostile": {"log_sessions": True}},
                                     services, threads=2)
        self.host = Host(self, config, "hostile").start()

    def finish(self):
        """Stops the host and checks what every faults test must hold."""
        self.host.stop()
        log = self.host.log()
        totals = hc.summary(log)
        self.assertIsNotNone(totals, "no summary line")
        self.assertEqual(totals["violations"], 0)
        self.assertEqual(totals["sessions"], totals["disconnected"])
        hc.assert_no_sanitizer_reports(self, self.host)
        return totals

    def wait_idle(self, keep):
        """Waits until only `keep` sessions per service are open."""
        def idle():
            services = hc.status(self.host)["services"]
            return all(s["sessions"] == keep.get(s["name"], 0)
                       for s in services)
        harness.wait_until(idle, 30, "every faulty session to end")

    # --- resets ---------------------------------------------------------

    def reset_client(self, index):
        rng = random.Random(index)
        scenario = rng.randrange(7)
        service = ("echo-pkt", "echo-raw", "chaos-pkt")[
            0 if scenario < 3 else 1 if scenario < 5 else 2]
        port = self.ports[service]
        sock = socket.create_connection((harness.LOOPBACK, port),
                                        timeout=harness.scaled(10))
        sock.settimeout(harness.scaled(10))
        try:
            if scenario == 0:
                pass  # reset at once, maybe before the host accepted
            elif scenario in (1, 2):
                # Some whole packets, then part of one, then reset.
                for _ in range(rng.randrange(0, 20)):
                    sock.sendall(harness.pack(rng.randrange(100),
                                              rng.randbytes(rng.randrange(
                                                  0, 500))))
                whole = harness.pack(1, rng.randbytes(1000))
                sock.sendall(whole[:rng.randrange(1, len(whole))])
                if scenario == 2:
                    sock.recv(rng.randrange(1, 100))
            elif scenario in (3, 4):
                # Raw: a lot the host echoes, reset while it does.
                sock.sendall(rng.randbytes(rng.randrange(1000, 300000)))
                if scenario == 4:
                    sock.recv(rng.randrange(1, 10000))
            else:
                commands = [(hc.CMD_FLOOD, b""),
                            (hc.CMD_TIMERS, bytes([1, 3])),
                            (hc.CMD_LATE, bytes([rng.randrange(0, 30)])),
                            (hc.CMD_POST, b""), (hc.CMD_ON_SEND, b"x")]
                for _ in range(rng.randrange(1, 5)):
                    sock.sendall(harness.pack(*rng.choice(commands)))
                if rng.random() < 0.5:
                    sock.recv(rng.randrange(1, 50000))
        except OSError:
            pass  # the host may have ended it first (ON_SEND, id % 16)
        harness.abort(sock)

    def test_resets_at_random_points_leave_everyone_else_served(self):
        self.start_host()
        bystander = hc.Bystander(self.ports["echo-pkt"]).start_and_wait()
        raw_bystander = hc.Bystander(self.ports["echo-raw"], packet=False,
                                     seed=2).start_and_wait()
        clients = 400
        harness.run_parallel(
            lambda first: [self.reset_client(i)
                           for i in range(first, clients, 8)],
            [(i,) for i in range(8)], timeout=120)
        bystander.wait_rounds(10)
        raw_bystander.wait_rounds(10)
        self.wait_idle({"echo-pkt": 1, "echo-raw": 1})
        rounds = bystander.stop() + raw_bystander.stop()
        totals = self.finish()
        reasons = {}
        for _, _, reason in hc.session_ends(self.host.log()).values():
            reasons[reason] = reasons.get(reason, 0) + 1
        print("\nresets: %d clients reset at random points; reasons %s; "
              "bystanders echoed %d times; plugin: %s" %
              (clients, reasons, rounds, totals), file=sys.stderr)
        self.assertGreater(reasons.get("peer_reset", 0), clients // 4)

    # --- half-closed peers ------------------------------------------------

    def half_close_client(self, index):
        rng = random.Random(1000 + index)
        packet = index % 2 == 0
        service = "echo-pkt" if packet else "echo-raw"
        sock = harness.connect(self.ports[service], timeout=10)
        sent = bytearray()
        if packet:
            for _ in range(rng.randrange(1, 30)):
                sent += harness.pack(rng.randrange(1000),
                                     rng.randbytes(rng.randrange(0, 3000)))
        else:
            sent += rng.randbytes(rng.randrange(1, 200000))
        # Send everything while reading part of the echo, then FIN; the rest
        # must follow, then the host's FIN.
        early = harness.exchange(sock, bytes(sent),
                                 expect_len=rng.randrange(0, len(sent) // 2 +
                                                          8), timeout=30)
        sock.shutdown(socket.SHUT_WR)
        late = harness.read_until_eof(sock, timeout=30)
        sock.close()
        got = early + late
        hello = 12 if packet else 8
        self.assertEqual(got[hello:], bytes(sent), "client %d" % index)
        session_id = struct.unpack_from("<Q", got, 4 if packet else 0)[0]
        return session_id, len(got)

    def test_half_closed_peers_get_every_byte_then_eof(self):
        self.start_host()
        results = harness.run_parallel(self.half_close_client,
                                       [(i,) for i in range(60)], timeout=120)

        def all_ended():
            ends = hc.session_ends(self.host.log())
            return ends if all(i in ends for i, _ in results) else None
        ends = harness.wait_until(all_ended, 20, "every session's end")
        for session_id, received in results:
            _, accepted, reason = ends[session_id]
            self.assertEqual(reason, "peer_closed")
            self.assertEqual(accepted, received, "session %d" % session_id)
        self.finish()

    # --- a plugin that misbehaves ------------------------------------------

    def chaos_client(self, index):
        """A random script of chaos commands, then one way of ending.
        Returns (session id, ending, bytes received, clean EOF)."""
        rng = random.Random(5000 + index)
        sock = harness.connect(self.ports["chaos-pkt"], timeout=10)
        ending = rng.choice(["bye", "half_close", "late_disconnect",
                             "flood_no_read", "reset"])
        script = []
        for _ in range(rng.randrange(2, 10)):
            command = rng.choice([hc.CMD_ECHO, hc.CMD_ECHO, hc.CMD_TIMERS,
                                  hc.CMD_LATE, hc.CMD_ON_SEND, hc.CMD_POST])
            if command == hc.CMD_TIMERS:
                payload = bytes([rng.randrange(1, 5), rng.randrange(0, 20)])
            elif command == hc.CMD_LATE:
                payload = bytes([rng.randrange(0, 20), 0])
            else:
                payload = rng.randbytes(rng.randrange(0, 2000))
            script.append(harness.pack(command, payload))
        if ending == "bye":
            script.append(harness.pack(hc.CMD_BYE, b"bye"))
        elif ending == "late_disconnect":
            script.append(harness.pack(hc.CMD_LATE,
                                       bytes([rng.randrange(0, 20), 1])))
        elif ending == "flood_no_read":
            script.append(harness.pack(hc.CMD_FLOOD))
        try:
            for packet in script:
                sock.sendall(packet)
                time.sleep(rng.random() * 0.003)
            if ending == "half_close":
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the session may already have ended (ON_SEND, id % 16)
        hello = sock.recv(12)  # the id; everything else is counted below
        received, clean = len(hello), True
        if len(hello) == 12:
            session_id = struct.unpack_from("<Q", hello, 4)[0]
        else:  # the hello came in pieces
            rest = b""
            while len(hello) + len(rest) < 12:
                rest += sock.recv(12 - len(hello) - len(rest))
            hello += rest
            received = 12
            session_id = struct.unpack_from("<Q", hello, 4)[0]
        if ending == "reset":
            time.sleep(rng.random() * 0.02)
            harness.abort(sock)
            return session_id, ending, received, False
        if ending == "flood_no_read":
            # Never read again: the host must cut it at its queue limit.
            return session_id, ending, received, sock
        more, clean = received_until_eof(sock, timeout=30)
        sock.close()
        return session_id, ending, received + more, clean

    def test_every_accepted_byte_is_delivered_or_the_reason_says_why(self):
        self.start_host()
        bystander = hc.Bystander(self.ports["echo-pkt"]).start_and_wait()
        results = harness.run_parallel(self.chaos_client,
                                       [(i,) for i in range(120)],
                                       timeout=180)

        def all_ended():
            ends = hc.session_ends(self.host.log())
            return ends if all(r[0] in ends for r in results) else None
        ends = harness.wait_until(all_ended, 60, "every chaos session's end")
        for r in results:
            if r[1] == "flood_no_read":
                r[3].close()
        bystander.wait_rounds(5)
        bystander.stop()
        problems, by_reason, checked = [], {}, 0
        for session_id, ending, received, clean in results:
            _, accepted, reason = ends[session_id]
            by_reason[reason] = by_reason.get(reason, 0) + 1
            if reason in CLEAN:
                # The host promised delivery: the client must have it all.
                if ending in ("reset", "flood_no_read"):
                    continue  # we did not read it all ourselves
                checked += 1
                if not clean or received != accepted:
                    problems.append(
                        "session %d (%s): reason %s, host accepted %d bytes, "
                        "client received %d%s" %
                        (session_id, ending, reason, accepted, received,
                         "" if clean else " then a reset"))
            elif ending == "flood_no_read":
                if reason != "send_queue_full":
                    problems.append("session %d (flood): reason %s" %
                                    (session_id, reason))
            elif reason not in ("peer_reset", "send_queue_full"):
                problems.append("session %d (%s): reason %s" %
                                (session_id, ending, reason))
        totals = self.finish()
        print("\nchaos: %d sessions, reasons %s; %d clean ends checked byte "
              "for byte; plugin: %s" % (len(results), by_reason, checked,
                                        totals), file=sys.stderr)
        self.assertEqual(problems, [], "\n".join(problems))
        self.assertGreater(checked, 40)
        self.assertGreater(by_reason.get("send_queue_full", 0), 0)
        self.assertGreater(totals["late_refused"], 0,
                           "no call on an ended session was exercised")


# --- a backend killed with SIGKILL under a gateway --------------------------

GATEWAY_ERROR = 0xFFFF
REPLY = re.compile(rb"reply:(\d+):(.*)\Z", re.S)


class BackendKilledTest(HostTestCase):

    def test_gateway_reconnects_after_its_backend_is_killed(self):
        backend_port, players_port = harness.free_port(), harness.free_port()
        backend_config = harness.make_config(
            {"backend": {}},
            [harness.server_service("game", "backend", backend_port,
                                    "packet")], name="backend")
        gateway_config = harness.make_config(
            {"gateway": {"players_service": "players",
                         "backend_service": "backend"}},
            [harness.server_service("players", "gateway", players_port,
                                    "packet"),
             harness.client_service(
                 "backend", "gateway", backend_port, "packet", sessions=1,
                 connect_timeout_ms=2000,
                 reconnect={"min_delay_ms": 50, "max_delay_ms": 500,
                            "jitter": 0.2})],
            name="gateway")
        backend = Host(self, backend_config, "backend").start()
        gateway = Host(self, gateway_config, "gateway").start()
        players = [PacketClient(players_port) for _ in range(20)]

        def answered(up):
            def check():
                players[0].send(1, b"probe")
                try:
                    packet = players[0].recv(timeout=1.0)
                except WaitTimeout:
                    return False
                self.assertIsNotNone(packet, "the gateway closed a player")
                return (packet[0] != GATEWAY_ERROR) == up
            return check

        def round_trip(label):
            ids = set()
            for i, p in enumerate(players):
                payload = b"%s-%d" % (label, i)
                p.send(7, payload)
                packet_id, got = p.recv(timeout=10)
                match = REPLY.match(got)
                self.assertEqual(packet_id, 7)
                self.assertIsNotNone(match, got[:80])
                self.assertEqual(match.group(2), payload)
                ids.add(int(match.group(1)))
            return ids

        harness.wait_until(answered(True), 30, "routing through the backend")
        before = round_trip(b"before")
        for round_ in range(2):
            backend.kill()  # SIGKILL: no FIN, no goodbye
            harness.wait_until(answered(False), 30,
                               "the gateway to notice the backend is gone")
            backend = Host(self, backend_config,
                           "backend-%d" % round_).start()
            started = time.monotonic()
            harness.wait_until(answered(True), 30, "the gateway to reconnect")
            print("\nbackend killed (round %d): the gateway reconnected %.0f "
                  "ms after the new backend was up" %
                  (round_, (time.monotonic() - started) * 1000),
                  file=sys.stderr)
            self.assertEqual(round_trip(b"after-%d" % round_), before,
                             "players keep their sessions")
        status = hc.service_status(gateway, "backend")
        self.assertGreaterEqual(status["connects"], 3)
        for p in players:
            p.close()
        gateway.stop()
        backend.stop()
        hc.assert_no_sanitizer_reports(self, gateway)


if __name__ == "__main__":
    unittest.main()
