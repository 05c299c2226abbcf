"""A real browser on wss:// (SPEC section 14): headless Chromium (Debian's
`chromium`) opens the chat sample's web page (plugins/chat/web/index.html,
as a file), which connects over wss:// to a chat service of the host, joins
as "web" and says "hello"; a python3-websockets client in the same chat sees
"web: hello" arrive. Chromium trusts the test server's key by its SPKI hash
(--ignore-certificate-errors-spki-list), computed here from the committed
certificate. Skips only when chromium is not installed."""

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
    raise ImportError("the browser test needs python3-websockets for %s "
                      "(scripts/deps.sh installs it)" % sys.executable)

import asyncio
import base64
import hashlib
import shutil
import ssl
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import harness
from harness import HostTestCase, Host

FIXTURES = os.path.join(harness.SOURCE_DIR, "tests", "fixtures", "tls")
PAGE = os.path.join(harness.SOURCE_DIR, "plugins", "chat", "web",
                    "index.html")
JOIN, SAY = 1, 2
JOINED, SAID = 101, 102


def der_element(data, offset):
    """(tag, start of content, end of content) of the DER element at
    offset."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    return tag, start, start + length


def spki_sha256_base64(cert_pem_path):
    """Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo (what
    Chromium's --ignore-certificate-errors-spki-list takes): the seventh
    element of tbsCertificate when the version is given, else the sixth."""
    with open(cert_pem_path) as f:
        pem = f.read()
    body = pem.split("-----BEGIN CERTIFICATE-----")[1].split(
        "-----END CERTIFICATE-----")[0]
    der = base64.b64decode("".join(body.split()))
    _, cert_start, _ = der_element(der, 0)          # Certificate
    _, tbs_start, tbs_end = der_element(der, cert_start)  # tbsCertificate
    offset = tbs_start
    fields = []
    while offset < tbs_end:
        tag, start, end = der_element(der, offset)
        fields.append((tag, offset, end))
        offset = end
    index = 6 if fields[0][0] == 0xA0 else 5
    _, spki_start, spki_end = fields[index]
    return base64.b64encode(
        hashlib.sha256(der[spki_start:spki_end]).digest()).decode()


def packet(packet_id, payload):
    return struct.pack("<HH", 4 + len(payload), packet_id) + payload


@unittest.skipIf(shutil.which("chromium") is None,
                 "Debian's chromium is not installed (scripts/deps.sh "
                 "installs it)")
class BrowserChatTest(HostTestCase):

    def test_chromium_chats_over_wss(self):
        port = harness.free_port()
        service = harness.server_service(
            "chat", "chat", port, "packet", transport="websocket",
            websocket={"path": "/chat"},
            tls={"cert_file": os.path.join(FIXTURES, "server.pem"),
                 "key_file": os.path.join(FIXTURES, "server.key")})
        host = Host(self, harness.make_config({"chat": {}}, [service]),
                    "browser").start()
        profile = tempfile.mkdtemp(prefix="iocphost-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        query = urllib.parse.urlencode({
            "url": "wss://127.0.0.1:%d/chat" % port, "name": "web",
            "say": "hello"})
        page = "file://%s?%s" % (urllib.parse.quote(PAGE), query)
        spki = spki_sha256_base64(os.path.join(FIXTURES, "server.pem"))

        async def main():
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(os.path.join(FIXTURES, "ca.pem"))
            url = "wss://localhost:%d/chat" % port
            async with websockets.connect(url, ssl=ctx) as ws:
                await ws.send(packet(JOIN, b"py"))
                browser = None
                deadline = time.monotonic() + harness.scaled(60)
                try:
                    while True:
                        left = deadline - time.monotonic()
                        self.assertGreater(left, 0, "no 'web: hello' from "
                                           "the browser in time")
                        try:
                            message = await asyncio.wait_for(ws.recv(), left)
                        except asyncio.TimeoutError:
                            continue
                        packet_id = struct.unpack("<HH", message[:4])[1]
                        text = message[4:]
                        if packet_id == JOINED and text == b"py":
                            browser = subprocess.Popen(
                                ["chromium", "--headless", "--no-sandbox",
                                 "--disable-gpu", "--disable-quic",
                                 "--no-first-run",
                                 "--disable-background-networking",
                                 "--disable-component-update",
                                 "--disable-sync",
                                 "--user-data-dir=" + profile,
                                 "--ignore-certificate-errors-spki-list=" +
                                 spki, page],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
                        if packet_id == SAID and text == b"web: hello":
                            return
                finally:
                    if browser is not None:
                        browser.kill()
                        browser.wait(harness.scaled(10))
        asyncio.run(main())
        self.assertNotIn("handshake failed", host.log())


if __name__ == "__main__":
    unittest.main()
