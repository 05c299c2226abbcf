"""Limits against the real host (SPEC section 7): slow readers are cut at
send_queue_limit_bytes with the host's memory bounded; silent sessions by
idle_timeout_ms; trickling ones by incomplete_timeout_ms; a connection flood
past max_sessions is turned away and counted while 50 legitimate clients are
served throughout (their latency is reported, not asserted)."""

import os
import random
import select
import socket
import struct
import sys
import threading
import time
import unittest

import harness
from harness import Host, HostTestCase, PacketClient

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "plugins", "hostile"))
import hostile_client as hc  # noqa: E402

MIB = 1 << 20
SOCKET_SLACK = 256 * 1024  # the kernel's buffering, run to run
MEMORY_SLACK = 8 * MIB     # the host's own growth beside the queues


class SlowReaderTest(HostTestCase):

    def test_slow_readers_are_cut_at_the_queue_limit_memory_stays_bounded(self):
        """Each slow reader is cut once the host's queue for it would pass
        send_queue_limit_bytes: the host accepted at most the limit plus
        what the kernel holds for a reader that never reads (measured here
        the same way: SOCKET_SLACK covers its variation, well under the
        limit, so a limit applied twice over fails). The host's peak memory
        grows by at most every queue full at once plus MEMORY_SLACK."""
        readers, limit = 24, 1 * MIB
        push_port, echo_port = harness.free_port(), harness.free_port()
        kernel = hc.socket_buffer_bytes(rcvbuf=4096)
        config = harness.make_config(
            {"hostile": {"log_sessions": True, "push_chunk": 16384,
                         "push_burst": 8}},
            [harness.server_service("push-raw", "hostile", push_port, "raw",
                                    send_queue_limit_bytes=limit),
             harness.server_service("echo-pkt", "hostile", echo_port,
                                    "packet")])
        host = Host(self, config, "hostile").start()
        pid = hc.host_pid(host)
        bystander = hc.Bystander(echo_port).start_and_wait()
        bystander.wait_rounds(5)
        hc.reset_peak(pid)
        base = hc.memory_kib(pid)["VmRSS"]
        socks = [hc.small_receive_buffer_socket(push_port)
                 for _ in range(readers)]
        # Each reads its hello (the session id), then never reads again.
        ids = [hc.hello_raw(s) for s in socks]

        def all_cut():
            ends = hc.session_ends(host.log())
            cut = [ends[i] for i in ids if i in ends]
            return cut if len(cut) == readers else None

        cut = harness.wait_until(all_cut, 60, "every slow reader to be cut")
        reasons = sorted(set(v[2] for v in cut))
        self.assertEqual(reasons, ["send_queue_full"])
        accepted = [v[1] for v in cut]
        bystander.wait_rounds(10)
        log = host.log()
        lines = [l for l in log.splitlines()
                 if "send_queue_limit_bytes" in l and "push-raw" in l]
        self.assertEqual(len(lines), readers, "one log line per slow reader")
        mem = hc.memory_kib(pid)
        peak = mem["VmHWM"] - base
        bound = readers * limit // 1024 + MEMORY_SLACK // 1024
        most = limit + kernel + SOCKET_SLACK
        print("\nslow readers: %d readers, send_queue_limit_bytes %d KiB, "
              "the kernel holds %d KiB for one: each cut after the host "
              "accepted %d..%d KiB for it (bound %d KiB); host RSS before %d "
              "KiB, peak +%d KiB (bound %d x %d KiB + %d MiB = %d KiB), now "
              "%d KiB" %
              (readers, limit // 1024, kernel // 1024, min(accepted) // 1024,
               max(accepted) // 1024, most // 1024, base, peak, readers,
               limit // 1024, MEMORY_SLACK // MIB, bound, mem["VmRSS"]),
              file=sys.stderr)
        self.assertLessEqual(max(accepted), most,
                             "a slow reader got more than the queue limit "
                             "plus what the kernel holds")
        # Sanitizer builds report, do not assert: their allocators keep
        # freed memory in quarantine and shadow every byte.
        if not hc.sanitized(pid):
            self.assertLess(peak, bound)
        # What the host had accepted for them was thrown away: each stream
        # ends with a reset, not a FIN that would pass it off as complete.
        for s in socks[:3]:
            _, end = harness.read_to_end(s, timeout=30)
            self.assertEqual(end, "reset")
        for s in socks:
            s.close()
        bystander.stop()
        host.stop()
        self.assertEqual(hc.summary(host.log())["violations"], 0)
        hc.assert_no_sanitizer_reports(self, host)


class SlowSenderTest(HostTestCase):

    def start(self, **limits):
        self.port = harness.free_port()
        config = harness.make_config(
            {"hostile": {"log_sessions": True}},
            [harness.server_service("echo-pkt", "hostile", self.port,
                                    "packet", **limits)])
        self.host = Host(self, config, "hostile").start()

    def wait_end(self, session_id, timeout=10):
        return harness.wait_until(
            lambda: hc.session_ends(self.host.log()).get(session_id), timeout,
            "session %d to end" % session_id)

    def test_idle_timeout_cuts_silent_sessions_not_chatty_ones(self):
        """idle_timeout_ms counts from a session's last receive (its start,
        for one that never talks): a silent peer is cut idle after it
        connected, a peer that talked once idle after that, not earlier and
        not much later; a chatty peer (every 100 ms) stays. The window is
        [idle, idle + idle/2], idle being 1 s scaled (3 s under Wine): a
        deadline at half or twice the setting falls outside it."""
        idle = harness.scaled(1.0)
        margin, early = idle / 2, 0.02  # 20 ms: the host's clock is in ms
        self.start(idle_timeout_ms=int(idle * 1000))
        chatty = PacketClient(self.port)
        chatty_id = hc.hello_packet(chatty)
        chatty_stop = threading.Event()
        chatty_errors = []

        def talk():
            try:
                i = 0
                while not chatty_stop.wait(0.1):
                    chatty.send(3, b"ping %d" % i)
                    self.assertEqual(chatty.recv(), (3, b"ping %d" % i))
                    i += 1
            except BaseException as error:  # reported below
                chatty_errors.append(error)

        talker = threading.Thread(target=talk, daemon=True)
        talker.start()
        before = {}
        after = {}
        clients = {}
        ids = {}
        for name in ("silent", "quiet"):
            before[name] = time.monotonic()
            clients[name] = PacketClient(self.port)
            ids[name] = hc.hello_packet(clients[name])
            after[name] = time.monotonic()
        # The quiet one talks once, 0.6 idle in (the scenario's pause, not a
        # wait for a condition); its idle time starts again from there.
        time.sleep(max(0.0, after["quiet"] + 0.6 * idle - time.monotonic()))
        before["quiet"] = time.monotonic()
        clients["quiet"].send(3, b"once")
        self.assertEqual(clients["quiet"].recv(), (3, b"once"))
        after["quiet"] = time.monotonic()
        cut = {}
        deadline = time.monotonic() + idle * 3 + harness.scaled(5)
        while len(cut) < 2 and time.monotonic() < deadline:
            waiting = [c.sock for n, c in clients.items() if n not in cut]
            readable, _, _ = select.select(waiting, [], [], 0.5)
            now = time.monotonic()
            for name, client in clients.items():
                if client.sock in readable:
                    try:
                        data = client.sock.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    self.assertEqual(data, b"", "%s got %r" % (name, data))
                    cut[name] = now
        chatty_stop.set()
        talker.join(harness.scaled(10))
        self.assertEqual(chatty_errors, [])
        self.assertEqual(sorted(cut), ["quiet", "silent"], "both are cut")
        report = []
        for name in ("silent", "quiet"):
            low, high = cut[name] - after[name], cut[name] - before[name]
            report.append("%s cut %.0f..%.0f ms after its last byte" %
                          (name, low * 1000, high * 1000))
            self.assertGreaterEqual(high, idle - early,
                                    "%s cut early: %.3f s" % (name, high))
            self.assertLessEqual(low, idle + margin,
                                 "%s cut late: %.3f s" % (name, low))
            self.assertEqual(self.wait_end(ids[name])[2], "idle_timeout")
        print("\nidle: idle_timeout_ms %d: %s; the chatty one stayed" %
              (idle * 1000, ", ".join(report)), file=sys.stderr)
        self.assertNotIn(chatty_id, hc.session_ends(self.host.log()))
        for client in list(clients.values()) + [chatty]:
            client.close()
        self.host.stop()
        hc.assert_no_sanitizer_reports(self, self.host)

    def test_incomplete_timeout_cuts_a_trickling_peer(self):
        """A slowloris never idles: one byte of a 1000-byte packet every
        100 ms. incomplete_timeout_ms cuts it; a peer whose packets arrive
        in slow pieces but complete in time stays."""
        self.start(idle_timeout_ms=2000, incomplete_timeout_ms=400,
                   max_packet_bytes=2000, max_recv_bytes=4096)
        trickler = PacketClient(self.port)
        trickler_id = hc.hello_packet(trickler)
        steady = PacketClient(self.port)
        steady_id = hc.hello_packet(steady)
        trickler.sock.sendall(struct.pack("<HH", 1000, 1))
        started = time.monotonic()
        cut_after = None
        for i in range(20):  # 2 s
            if cut_after is None:
                try:
                    trickler.sock.send(b"t")
                    if trickler.recv(timeout=0.001) is None:
                        cut_after = time.monotonic() - started
                except harness.WaitTimeout:
                    pass
                except OSError:
                    cut_after = time.monotonic() - started
            whole = harness.pack(2, b"step %d" % i)
            steady.sock.sendall(whole[:5])
            time.sleep(0.05)
            steady.sock.sendall(whole[5:])
            self.assertEqual(steady.recv(), (2, b"step %d" % i))
            time.sleep(0.05)
        if cut_after is None:
            self.assertIsNone(trickler.recv(timeout=10))
            cut_after = time.monotonic() - started
        print("\nslowloris: trickler cut after %.0f ms (incomplete_timeout_ms "
              "400, idle_timeout_ms 2000)" % (cut_after * 1000),
              file=sys.stderr)
        self.assertGreaterEqual(cut_after, 0.4)
        self.assertEqual(self.wait_end(trickler_id)[2], "protocol_error")
        lines = hc.host_lines_about(self.host.log(), trickler_id)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("incomplete_timeout_ms 400", lines[0])
        self.assertIn("echo-pkt", lines[0])
        self.assertNotIn(steady_id, hc.session_ends(self.host.log()))
        trickler.close()
        steady.close()
        self.host.stop()
        hc.assert_no_sanitizer_reports(self, self.host)

    def test_incomplete_timeout_ms_is_checked_by_the_config(self):
        port = harness.free_port()
        for value, fragment in ((-1, "from 0 to"), ("30000", "integer"),
                                (1.5, "integer")):
            config = harness.make_config(
                {"hostile": {}},
                [harness.server_service("echo-pkt", "hostile", port, "packet",
                                        incomplete_timeout_ms=value)])
            host = Host(self, config, "check")
            result = harness.run_cli(["check", "-c", host.config_path])
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertIn("services[0].incomplete_timeout_ms", result.stderr)
            self.assertIn(fragment, result.stderr)
        config = harness.make_config(
            {"hostile": {}},
            [harness.server_service("echo-pkt", "hostile", port, "packet",
                                    incomplete_timeout_ms=0)])
        host = Host(self, config, "check")
        result = harness.run_cli(["check", "-c", host.config_path])
        self.assertEqual(result.returncode, 0, result.stderr)


class FloodTest(HostTestCase):

    def test_flood_past_max_sessions_is_counted_and_players_are_served(self):
        players, max_sessions = 50, 60
        port = harness.free_port()
        config = harness.make_config(
            {"hostile": {}},
            [harness.server_service("echo-pkt", "hostile", port, "packet",
                                    max_sessions=max_sessions)])
        host = Host(self, config, "hostile").start()
        clients = [hc.Bystander(port, seed=i, interval=0.005)
                   for i in range(players)]
        for c in clients:
            c.start_and_wait()
        for c in clients:
            c.wait_rounds(3)
        baseline = [len(c.latencies) for c in clients]

        counts = {"rejected": 0, "admitted": 0, "failed": 0}
        lock = threading.Lock()
        # Bounded both ways, so the flood does not starve tests running
        # next to this one: at most 3 s and 3000 connections.
        flood_seconds, flood_max = 3.0, 3000

        def flood(index):
            rng = random.Random(index)
            deadline = time.monotonic() + harness.scaled(flood_seconds)
            held = []
            while time.monotonic() < deadline:
                with lock:
                    if sum(counts.values()) >= flood_max:
                        break
                try:
                    sock = socket.create_connection((harness.LOOPBACK, port),
                                                    timeout=5)
                except OSError:
                    with lock:
                        counts["failed"] += 1
                    continue
                sock.settimeout(harness.scaled(5))
                try:
                    first = sock.recv(64)
                except OSError:
                    first = b""
                kind = "admitted" if first else "rejected"
                with lock:
                    counts[kind] += 1
                if first and rng.random() < 0.5:
                    held.append(sock)  # keep a slot busy for a while
                else:
                    sock.close()
                while len(held) > 2:
                    held.pop(0).close()
            for sock in held:
                sock.close()

        started = time.monotonic()
        harness.run_parallel(flood, [(i,) for i in range(6)],
                             timeout=flood_seconds + 60)
        elapsed = time.monotonic() - started
        for c in clients:
            c.wait_rounds(2)
        samples = []
        rounds = 0
        for c, skip in zip(clients, baseline):
            rounds += c.rounds
            samples += c.latencies[skip:]
            c.stop()
        p50, p99, worst = hc.percentiles(samples)
        echo = hc.service_status(host, "echo-pkt")
        print("\nflood: %d connection attempts in %.1f s past max_sessions "
              "%d (%d rejected and counted, %d admitted into free slots, %d "
              "failed to connect); %d players exchanged %d packets meanwhile, "
              "round trip p50 %.2f ms, p99 %.2f ms, max %.2f ms" %
              (sum(counts.values()), elapsed, max_sessions,
               echo["rejected"], counts["admitted"], counts["failed"],
               players, rounds, p50, p99, worst), file=sys.stderr)
        self.assertGreater(counts["rejected"], 0)
        self.assertEqual(echo["rejected"], counts["rejected"])
        log = host.log()
        self.assertIn("max_sessions %d reached" % max_sessions, log)
        host.stop()
        hc.assert_no_sanitizer_reports(self, host)


if __name__ == "__main__":
    unittest.main()
