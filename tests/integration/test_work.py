"""Work threads (SPEC section 12), checked with the worker plugin
(tests/integration/plugins/worker): blocking work runs off the I/O workers
and its result comes back in the session's order; a full queue answers
E_BUSY at once; a client gone before done gets done with ended = 1; a
graceful stop waits for work in flight, and gives up on it, with a log
line, when drain_timeout_ms passes."""

import struct
import time
import unittest

import harness
from harness import HostTestCase, Host

SUMMARY = r"worker summary:"
WORK, RESULT, BUSY, REFUSED, ECHO = 1, 2, 3, 4, 5


def work(token, sleep_ms):
    return struct.pack("<II", token, sleep_ms)


def long_ms(seconds):
    """A work long enough for the test to look while it runs (Wine: longer)."""
    return int(harness.scaled(seconds) * 1000)


class WorkTest(HostTestCase):

    def start(self, threads, queue_limit, drain_timeout_ms=5000):
        port = harness.free_port()
        config = harness.make_config(
            {"worker": {}},
            [harness.server_service("jobs", "worker", port, "packet")],
            threads=2, drain_timeout_ms=drain_timeout_ms)
        config["work"] = {"threads": threads, "queue_limit": queue_limit}
        host = Host(self, config, "worker").start()
        return host, port

    def wait_work(self, host, what, **want):
        def matches():
            work_status = host.status_json()["work"]
            return all(work_status[k] == v for k, v in want.items()) and \
                work_status
        return harness.wait_until(matches, 30, what)

    def summary(self, host):
        fields = harness.summary_fields(SUMMARY, host.log())
        self.assertIsNotNone(fields, "no worker summary in the log")
        self.assertEqual(fields["overlaps"], 0)
        self.assertEqual(fields["done"], fields["submitted"],
                         "every accepted work's done ran exactly once")
        return fields

    def test_results_arrive_while_the_io_serves_another_session(self):
        host, port = self.start(threads=2, queue_limit=8)
        client = harness.PacketClient(port)
        other = harness.PacketClient(port)
        # Two long works take both work threads; two short ones wait.
        client.send(WORK, work(1, long_ms(1.5)))
        client.send(WORK, work(2, long_ms(1.5)))
        client.send(WORK, work(3, 50))
        client.send(WORK, work(4, 50))
        self.wait_work(host, "both work threads busy", running=2, queued=2)
        # Every work thread is blocked: the I/O still answers at once.
        other.send(ECHO, b"ping")
        self.assertEqual(other.recv(timeout=5), (ECHO, b"ping"))
        self.assertEqual(host.status_json()["work"]["running"], 2,
                         "the echo was answered while the works still ran")
        results = {}
        while len(results) < 4:
            packet_id, payload = client.recv_matching(
                lambda i, p: True, timeout=30, what="a work result")
            self.assertEqual(packet_id, RESULT)
            token, result = struct.unpack("<II", payload)
            results[token] = result
        self.assertEqual(results, {t: t * 2 + 1 for t in (1, 2, 3, 4)})
        status = self.wait_work(host, "the works counted", completed=4)
        self.assertEqual(status["threads"], 2)
        self.assertEqual(status["rejected"], 0)
        text = host.control("status")
        self.assertIn("work: 2 threads, queued 0/8, running 0, completed 4, "
                      "rejected 0", text)
        client.close()
        other.close()
        host.stop()
        fields = self.summary(host)
        self.assertEqual(fields["submitted"], 4)
        self.assertEqual(fields["ended"], 0)

    def test_a_full_queue_answers_busy_to_the_plugin(self):
        host, port = self.start(threads=1, queue_limit=2)
        client = harness.PacketClient(port)
        client.send(WORK, work(1, long_ms(1.5)))
        self.wait_work(host, "the work thread busy", running=1)
        client.send(WORK, work(2, 10))
        client.send(WORK, work(3, 10))
        client.send(WORK, work(4, 10))
        # The refusal comes at once, long before the first work ends.
        self.assertEqual(client.recv(timeout=5),
                         (BUSY, struct.pack("<I", 4)))
        tokens = set()
        while len(tokens) < 3:
            packet_id, payload = client.recv(timeout=30)
            self.assertEqual(packet_id, RESULT)
            tokens.add(struct.unpack("<II", payload)[0])
        self.assertEqual(tokens, {1, 2, 3})
        self.assertEqual(host.status_json()["work"]["rejected"], 1)
        client.close()
        host.stop()
        fields = self.summary(host)
        self.assertEqual(fields["submitted"], 3)
        self.assertEqual(fields["busy"], 1)

    def test_a_client_gone_before_done_gets_done_with_ended(self):
        host, port = self.start(threads=2, queue_limit=8)
        client = harness.PacketClient(port)
        client.send(WORK, work(1, long_ms(1)))
        client.send(WORK, work(2, long_ms(1)))
        self.wait_work(host, "the works running", running=2)
        client.close()
        self.wait_work(host, "the works done", completed=2, running=0)
        host.stop()
        fields = self.summary(host)
        self.assertEqual(fields["submitted"], 2)
        self.assertEqual(fields["ended"], 2)

    def test_a_graceful_stop_waits_for_work_in_flight(self):
        host, port = self.start(threads=2, queue_limit=8,
                                drain_timeout_ms=60000)
        client = harness.PacketClient(port)
        client.send(WORK, work(1, long_ms(1)))
        client.send(WORK, work(2, long_ms(1)))
        client.send(WORK, work(3, long_ms(1)))
        self.wait_work(host, "the works running", running=2, queued=1)
        started = time.monotonic()
        host.stop(timeout=60)  # exit code 0
        # Two rounds of work had to end first.
        self.assertGreaterEqual(time.monotonic() - started,
                                2 * harness.scaled(1) - 0.5)
        fields = self.summary(host)
        self.assertEqual(fields["submitted"], 3)
        self.assertEqual(fields["done"], 3)
        self.assertEqual(fields["ended"], 3)
        client.close()

    def test_a_stop_gives_up_on_work_past_drain_timeout(self):
        host, port = self.start(threads=1, queue_limit=8,
                                drain_timeout_ms=300)
        client = harness.PacketClient(port)
        client.send(WORK, work(1, long_ms(20)))
        client.send(WORK, work(2, 10))
        self.wait_work(host, "the work running", running=1, queued=1)
        started = time.monotonic()
        host.stop(timeout=15)  # exit code 0, long before the work ends
        self.assertLess(time.monotonic() - started, harness.scaled(15))
        log = host.log()
        self.assertIn("drain_timeout_ms 300 passed with 1 work items running "
                      "and 1 queued (plugin worker", log)
        self.assertIn("plugin worker generation 1 stays loaded", log)
        # Its library stayed loaded: no on_unload, so no summary.
        self.assertIsNone(harness.summary_fields(SUMMARY, log))
        client.close()


if __name__ == "__main__":
    unittest.main()
