"""`iocphost sessions` and `iocphost kick` (SPEC section 15), checked with
the staller plugin (tests/integration/plugins/staller): the listing names
every session with its service, peer, age, bytes in and out, queued bytes,
plugin generation and rooms; it parses with json and jq; --service filters;
`kick ID` ends that session only, with reason local; an unknown id or
service is an error on stderr with exit code 1, and stdout stays empty."""

import json
import re
import shutil
import struct
import subprocess
import unittest

import harness
from harness import HostTestCase, Host

ECHO, JOIN = 2, 3


class SessionsTest(HostTestCase):

    def setUp(self):
        self.play = harness.free_port()
        self.admin = harness.free_port()
        config = harness.make_config(
            {"staller": {}},
            [harness.server_service("play", "staller", self.play, "packet"),
             harness.server_service("admin", "staller", self.admin,
                                    "packet")])
        self.host = Host(self, config, "staller").start()

    def cli(self, *words):
        return harness.run_cli(list(words) + ["-c", self.host.config_path])

    def sessions(self, *options):
        result = self.cli("sessions", "--json", *options)
        outcome = "exit %d, stdout %r, stderr %r" % (
            result.returncode, result.stdout, result.stderr)
        self.assertEqual(result.returncode, 0, outcome)
        self.assertEqual(result.stderr, "", outcome)
        return result.stdout

    def by_peer(self, *options):
        """The listed sessions by (service, peer): two clients of different
        services may share a local address (Linux hands an ephemeral port
        out again for another destination), so the peer alone is no key."""
        listed = json.loads(self.sessions(*options))["sessions"]
        return {(s["service"], s["peer"]): s for s in listed}

    @staticmethod
    def address(client):
        host, port = client.sock.getsockname()[:2]
        return "%s:%d" % (host, port)

    def peer(self, client):
        service = "admin" if client.sock.getpeername()[1] == self.admin \
            else "play"
        return (service, self.address(client))

    def echo(self, client, payload):
        client.send(ECHO, payload)
        self.assertEqual(client.recv(), (ECHO, payload))

    def test_sessions_lists_each_session_with_its_counters(self):
        a = harness.PacketClient(self.play)
        b = harness.PacketClient(self.play)
        c = harness.PacketClient(self.admin)
        self.echo(a, b"x" * 100)  # 104 bytes each way
        self.echo(a, b"y" * 10)   # 14
        self.echo(b, b"z")        # 5
        self.echo(c, b"")         # 4
        a.send(JOIN)
        packet_id, payload = a.recv()
        self.assertEqual(packet_id, JOIN)
        room = struct.unpack("<Q", payload)[0]
        want = {self.peer(a): ("play", 122, [room]),
                self.peer(b): ("play", 5, []),
                self.peer(c): ("admin", 4, [])}
        # a also got the join's answer: 4 + 8 bytes.
        bytes_out = {self.peer(a): 130, self.peer(b): 5, self.peer(c): 4}

        def settled():
            listed = self.by_peer()
            return set(listed) == set(want) and all(
                listed[p]["bytes_out"] == bytes_out[p] for p in want) and \
                listed
        listed = harness.wait_until(settled, 10, "the sessions' counters")
        ids = set()
        for peer, (service, bytes_in, rooms) in want.items():
            s = listed[peer]
            self.assertEqual(s["service"], service)
            self.assertEqual(s["bytes_in"], bytes_in, peer)
            self.assertEqual(s["queued_bytes"], 0)
            self.assertEqual(s["generation"], 1)
            self.assertEqual(s["rooms"], rooms)
            self.assertGreaterEqual(s["age_ms"], 0)
            self.assertIsInstance(s["id"], int)
            ids.add(s["id"])
        self.assertEqual(len(ids), 3)
        # jq takes standard output as it is.
        jq = shutil.which("jq")
        if jq is None:
            self.fail("jq is not installed (scripts/deps.sh installs it)")
        piped = subprocess.run([jq, "-e", "[.sessions[].peer] | sort"],
                               input=self.sessions(), capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(piped.returncode, 0, piped.stderr)
        self.assertEqual(json.loads(piped.stdout),
                         sorted(peer for _, peer in want))
        # --service filters.
        self.assertEqual(set(self.by_peer("--service", "admin")),
                         {self.peer(c)})
        self.assertEqual(set(self.by_peer("--service", "play")),
                         {self.peer(a), self.peer(b)})
        # The text form, one line per session.
        text = self.cli("sessions")
        self.assertEqual(text.returncode, 0, text.stderr)
        line = [l for l in text.stdout.splitlines()
                if "service play, peer %s," % self.address(a) in l][0]
        self.assertRegex(line, r"^session %d: service play, peer %s, age "
                         r"\d+ ms, bytes in 122 out 130, queued 0, "
                         r"generation 1, rooms %d$" %
                         (listed[self.peer(a)]["id"], re.escape(self.address(a)),
                          room))
        for client in (a, b, c):
            client.close()

    def test_an_unknown_service_is_an_error_naming_the_services(self):
        result = self.cli("sessions", "--service", "nope")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertIn('no service named "nope"', result.stderr)
        self.assertIn("play, admin", result.stderr)

    def test_kick_ends_that_session_only_with_reason_local(self):
        a = harness.PacketClient(self.play)
        b = harness.PacketClient(self.play)
        c = harness.PacketClient(self.admin)
        for client in (a, b, c):
            self.echo(client, b"hello")
        victim = self.by_peer()[self.peer(a)]["id"]
        result = self.cli("kick", str(victim))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        self.assertIn("session %d (service play, peer %s) disconnected "
                      "(reason local)" % (victim, self.address(a)),
                      result.stdout)
        self.assertIsNone(a.recv(timeout=10), "the kicked session ends (EOF)")
        self.echo(b, b"still here")
        self.echo(c, b"me too")
        harness.wait_until(
            lambda: self.peer(a) not in self.by_peer(), 10,
            "the kicked session gone from the list")
        self.assertEqual(set(self.by_peer()), {self.peer(b), self.peer(c)})
        harness.wait_until(
            lambda: "staller disconnected: session=%d reason=local" % victim
            in self.host.log(), 10, "on_disconnected with reason local")
        # Once only: kicking it again finds nothing.
        again = self.cli("kick", str(victim))
        self.assertEqual(again.returncode, 1)
        self.assertEqual(again.stdout, "")
        self.assertIn("no session %d" % victim, again.stderr)
        for client in (b, c):
            client.close()

    def test_kick_of_an_unknown_or_malformed_id_fails_clearly(self):
        a = harness.PacketClient(self.play)
        self.echo(a, b"hi")
        result = self.cli("kick", "987654321")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertTrue(result.stderr.startswith(
            "iocphost: kick: no session 987654321 in this instance"),
            result.stderr)
        for bad in (["kick"], ["kick", "abc"], ["kick", "0"],
                    ["kick", "12x"]):
            usage = self.cli(*bad)
            self.assertEqual(usage.returncode, 2, bad)
            self.assertEqual(usage.stdout, "")
            self.assertIn("session id", usage.stderr)
        self.echo(a, b"unharmed")
        a.close()


if __name__ == "__main__":
    unittest.main()
