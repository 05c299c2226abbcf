"""Rooms (SPEC section 12) under load, through the real host: the
rooms_check plugin keeps 100 rooms ticking at 60 Hz and broadcasting, its
sessions hop between them (sometimes in two at once), and a thread of its
own closes rooms at random and makes new ones. The plugin checks the
guarantees from inside and reports them at on_unload; this test drives the
load, reads the broadcasts, looks at status, and reads the verdict:

  - no two callbacks of one room ever overlapped;
  - nothing of a room ran after its on_close;
  - every on_join was matched by exactly one on_leave, and each room had no
    member left at its on_close;
  - the members the host counts are the members the room saw join;
  - status lists the rooms of the generation with their members.
"""

import os
import selectors
import socket
import struct
import threading
import time
import unittest

import harness
from harness import HostTestCase, Host


def session_count():
    """2,000 in the normal build; fewer where every call costs more (the
    sanitizer builds, Wine), as the engine's stress test does."""
    stress = int(os.environ.get("IOCPHOST_STRESS_SESSIONS", "100000"))
    return max(100, min(2000, stress // 50))


class Readers(threading.Thread):
    """Reads every socket (bounded in time), counting broadcast packets."""

    def __init__(self, socks, seconds):
        super().__init__(daemon=True)
        self.socks = socks
        self.deadline = time.monotonic() + seconds
        self.packets = 0
        self.bytes = 0
        self.halt = threading.Event()

    def run(self):
        sel = selectors.DefaultSelector()
        for sock in self.socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        try:
            while not self.halt.is_set() and time.monotonic() < self.deadline:
                for key, _ in sel.select(timeout=0.1):
                    try:
                        data = key.fileobj.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    self.bytes += len(data)
                    self.packets += len(data) // 12  # 4 header + 8 room id
        finally:
            sel.close()


class RoomsTest(HostTestCase):

    def test_rooms_under_hopping_ticks_and_random_closes_keep_their_guarantees(self):
        port = harness.free_port()
        count = session_count()
        config = harness.make_config(
            {"rooms_check": {}},
            [harness.server_service("play", "rooms_check", port, "packet",
                                    max_sessions=count + 100,
                                    backlog=1024)],
            drain_timeout_ms=5000)
        host = Host(self, config, "rooms").start()
        socks = []
        try:
            for _ in range(count):
                socks.append(harness.connect(port, timeout=30))
            readers = Readers(socks, harness.scaled(60))
            readers.start()
            harness.wait_until(lambda: readers.packets >= count * 3, 60,
                               "broadcasts to reach the clients")
            status = host.status_json()
            generation = status["plugins"][0]["generations"][0]
            rooms = generation["rooms"]
            self.assertGreaterEqual(len(rooms), 90, rooms[:5])
            members = sum(room["members"] for room in rooms)
            self.assertGreater(members, 0, rooms[:5])
            # Let the sessions hop and the rooms churn a while longer, then
            # half the clients leave while still members.
            time.sleep(1.0)
            for sock in socks[: count // 2]:
                sock.close()
            time.sleep(0.5)
            text = str(host.control("status"))
            self.assertRegex(text, r"\d+ rooms with \d+ members")
            host.stop(timeout=30)
            readers.halt.set()
            readers.join(timeout=harness.scaled(10))
        finally:
            for sock in socks:
                sock.close()
        summary = harness.summary_fields(r"rooms_check summary:", host.log())
        self.assertIsNotNone(summary, "no rooms_check summary in the log")
        print("\nrooms: %d sessions; %s; clients read %d packets" %
              (count, " ".join("%s=%d" % kv for kv in summary.items()),
               readers.packets), file=__import__("sys").stderr)
        self.assertEqual(summary["overlaps"], 0)
        self.assertEqual(summary["after_close"], 0)
        self.assertEqual(summary["members_bad"], 0)
        self.assertEqual(summary["joins"], summary["leaves"])
        self.assertGreater(summary["leaves_ended"], 0)
        self.assertGreater(summary["leaves_closing"], 0)
        self.assertEqual(summary["opens"], summary["closes"])
        self.assertEqual(summary["rooms_made"], summary["closes"])
        self.assertGreater(summary["ticks"], 0)
        self.assertGreater(summary["hops"], count)
        self.assertNotIn("ERROR", host.log())


if __name__ == "__main__":
    unittest.main()
