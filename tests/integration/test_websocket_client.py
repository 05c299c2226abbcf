"""Client services over WebSocket (SPEC section 14): the host opens the
upgrade itself, masks its frames and verifies the server's 101. A gateway
reaches its backend host over ws across the backend's restart; the host's
client talks to a foreign server (Debian's python3-websockets); servers that
answer a wrong Sec-WebSocket-Accept, a 200, or a masked frame are refused
with one clear line each and retried with a growing backoff."""

import os
import sys

# python3-websockets installs for Debian's /usr/bin/python3 (see
# test_websocket.py): run there when the first python3 lacks it.
try:
    import websockets
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and os.path.exists("/usr/bin/python3") \
            and not os.environ.get("IOCPHOST_WS_REEXEC"):
        os.environ["IOCPHOST_WS_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise ImportError("the WebSocket tests need python3-websockets for "
                      "%s (scripts/deps.sh installs it)" % sys.executable)

import asyncio
import base64
import hashlib
import re
import socket
import struct
import threading
import time
import unittest

import harness
from harness import HostTestCase, Host, PacketClient, WaitTimeout

GATEWAY_ERROR = 0xFFFF
REPLY = re.compile(rb"reply:(\d+):(.*)\Z", re.S)
ORIGIN = "https://game.example"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BACKOFF = {"min_delay_ms": 100, "max_delay_ms": 800, "jitter": 0}


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def packet(packet_id, payload):
    return struct.pack("<HH", 4 + len(payload), packet_id) + payload


def read_head(sock):
    """The HTTP head up to its blank line, and what followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def headers_of(head):
    fields = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


class BadServer:
    """A plain-socket server in a thread that answers every upgrade request
    the way `answer(key)` says (the bytes to send), records each
    connection's time and request head, and what the client sent after."""

    def __init__(self, answer, close_at_once=False):
        self.answer = answer
        self.close_at_once = close_at_once
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.times = []
        self.heads = []
        self.after = []
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.times.append(time.monotonic())
            with conn:
                conn.settimeout(harness.scaled(10))
                try:
                    head, _ = read_head(conn)
                    if head is None:
                        continue
                    self.heads.append(head)
                    key = headers_of(head).get("sec-websocket-key", "")
                    conn.sendall(self.answer(key))
                    if self.close_at_once:
                        self.after.append(b"")
                        continue
                    # What the client sends until its FIN (a close frame).
                    rest = b""
                    while True:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        rest += chunk
                    self.after.append(rest)
                except OSError:
                    self.after.append(None)

    def close(self):
        self.stopping = True
        self.thread.join(harness.scaled(15))
        self.sock.close()


def unmask_close_code(data):
    """The status code of a client's close frame, which must be masked."""
    if len(data) < 2 or data[0] != 0x88:
        return None
    if not data[1] & 0x80:
        return "unmasked"
    n = data[1] & 0x7F
    key = data[2:6]
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[6:6 + n]))
    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None


