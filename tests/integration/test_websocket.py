"""WebSocket services (SPEC section 14) with a real client library, Debian's
python3-websockets: echo over ws on raw and packet services, fragments,
pings both ways, each close code the host sends, protocol violations and
bad upgrades refused as RFC 6455 says, a slow handshake cut at its
deadline; each while a ws client and a tcp client on the same host keep
echoing undisturbed."""

import os
import sys

# python3-websockets installs for Debian's /usr/bin/python3, which may not
# be the first python3 on PATH (a pyenv, say): run there instead.
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
import re
import socket
import struct
import time
import unittest

import harness
from harness import HostTestCase, Host

KEY = base64.b64encode(b"0123456789abcdef").decode()
ORIGIN = "https://game.example"


def upgrade_request(path="/", key=KEY, version="13", origin=None,
                    extra=""):
    lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1",
             "Upgrade: websocket", "Connection: Upgrade"]
    if key is not None:
        lines.append("Sec-WebSocket-Key: " + key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: " + version)
    if origin is not None:
        lines.append("Origin: " + origin)
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_response_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def frame(opcode, payload, mask=True, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frame(sock):
    """(opcode, payload) of the next frame the server sends."""
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("EOF inside a frame")
            data += chunk
        return data
    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    return b0 & 0x0F, exact(n)


def packet(packet_id, payload):
    return struct.pack("<HH", 4 + len(payload), packet_id) + payload


class WebSocketTest(HostTestCase):

    @classmethod
    def setUpClass(cls):
        cls.ports = {name: harness.free_port() for name in
                     ("ws", "wsp", "tcp", "wso", "wsk", "wsc")}

    def start_host(self):
        p = self.ports
        ws = {"transport": "websocket"}
        services = [
            harness.server_service("ws", "echo", p["ws"], "raw",
                                   max_recv_bytes=70000, **ws),
            harness.server_service("wsp", "backend", p["wsp"], "packet",
                                   max_packet_bytes=1024, **ws),
            harness.server_service("tcp", "echo", p["tcp"], "raw"),
            # Origins, a short handshake deadline and an idle timeout.
            harness.server_service(
                "wso", "echo", p["wso"], "raw", transport="websocket",
                websocket={"path": "/play", "origins": [ORIGIN]},
                handshake_timeout_ms=400, idle_timeout_ms=1500),
            # Pings of ours every 200 ms.
            harness.server_service(
                "wsk", "echo", p["wsk"], "raw", transport="websocket",
                websocket={"ping_interval_ms": 200}),
            # Chat: broadcasts (one encoding shared by every session).
            harness.server_service("wsc", "chat", p["wsc"], "packet", **ws),
        ]
        config = harness.make_config({"echo": {}, "backend": {}, "chat": {}},
                                     services)
        self.host = Host(self, config, "websocket").start()

    def url(self, name, path="/"):
        return "ws://127.0.0.1:%d%s" % (self.ports[name], path)

    # --- bystanders: a ws and a tcp client that must not notice anything

    async def bystanders(self, stop, counts):
        async def ws_client():
            async with websockets.connect(self.url("ws")) as ws:
                i = 0
                while not stop.is_set():
                    data = b"ws-bystander-%d" % i
                    await ws.send(data)
                    self.assertEqual(await ws.recv(), data)
                    counts["ws"] += 1
                    i += 1
                    await asyncio.sleep(0.005)

        async def tcp_client():
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.ports["tcp"])
            i = 0
            while not stop.is_set():
                data = b"tcp-bystander-%d;" % i
                writer.write(data)
                self.assertEqual(await reader.readexactly(len(data)), data)
                counts["tcp"] += 1
                i += 1
                await asyncio.sleep(0.005)
            writer.close()

        await asyncio.gather(ws_client(), tcp_client())

    def run_with_bystanders(self, scenario):
        """Runs scenario() while the bystanders echo; they must have echoed
        before, during and after it, without an error."""
        async def main():
            stop = asyncio.Event()
            counts = {"ws": 0, "tcp": 0}
            task = asyncio.ensure_future(self.bystanders(stop, counts))
            deadline = time.monotonic() + harness.scaled(10)
            while min(counts.values()) < 3:
                if task.done():
                    task.result()
                self.assertLess(time.monotonic(), deadline,
                                "bystanders did not start")
                await asyncio.sleep(0.01)
            before = dict(counts)
            await scenario()
            deadline = time.monotonic() + harness.scaled(10)
            while any(counts[k] < before[k] + 3 for k in counts):
                if task.done():
                    task.result()
                self.assertLess(time.monotonic(), deadline,
                                "bystanders stalled: %s" % counts)
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(task, harness.scaled(10))
        asyncio.run(main())

    async def in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(
            None, function, *args)

    def raw_exchange(self, name, request, frames=b""):
        """Sends a request (and frames) on a plain socket; returns the
        response head, what followed, and whether EOF came."""
        sock = harness.connect(self.ports[name], timeout=10)
        sock.sendall(request + frames)
        head, rest = read_response_head(sock)
        return head, rest, sock

    # --- echo ----------------------------------------------------------

    def test_raw_service_echoes_binary_text_fragmented_and_large(self):
        self.start_host()

        async def scenario():
            async with websockets.connect(self.url("ws"),
                                          max_size=1 << 20) as ws:
                await ws.send(b"hello")
                self.assertEqual(await ws.recv(), b"hello")
                # Text is passed on as its bytes; replies are binary.
                await ws.send("text é")
                self.assertEqual(await ws.recv(), "text é".encode())
                await ws.send([b"frag-1,", b"frag-2,", b"frag-3"])
                self.assertEqual(await ws.recv(), b"frag-1,frag-2,frag-3")
                big = os.urandom(65000)
                await ws.send(big)
                back = b""
                while len(back) < len(big):
                    back += await ws.recv()
                self.assertEqual(back, big)
        self.run_with_bystanders(scenario)
        self.host.stop()

    def test_packet_service_message_is_one_packet_header_included(self):
        self.start_host()

        async def scenario():
            async with websockets.connect(self.url("wsp")) as ws:
                body = struct.pack("<Q", 42) + b"hi"
                await ws.send(packet(7, body))
                reply = await ws.recv()
                size, pid = struct.unpack("<HH", reply[:4])
                self.assertEqual(size, len(reply))
                self.assertEqual(pid, 7)
                self.assertEqual(reply[4:], struct.pack("<Q", 42) +
                                 b"reply:42:hi")
                # A fragmented message is one packet too.
                await ws.send([packet(8, body)[:5], packet(8, body)[5:]])
                self.assertEqual(struct.unpack("<HH", (await ws.recv())[:4])[1],
                                 8)
                # A message whose size field is not its length: 1002.
                await ws.send(struct.pack("<HH", 99, 1) + body)
                with self.assertRaises(websockets.ConnectionClosed):
                    await ws.recv()
                self.assertEqual(ws.close_code, 1002)
        self.run_with_bystanders(scenario)
        self.assertRegex(self.host.log(), r"not one packet")
        self.host.stop()

    def test_chat_broadcasts_reach_every_ws_member_as_one_packet_each(self):
        self.start_host()

        async def next_packet(ws, wanted, payload):
            # Other members' JOINED come too, and PRESENCE now and then.
            while True:
                message = await asyncio.wait_for(ws.recv(), harness.scaled(10))
                size, pid = struct.unpack("<HH", message[:4])
                self.assertEqual(size, len(message))
                if pid == wanted and message[4:] == payload:
                    return True

        async def scenario():
            clients = [await websockets.connect(self.url("wsc"))
                       for _ in range(3)]
            for i, ws in enumerate(clients):
                await ws.send(packet(1, b"p%d" % i))  # JOIN
                self.assertTrue(await next_packet(ws, 101, b"p%d" % i))
            await clients[0].send(packet(2, b"hello all"))  # SAY
            for ws in clients:
                self.assertTrue(await next_packet(ws, 102, b"p0: hello all"))
            for ws in clients:
                await ws.close()
        self.run_with_bystanders(scenario)
        self.host.stop()

    # --- pings ------------------------------------------------------------

    def test_pings_are_answered_and_an_unanswered_ping_ends_the_session(self):
        self.start_host()

        async def scenario():
            async with websockets.connect(self.url("ws")) as ws:
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, harness.scaled(5))
            # The library answers the host's pings: up after 5 intervals.
            async with websockets.connect(self.url("wsk")) as ws:
                await asyncio.sleep(1.0)
                await ws.send(b"still here")
                self.assertEqual(await ws.recv(), b"still here")
            # A client that never answers is closed with 1008.
            def silent():
                head, rest, sock = self.raw_exchange("wsk", upgrade_request())
                with sock:
                    self.assertIn(" 101 ", head)
                    sock.settimeout(harness.scaled(10))
                    seen = []
                    data = rest
                    while True:
                        opcode, payload = read_frame(sock)
                        seen.append(opcode)
                        if opcode == 8:
                            return seen, struct.unpack(">H", payload[:2])[0]
            seen, code = await self.in_thread(silent)
            self.assertIn(9, seen)
            self.assertEqual(code, 1008)
        self.run_with_bystanders(scenario)
        self.assertRegex(self.host.log(), r"did not answer a ping")
        self.host.stop()

    # --- close codes -----------------------------------------------------

    def test_close_codes_carry_the_reasons(self):
        self.start_host()

        async def scenario():
            # The plugin disconnects (local): 1000.
            async with websockets.connect(self.url("wsp")) as ws:
                await ws.send(packet(1, b"short"))  # no player id
                with self.assertRaises(websockets.ConnectionClosed):
                    await ws.recv()
                self.assertEqual(ws.close_code, 1000)
                self.assertEqual(ws.close_reason, "local")
            # The client closes: the host answers 1000.
            ws = await websockets.connect(self.url("ws"))
            await ws.close(1000)
            self.assertEqual(ws.close_code, 1000)
            # Idle too long (idle_timeout): 1008.
            async with websockets.connect(
                    self.url("wso", "/play"), origin=ORIGIN,
                    ping_interval=None) as ws:
                with self.assertRaises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), harness.scaled(10))
                self.assertEqual(ws.close_code, 1008)
                self.assertEqual(ws.close_reason, "idle_timeout")
            # Over max_recv_bytes: 1009.
            async with websockets.connect(self.url("ws"),
                                          max_size=None) as ws:
                await ws.send(b"x" * 70001)
                with self.assertRaises(websockets.ConnectionClosed):
                    await ws.recv()
                self.assertEqual(ws.close_code, 1009)
        self.run_with_bystanders(scenario)
        self.assertRegex(self.host.log(),
                         r"longer than max_recv_bytes 70000: closing with 1009")
        self.host.stop()

    def test_host_stop_closes_with_1001(self):
        self.start_host()

        async def scenario():
            async with websockets.connect(self.url("ws")) as ws:
                await ws.send(b"x")
                self.assertEqual(await ws.recv(), b"x")
                await self.in_thread(self.host.stop)
                with self.assertRaises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), harness.scaled(10))
                self.assertEqual(ws.close_code, 1001)
                self.assertEqual(ws.close_reason, "host_stopping")
        asyncio.run(scenario())

    def test_an_unmasked_client_frame_is_closed_with_1002(self):
        self.start_host()

        async def scenario():
            def unmasked():
                head, rest, sock = self.raw_exchange("ws", upgrade_request())
                with sock:
                    self.assertIn(" 101 ", head)
                    sock.sendall(frame(2, b"hello", mask=False))
                    opcode, payload = read_frame(sock)
                    self.assertEqual(harness.read_until_eof(sock), b"")
                    return opcode, struct.unpack(">H", payload[:2])[0]
            self.assertEqual(await self.in_thread(unmasked), (8, 1002))
            # A control frame over 125 bytes is malformed: 1002 as well.
            def big_ping():
                head, rest, sock = self.raw_exchange("ws", upgrade_request())
                with sock:
                    sock.sendall(frame(9, b"p" * 126))
                    opcode, payload = read_frame(sock)
                    return opcode, struct.unpack(">H", payload[:2])[0]
            self.assertEqual(await self.in_thread(big_ping), (8, 1002))
        self.run_with_bystanders(scenario)
        self.assertRegex(self.host.log(), r"breaks RFC 6455.*closing with 1002")
        self.assertRegex(self.host.log(), r"malformed frame")
        self.host.stop()

    # --- bad upgrades ------------------------------------------------------

    def test_bad_upgrades_are_refused_as_rfc_6455_says(self):
        self.start_host()
        cases = [
            ("no key", "ws", upgrade_request(key=None), 400, None),
            ("wrong version", "ws", upgrade_request(version="8"), 426,
             "Sec-WebSocket-Version: 13"),
            ("wrong path", "ws", upgrade_request(path="/nope"), 404, None),
            ("refused origin", "wso",
             upgrade_request(path="/play", origin="https://evil.example"),
             403, None),
            ("no origin", "wso", upgrade_request(path="/play"), 403, None),
        ]

        async def scenario():
            for what, name, request, status, header in cases:
                def refused():
                    head, rest, sock = self.raw_exchange(name, request)
                    with sock:
                        tail = harness.read_until_eof(sock)
                    return head, rest + tail
                head, body = await self.in_thread(refused)
                self.assertTrue(head.startswith("HTTP/1.1 %d " % status),
                                "%s: %r" % (what, head))
                if header:
                    self.assertIn(header, head, what)
            # The allowed origin on the right path is accepted.
            async with websockets.connect(self.url("wso", "/play"),
                                          origin=ORIGIN) as ws:
                await ws.send(b"ok")
                self.assertEqual(await ws.recv(), b"ok")
        self.run_with_bystanders(scenario)
        log = self.host.log()
        self.assertEqual(len(re.findall(r"upgrade refused with 400", log)), 1)
        self.assertEqual(len(re.findall(r"upgrade refused with 426", log)), 1)
        self.assertEqual(len(re.findall(r"upgrade refused with 404", log)), 1)
        self.assertEqual(len(re.findall(r"upgrade refused with 403", log)), 2)
        self.host.stop()

    def test_a_slow_handshake_is_cut_at_its_deadline(self):
        self.start_host()

        async def scenario():
            def slow():
                with harness.connect(self.ports["wso"], timeout=10) as sock:
                    sock.sendall(upgrade_request(path="/play",
                                                 origin=ORIGIN)[:30])
                    started = time.monotonic()
                    head, rest = read_response_head(sock)
                    tail = harness.read_until_eof(sock)
                    return head, time.monotonic() - started
            head, took = await self.in_thread(slow)
            self.assertTrue(head.startswith("HTTP/1.1 408 "), head)
            self.assertGreater(took, 0.2)
            self.assertLess(took, harness.scaled(5))
        self.run_with_bystanders(scenario)
        self.assertRegex(self.host.log(),
                         r"did not complete its websocket handshake within "
                         r"handshake_timeout_ms 400")
        self.host.stop()


if __name__ == "__main__":
    unittest.main()
