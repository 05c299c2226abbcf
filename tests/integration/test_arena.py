"""The arena sample (plugins/arena, PROTOCOL.md) through the real host:
matchmaking into rooms of `capacity` players, the 20 Hz STATE tick, match
results saved to SQLite through the work threads, its settings refused by
`iocphost check`, and a reload under play: players in old rooms keep the
old code's STATE, new rooms get the new code's, and no client ever receives
two interleaved streams."""

import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
import unittest

import harness
from harness import HostTestCase, Host

JOIN, MOVE, CHAT, LEAVE = 1, 2, 3, 4
WELCOME, STATE, CHAT_FROM, MATCH_END, ERROR = 101, 102, 103, 104, 199
TIME_UP, PLAYERS_LEFT = 1, 2

V2_DIR = os.path.join(harness.BUILD_DIR, "tests", "integration", "plugins",
                      "arena_v2")


def parse_welcome(payload):
    version, capacity, player, room, hz, seconds = struct.unpack(
        "<HHIQHH", payload)
    return {"version": version, "capacity": capacity, "player": player,
            "room": room, "hz": hz, "seconds": seconds}


def parse_state(payload):
    version, count, tick, room = struct.unpack_from("<HHIQ", payload)
    players = {}
    for i in range(count):
        player, x, y, score = struct.unpack_from("<IiiI", payload, 16 + 16 * i)
        players[player] = (x, y, score)
    return {"version": version, "tick": tick, "room": room,
            "players": players}


def parse_match_end(payload):
    version, reason, duration, room, winner, count, _ = struct.unpack_from(
        "<HHIQIHH", payload)
    players = {}
    for i in range(count):
        player, score, left = struct.unpack_from("<III", payload, 24 + 12 * i)
        players[player] = (score, left)
    return {"version": version, "reason": reason, "duration_ms": duration,
            "room": room, "winner": winner, "players": players}


class Player:
    """One arena client; a thread of its own reads every packet, kept with
    the time it arrived, so no stream is missed while the test acts."""

    def __init__(self, port, name):
        self.name = name
        self.client = harness.PacketClient(port, timeout=10)
        self.packets = []  # (monotonic time, id, payload)
        self.cond = threading.Condition()
        self.closed = False
        self.halt = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while not self.halt.is_set():
            try:
                packet = self.client._recv_before(time.monotonic() + 0.2)
            except harness.WaitTimeout:
                continue
            except OSError:
                packet = None
            with self.cond:
                if packet is None:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.packets.append((time.monotonic(),) + packet)
                self.cond.notify_all()

    def send(self, packet_id, payload=b""):
        self.client.send(packet_id, payload)

    def join(self):
        """JOIN; the WELCOME that answers it."""
        with self.cond:
            after = len(self.packets)
        self.send(JOIN, self.name.encode())
        return parse_welcome(self.wait(WELCOME, after=after)[2])

    def move(self, x, y):
        self.send(MOVE, struct.pack("<ii", x, y))

    def wait(self, packet_id, accept=lambda payload: True, timeout=10.0,
             after=0):
        """The first packet of that id from index `after` on that accept()
        takes: (index, time, payload)."""
        deadline = time.monotonic() + harness.scaled(timeout)
        with self.cond:
            while True:
                for i in range(after, len(self.packets)):
                    at, pid, payload = self.packets[i]
                    if pid == packet_id and accept(payload):
                        return i, at, payload
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise harness.WaitTimeout(
                        "%s: no packet %d within %.1fs (%d packets, ids %s)" %
                        (self.name, packet_id, harness.scaled(timeout),
                         len(self.packets),
                         sorted({p[1] for p in self.packets})))
                self.cond.wait(min(left, 0.2))

    def states(self):
        with self.cond:
            return [(at, parse_state(p)) for at, pid, p in self.packets
                    if pid == STATE]

    def close(self):
        self.halt.set()
        self.client.close()
        self.reader.join(timeout=harness.scaled(5))