class WebSocketClientTest(HostTestCase):

    # --- a gateway reaching its backend over ws, across a restart ----------

    def wait_for_routing(self, port, up, timeout=30.0):
        probe = PacketClient(port)
        try:
            def answered_as_expected():
                probe.send(1, b"probe")
                try:
                    got = probe.recv(timeout=1.0)
                except WaitTimeout:
                    return False
                self.assertIsNotNone(got, "the gateway closed a player")
                return (got[0] != GATEWAY_ERROR) == up
            harness.wait_until(answered_as_expected, timeout,
                               "the gateway's ws link to be %s" %
                               ("up" if up else "down"))
        finally:
            probe.close()

    def round_trip(self, player, index):
        sent = []
        for k, size in enumerate((0, 100, 3000, 40000)):
            payload = (b"p%d-m%d-" % (index, k)) + os.urandom(size)
            player.send(10 + k, payload)
            sent.append((10 + k, payload))
        ids = set()
        for packet_id, payload in sent:
            got = player.recv(timeout=10.0)
            self.assertIsNotNone(got, "player %d: EOF" % index)
            self.assertEqual(got[0], packet_id)
            match = REPLY.match(got[1])
            self.assertIsNotNone(match, got[1][:80])
            self.assertEqual(match.group(2), payload)
            ids.add(int(match.group(1)))
        self.assertEqual(len(ids), 1)
        return ids.pop()

    def test_gateway_reaches_its_backend_over_ws_across_a_restart(self):
        backend_port = harness.free_port()
        players_port = harness.free_port()
        ws_server = {"path": "/link", "origins": [ORIGIN],
                     "subprotocol": "game.v1"}
        backend_config = harness.make_config(
            {"backend": {}},
            [harness.server_service("game", "backend", backend_port,
                                    "packet", transport="websocket",
                                    websocket=ws_server)],
            name="backend")
        gateway_config = harness.make_config(
            {"gateway": {}},
            [harness.server_service("players", "gateway", players_port,
                                    "packet"),
             harness.client_service(
                 "backend", "gateway", backend_port, "packet",
                 transport="websocket",
                 websocket={"path": "/link", "origin": ORIGIN,
                            "subprotocol": "game.v1",
                            "host": "backend.example"},
                 connect_timeout_ms=2000,
                 reconnect={"min_delay_ms": 50, "max_delay_ms": 500,
                            "jitter": 0.2})],
            name="gateway")
        backend = Host(self, backend_config, "backend").start()
        gateway = Host(self, gateway_config, "gateway").start()
        self.wait_for_routing(players_port, up=True)
        players = [PacketClient(players_port) for _ in range(8)]
        try:
            before = harness.run_parallel(
                self.round_trip, [(p, i) for i, p in enumerate(players)],
                timeout=60)

            backend.stop()
            self.wait_for_routing(players_port, up=False)
            restarted = Host(self, backend_config, "backend-again").start()
            self.wait_for_routing(players_port, up=True)
            after = harness.run_parallel(
                self.round_trip, [(p, i) for i, p in enumerate(players)],
                timeout=60)
            self.assertEqual(before, after,
                             "players keep their sessions across the restart")
        finally:
            for player in players:
                player.close()
        gateway.stop()
        restarted.stop()
        for host in (backend, restarted):
            self.assertNotIn("upgrade refused", host.log())
            self.assertNotIn("breaks RFC 6455", host.log())
        self.assertNotIn("WebSocket upgrade to", gateway.log())

    # --- a foreign server: python3-websockets ------------------------------

    def test_client_talks_to_a_python_websockets_server(self):
        seen = {"requests": [], "echo": [], "packets": [], "close": []}
        ready = threading.Event()
        stop = None
        server_port = [None]

        async def link(ws):
            """As a gateway would: packets to the host's backend plugin,
            each one message, its replies one message each; a ping; then a
            close, which the host answers."""
            for k, size in enumerate((1, 120, 200, 5000, 60000)):
                payload = struct.pack("<Q", 7 + k) + os.urandom(size)
                await ws.send(packet(20 + k, payload))
                reply = await ws.recv()
                self.assertIsInstance(reply, bytes)
                size_field, packet_id = struct.unpack("<HH", reply[:4])
                self.assertEqual(size_field, len(reply))
                self.assertEqual(packet_id, 20 + k)
                self.assertEqual(reply[4:12], payload[:8])
                self.assertEqual(reply[12:], b"reply:%d:" % (7 + k) +
                                 payload[8:])
                seen["packets"].append(packet_id)
            await asyncio.wait_for(await ws.ping(), harness.scaled(10))
            await ws.close(1000, "done")
            seen["close"].append(ws.close_code)

        async def echo(ws):
            for data in (b"hello", b"x" * 70000):
                await ws.send(data)
                got = b""
                while len(got) < len(data):
                    got += await ws.recv()
                seen["echo"].append(got == data)

        async def handler(ws):
            first = ws.path not in [r[0] for r in seen["requests"]]
            seen["requests"].append((ws.path, ws.request_headers,
                                     ws.subprotocol))
            try:
                if ws.path == "/link?v=1" and first:
                    await link(ws)
                elif ws.path == "/echo" and first:
                    await echo(ws)
                    await ws.wait_closed()
                else:
                    await ws.wait_closed()
            except Exception as error:  # reported by the assertions below
                seen.setdefault("errors", []).append(repr(error))

        async def serve():
            nonlocal stop
            stop = asyncio.get_running_loop().create_future()
            async with websockets.serve(handler, "127.0.0.1", 0,
                                        subprotocols=["game.v1"],
                                        max_size=1 << 20) as server:
                server_port[0] = server.sockets[0].getsockname()[1]
                ready.set()
                await stop

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete,
                                  args=(serve(),), daemon=True)
        thread.start()
        self.assertTrue(ready.wait(harness.scaled(10)))
        port = server_port[0]
        config = harness.make_config(
            {"backend": {}, "echo": {}},
            [harness.client_service(
                "link", "backend", port, "packet", transport="websocket",
                websocket={"path": "/link?v=1", "origin": ORIGIN,
                           "subprotocol": "game.v1"},
                reconnect=BACKOFF),
             harness.client_service(
                 "echo", "echo", port, "raw", transport="websocket",
                 websocket={"path": "/echo"}, max_recv_bytes=100000,
                 reconnect=BACKOFF)])
        host = Host(self, config, "client").start()
        try:
            harness.wait_until(
                lambda: seen["close"] and len(seen["echo"]) == 2 or
                seen.get("errors"), 30, "the python server's scenarios")
            # The link reconnects after the server's close.
            harness.wait_until(
                lambda: sum(1 for r in seen["requests"]
                            if r[0] == "/link?v=1") >= 2, 30,
                "the link to connect again after the server's close")
        finally:
            loop.call_soon_threadsafe(stop.set_result, None)
            thread.join(harness.scaled(10))
        host.stop()
        self.assertNotIn("errors", seen, seen.get("errors"))
        self.assertEqual(seen["packets"], [20, 21, 22, 23, 24])
        self.assertEqual(seen["echo"], [True, True])
        self.assertEqual(seen["close"], [1000])
        link = [r for r in seen["requests"] if r[0] == "/link?v=1"][0]
        self.assertEqual(link[1]["Origin"], ORIGIN)
        self.assertEqual(link[1]["Host"], "127.0.0.1:%d" % port)
        self.assertEqual(link[2], "game.v1")
        echo = [r for r in seen["requests"] if r[0] == "/echo"][0]
        self.assertNotIn("Origin", echo[1])
        self.assertIsNone(echo[2])
        self.assertNotIn("WebSocket upgrade to", host.log())

    # --- servers that answer wrongly: refused, retried with backoff ---------

    def test_bad_answers_are_refused_with_one_line_and_retried_with_backoff(self):
        wrong_accept = BadServer(lambda key: (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" %
            accept_for("not-" + key)).encode())
        ok_200 = BadServer(lambda key: (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
            b"Content-Length: 5\r\n\r\nhello"))
        masked = BadServer(lambda key: (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" %
            accept_for(key)).encode() +
            b"\x82\x85\x01\x02\x03\x04" +
            bytes(b ^ k for b, k in zip(b"hello", b"\x01\x02\x03\x04\x01")))
        servers = {"wrong_accept": wrong_accept, "ok_200": ok_200,
                   "masked": masked}
        # No answer at all: the deadline; and a FIN instead of an answer.
        silent = BadServer(lambda key: b"")
        closer = BadServer(lambda key: b"", close_at_once=True)
        try:
            config = harness.make_config(
                {"echo": {}},
                [harness.client_service(name, "echo", server.port, "raw",
                                        transport="websocket",
                                        reconnect=BACKOFF)
                 for name, server in servers.items()] +
                [harness.client_service("silent", "echo", silent.port, "raw",
                                        transport="websocket",
                                        handshake_timeout_ms=300,
                                        reconnect=BACKOFF),
                 harness.client_service("closer", "echo", closer.port, "raw",
                                        transport="websocket",
                                        reconnect=BACKOFF)])
            host = Host(self, config, "client").start()
            for name, server in list(servers.items()) + [("silent", silent),
                                                         ("closer", closer)]:
                harness.wait_until(lambda: len(server.after) >= 4, 30,
                                   "%s: four attempts" % name)
            # A refused upgrade is a failed connect, not a connect. (So is
            # the masked frame: it comes with the upgrade's answer, and the
            # session ends before it opens.)
            stats = {s["name"]: s for s in host.status_json()["services"]}
            for name in ("wrong_accept", "ok_200", "silent", "closer",
                         "masked"):
                self.assertEqual(stats[name]["connects"], 0, name)
                self.assertGreaterEqual(stats[name]["connect_failures"], 3,
                                        name)
            host.stop()
        finally:
            for server in list(servers.values()) + [silent, closer]:
                server.close()
        log = host.log()
        self.assertRegex(
            log, r"service wrong_accept: session \d+ \(127\.0\.0\.1:%d\) "
            r"WebSocket upgrade to / failed: the server answered "
            r"Sec-WebSocket-Accept \"[A-Za-z0-9+/=]{28}\", not "
            r"\"[A-Za-z0-9+/=]{28}\" \(the answer to our Sec-WebSocket-Key\); "
            r"closing \(protocol_error\)" % wrong_accept.port)
        self.assertRegex(
            log, r"service ok_200: session \d+ \(127\.0\.0\.1:%d\) WebSocket "
            r"upgrade to / failed: the server answered \"HTTP/1\.1 200 OK\", "
            r"not 101 Switching Protocols" % ok_200.port)
        self.assertRegex(
            log, r"service masked: session \d+ \(127\.0\.0\.1:%d\) sent a "
            r"frame that breaks RFC 6455 \(masked by a server, .*closing with "
            r"1002 \(protocol_error\)" % masked.port)
        self.assertRegex(
            log, r"service silent: session \d+ \(127\.0\.0\.1:%d\) did not "
            r"complete its websocket handshake within handshake_timeout_ms "
            r"300: closing \(idle_timeout\)" % silent.port)
        self.assertRegex(
            log, r"service closer: session \d+ \(127\.0\.0\.1:%d\) WebSocket "
            r"upgrade to / failed: the server closed the connection without "
            r"answering" % closer.port)
        self.assertEqual(silent.after[0], b"")
        # One line per attempt, no more.
        for name, server in servers.items():
            lines = [line for line in log.splitlines()
                     if "service %s:" % name in line and
                     ("failed" in line or "breaks" in line)]
            self.assertGreaterEqual(len(lines), 4, name)
            self.assertLessEqual(len(lines), len(server.times), name)
        # The masked frame never reached the plugin: the host closed with a
        # masked 1002 and nothing else; a refused 101 gets just the FIN.
        self.assertEqual(unmask_close_code(masked.after[0]), 1002)
        self.assertEqual(wrong_accept.after[0], b"")
        self.assertEqual(ok_200.after[0], b"")
        for name, server in servers.items():
            # A fresh key each attempt, and the request RFC 6455 asks for.
            keys = [headers_of(h)["sec-websocket-key"] for h in server.heads]
            self.assertEqual(len(set(keys)), len(keys), name)
            for key in keys:
                self.assertEqual(len(base64.b64decode(key)), 16)
            fields = headers_of(server.heads[0])
            self.assertTrue(server.heads[0].startswith("GET / HTTP/1.1\r\n"))
            self.assertEqual(fields["host"], "127.0.0.1:%d" % server.port)
            self.assertEqual(fields["upgrade"], "websocket")
            self.assertEqual(fields["connection"], "Upgrade")
            self.assertEqual(fields["sec-websocket-version"], "13")
            # The backoff grows (100, 200, 400 ms): a failed handshake is
            # not a healthy session that would reset it.
            gaps = [b - a for a, b in zip(server.times, server.times[1:])]
            self.assertGreater(gaps[2], 2 * gaps[0], "%s: %r" % (name, gaps))
            self.assertGreater(gaps[0], 0.05, "%s: %r" % (name, gaps))


if __name__ == "__main__":
    unittest.main()