def assert_one_stream(test, player, room, version):
    """Every STATE this player got came from its room, in that version,
    each tick exactly once and in order: no second stream interleaved."""
    states = [s for _, s in player.states()]
    test.assertGreater(len(states), 0, "%s got no STATE" % player.name)
    for s in states:
        test.assertEqual((s["room"], s["version"]), (room, version),
                         "%s: a STATE of another room or version" %
                         player.name)
    ticks = [s["tick"] for s in states]
    test.assertEqual(ticks, list(range(ticks[0], ticks[0] + len(ticks))),
                     "%s: ticks repeated or skipped: %s" %
                     (player.name, ticks[:80]))


class ArenaTest(HostTestCase):

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="iocphost-arena-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.db_path = os.path.join(self.folder, "results.db")
        self.players = []
        self.addCleanup(self.close_players)

    def close_players(self):
        for p in self.players:
            p.close()

    def settings(self, capacity, seconds):
        return {"match": {"capacity": capacity, "seconds": seconds},
                "db": {"path": self.db_path}}

    def start(self, capacity, seconds, plugin_path=None):
        self.port = harness.free_port()
        config = harness.make_config(
            {"arena": self.settings(capacity, seconds)},
            [harness.server_service("play", "arena", self.port, "packet")])
        if plugin_path:
            config["plugins"][0]["path"] = plugin_path
        self.host = Host(self, config, "arena").start()
        return self.host

    def player(self, name):
        p = Player(self.port, name)
        self.players.append(p)
        return p

    def saved_matches(self):
        return self.host.log().count("saved as match")

    def read_db(self):
        with sqlite3.connect(self.db_path) as db:
            matches = db.execute(
                "SELECT id, room_id, arena_version, reason, duration_ms, "
                "players FROM matches ORDER BY id").fetchall()
            players = db.execute(
                "SELECT match_id, player_id, name, score, left_early FROM "
                "match_players ORDER BY match_id, player_id").fetchall()
        return matches, players

    def test_capacity_plus_one_joiners_make_two_rooms(self):
        self.start(capacity=3, seconds=60)
        first = [self.player("p%d" % i) for i in range(4)]
        welcomes = [p.join() for p in first]
        rooms = [w["room"] for w in welcomes]
        self.assertEqual(rooms[0], rooms[1])
        self.assertEqual(rooms[0], rooms[2])
        self.assertNotEqual(rooms[3], rooms[0], "the 4th joiner of a room "
                            "of 3 must go to a new room")
        self.assertEqual(sorted(w["player"] for w in welcomes[:3]), [1, 2, 3])
        self.assertEqual({(w["version"], w["capacity"], w["hz"])
                          for w in welcomes}, {(1, 3, 20)})
        # The full room plays: STATE with its three players.
        for p in first[:3]:
            _, _, payload = p.wait(STATE)
            self.assertEqual(sorted(parse_state(payload)["players"]),
                             [1, 2, 3])
        gen = self.host.status_json()["plugins"][0]["generations"][0]
        members = sorted(r["members"] for r in gen["rooms"])
        self.assertEqual(members, [1, 3], gen["rooms"])
        # CHAT reaches the room, with the sender's id and name.
        first[0].send(CHAT, b"hello room")
        for p in first[:3]:
            _, _, payload = p.wait(CHAT_FROM)
            self.assertEqual(payload[:4], struct.pack("<I",
                                                      welcomes[0]["player"]))
            self.assertEqual(payload[4:20].rstrip(b"\0"), b"p0")
            self.assertEqual(payload[20:], b"hello room")
        # The second room fills with two more and starts.
        more = [self.player("q%d" % i) for i in range(2)]
        self.assertEqual({p.join()["room"] for p in more}, {rooms[3]})
        for p in [first[3]] + more:
            _, _, payload = p.wait(STATE)
            state = parse_state(payload)
            self.assertEqual(state["room"], rooms[3])
            self.assertEqual(len(state["players"]), 3)
        # The lone 4th player heard nothing of the first room's chat.
        self.assertEqual([pid for _, pid, _ in first[3].packets
                          if pid == CHAT_FROM], [])

    def test_state_ticks_at_20_hz_with_moves_and_scores(self):
        self.start(capacity=2, seconds=60)
        a, b = self.player("a"), self.player("b")
        wa = a.join()
        b.join()
        index, _, _ = a.wait(STATE)
        a.move(300, 400)
        a.move(-5, 5000)  # clamped into the world: (0, 1000)
        index, _, payload = a.wait(
            STATE, lambda p: parse_state(p)["players"][wa["player"]][2] == 2,
            after=index)
        self.assertEqual(parse_state(payload)["players"][wa["player"]],
                         (0, 1000, 2))
        # Over 40 ticks (2 s at 20 Hz): the server's tick numbers run on
        # without a gap or a repeat, and their arrival rate is 20 Hz within
        # a margin any loaded machine keeps (the ticks do not drift, so a
        # late one is followed by an early one).
        first, t0, _ = a.wait(STATE, after=index + 1)
        last, t1, _ = a.wait(STATE, after=first + 40, timeout=20)
        seconds = t1 - t0
        states = [parse_state(p) for _, pid, p in a.packets[first:last + 1]
                  if pid == STATE]
        ticks = [s["tick"] for s in states]
        self.assertEqual(ticks, list(range(ticks[0], ticks[0] + len(ticks))))
        rate = (len(ticks) - 1) / seconds
        print("\narena: %d STATE in %.2f s: %.1f Hz" %
              (len(ticks), seconds, rate), file=__import__("sys").stderr)
        self.assertGreater(rate, 12, "STATE at %.1f Hz, not 20" % rate)
        self.assertLess(rate, 30, "STATE at %.1f Hz, not 20" % rate)
        assert_one_stream(self, a, wa["room"], 1)

    def test_finished_matches_are_saved_in_sqlite(self):
        self.start(capacity=2, seconds=1)
        a1, a2, b1, b2 = (self.player(n) for n in ("a1", "a2", "b1", "b2"))
        wa1, wa2 = a1.join(), a2.join()
        wb1, wb2 = b1.join(), b2.join()
        self.assertEqual(wa1["room"], wa2["room"])
        self.assertEqual(wb1["room"], wb2["room"])
        self.assertNotEqual(wa1["room"], wb1["room"])
        # Room a plays to the end of its second; a1 moves 3 times, a2 once.
        a1.wait(STATE)
        a2.wait(STATE)
        for i in range(3):
            a1.move(10 * i, 10)
        a2.move(5, 5)
        # Room b ends when b1 leaves.
        b1.wait(STATE)
        b1.send(LEAVE)
        _, _, end_b = b2.wait(MATCH_END)
        end_b = parse_match_end(end_b)
        self.assertEqual(end_b["reason"], PLAYERS_LEFT)
        self.assertEqual(end_b["players"][wb1["player"]], (0, 1))
        _, _, end_a = a1.wait(MATCH_END)
        end_a = parse_match_end(end_a)
        self.assertEqual(end_a["reason"], TIME_UP)
        self.assertEqual(end_a["winner"], wa1["player"])
        self.assertEqual(end_a["players"], {wa1["player"]: (3, 0),
                                            wa2["player"]: (1, 0)})
        self.assertGreaterEqual(end_a["duration_ms"], 900)
        a2.wait(MATCH_END)
        # Free to play again at once: a new room.
        again = a1.join()
        self.assertNotEqual(again["room"], wa1["room"])
        harness.wait_until(lambda: self.saved_matches() >= 2, 20,
                           "both results to be saved")
        # Read the file the host wrote once it has stopped (the Windows
        # build's DLL writes the same format).
        self.host.stop()
        matches, players = self.read_db()
        by_room = {m[1]: m for m in matches}
        self.assertEqual(sorted(by_room), sorted([wa1["room"], wb1["room"]]))
        ma = by_room[wa1["room"]]
        self.assertEqual(ma[2:4], (1, "time_up"))
        self.assertGreaterEqual(ma[4], 900)
        self.assertLess(ma[4], harness.scaled(10) * 1000)
        self.assertEqual(ma[5], 2)
        mb = by_room[wb1["room"]]
        self.assertEqual(mb[2:4], (1, "players_left"))
        rows = {(m, name): (score, left)
                for m, _, name, score, left in players}
        self.assertEqual(rows[(ma[0], "a1")], (3, 0))
        self.assertEqual(rows[(ma[0], "a2")], (1, 0))
        self.assertEqual(rows[(mb[0], "b1")], (0, 1))
        self.assertEqual(rows[(mb[0], "b2")], (0, 0))
        self.assertNotIn("ERROR", self.host.log())

    def test_check_refuses_settings_out_of_range(self):
        cases = [({"match": {"capacity": 1}}, "found 1"),
                 ({"match": {"capacity": 101}}, "found 101"),
                 ({"match": {"capacity": "four"}}, 'found "four"'),
                 ({"match": {"seconds": 0}}, "/match/seconds"),
                 ({"db": {"path": ""}}, "/db/path")]
        for settings, found in cases:
            with self.subTest(settings=settings):
                config = harness.make_config(
                    {"arena": settings},
                    [harness.server_service("play", "arena",
                                            harness.free_port(), "packet")])
                host = Host(self, config, "arena-check")
                result = harness.run_cli(["check", "-c", host.config_path])
                output = result.stdout + result.stderr
                self.assertEqual(result.returncode, 1, output)
                self.assertIn(found, output)
                if "capacity" in str(settings):
                    self.assertIn("/match/capacity must be an integer from 2 "
                                  "to 100", output)
        config = harness.make_config(
            {"arena": self.settings(2, 5)},
            [harness.server_service("play", "arena", harness.free_port(),
                                    "packet")])
        result = harness.run_cli(
            ["check", "-c", Host(self, config, "arena-check").config_path])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_reload_under_play_keeps_old_rooms_on_old_code(self):
        v2 = os.path.join(V2_DIR, "arena_v2" + harness.PLUGIN_SUFFIX)
        self.assertTrue(os.path.isfile(v2), "%s is not built" % v2)
        deploy_dir = os.path.join(self.folder, "deploy")
        os.mkdir(deploy_dir)
        deployed = os.path.join(deploy_dir, "arena" + harness.PLUGIN_SUFFIX)
        shutil.copyfile(harness.plugin_path("arena"), deployed)
        self.start(capacity=2, seconds=600,
                   plugin_path=os.path.join(deploy_dir, "arena"))
        old = [self.player("old%d" % i) for i in range(2)]
        old_room = {p.join()["room"] for p in old}
        self.assertEqual(len(old_room), 1)
        old_room = old_room.pop()
        for p in old:
            p.wait(STATE)

        # Deploy version 2 the way an operator does, and reload.
        temporary = deployed + ".new"
        shutil.copyfile(v2, temporary)
        os.replace(temporary, deployed)
        reply = self.host.control("reload", timeout=30)
        self.assertTrue(reply.ok, reply)
        self.assertIn("2.0.0", reply)
        reloaded = [len(p.packets) for p in old]

        new = [self.player("new%d" % i) for i in range(2)]
        welcomes = [p.join() for p in new]
        self.assertEqual({w["version"] for w in welcomes}, {2})
        new_room = welcomes[0]["room"]
        self.assertEqual(welcomes[1]["room"], new_room)
        self.assertNotEqual(new_room, old_room)
        # Both rooms play side by side for 40 ticks of the new one.
        first, _, _ = new[0].wait(STATE)
        new[0].wait(STATE, after=first + 40, timeout=20)
        for p in old:
            self.assertGreater(len(p.states()), 40)
            _, _, payload = p.wait(STATE, after=reloaded[old.index(p)])
            self.assertEqual(parse_state(payload)["version"], 1)
            assert_one_stream(self, p, old_room, 1)
        for p in new:
            assert_one_stream(self, p, new_room, 2)

        # Each match ends by a LEAVE; MATCH_END in each room's version, and
        # both generations save to the same database.
        old[0].send(LEAVE)
        new[0].send(LEAVE)
        self.assertEqual(parse_match_end(old[1].wait(MATCH_END)[2])["version"],
                         1)
        self.assertEqual(parse_match_end(new[1].wait(MATCH_END)[2])["version"],
                         2)
        harness.wait_until(lambda: self.saved_matches() >= 2, 20,
                           "both results to be saved")
        # With its rooms closed and its sessions gone, generation 1 unloads.
        for p in old:
            p.close()
        harness.wait_until(
            lambda: [g["generation"] for g in
                     self.host.status_json()["plugins"][0]["generations"]]
            == [2], 30, "generation 1 to be unloaded")
        self.host.stop()
        matches, _ = self.read_db()
        self.assertEqual(sorted((m[1], m[2]) for m in matches),
                         sorted([(old_room, 1), (new_room, 2)]))
        self.assertNotIn("ERROR", self.host.log())


if __name__ == "__main__":
    unittest.main()
