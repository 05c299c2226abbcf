"""TLS services (SPEC section 14) with real clients: Python's ssl module and
python3-websockets. Echo over TLS on raw and packet services, chat over
wss://, TLS 1.0 and 1.1 refused, client certificates required when ca_file
is set, the host's own client services verifying the server (another CA
and a wrong name refused, the right one connects), certificate rotation by
reload while a session stays up, a refused rotation, a slow handshake cut
at handshake_timeout_ms; each refusal while a TLS and a TCP client on the
same host keep echoing. Certificates: tests/fixtures/tls (make.sh)."""

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
    raise ImportError("the TLS tests need python3-websockets for %s "
                      "(scripts/deps.sh installs it)" % sys.executable)

import asyncio
import re
import shutil
import socket
import ssl
import struct
import threading
import time
import unittest
import warnings

import harness
from harness import HostTestCase, Host

FIXTURES = os.path.join(harness.SOURCE_DIR, "tests", "fixtures", "tls")


def fx(name):
    return os.path.join(FIXTURES, name)


def client_context(cert=None, ca="ca.pem"):
    """A verifying client: the test CA, the server's name checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(fx(ca))
    if cert:
        ctx.load_cert_chain(fx(cert + ".pem"), fx(cert + ".key"))
    return ctx


def tls_connect(port, ctx=None, timeout=5.0):
    raw = harness.connect(port, timeout)
    try:
        return (ctx or client_context()).wrap_socket(
            raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def recv_exactly(sock, n, timeout=10.0):
    data = b""
    deadline = time.monotonic() + harness.scaled(timeout)
    while len(data) < n:
        if time.monotonic() > deadline:
            raise AssertionError("received %d of %d bytes" % (len(data), n))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError("EOF after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def echo_through(sock, data, chunk=65536):
    """Sends data a chunk at a time, reading each chunk's echo back before
    the next, so neither side's buffers fill; returns what came back."""
    back = b""
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        sock.sendall(piece)
        back += recv_exactly(sock, len(piece))
    return back


def subject_of(sock):
    """The server certificate's subject as {name: value}."""
    return {k: v for rdn in sock.getpeercert()["subject"] for k, v in rdn}


def packet(packet_id, payload):
    return struct.pack("<HH", 4 + len(payload), packet_id) + payload


class Bystanders:
    """A TLS and a TCP client echoing in a thread each, counting rounds: a
    refusal elsewhere must not disturb them."""

    def __init__(self, tls_port, tcp_port):
        self.counts = {"tls": 0, "tcp": 0}
        self.errors = []
        self.stop_flag = threading.Event()
        self.threads = [
            threading.Thread(target=self.run, args=("tls", tls_port)),
            threading.Thread(target=self.run, args=("tcp", tcp_port))]

    def run(self, kind, port):
        try:
            sock = tls_connect(port) if kind == "tls" else \
                harness.connect(port)
            with sock:
                i = 0
                while not self.stop_flag.is_set():
                    data = b"%s-bystander-%d;" % (kind.encode(), i)
                    sock.sendall(data)
                    if recv_exactly(sock, len(data)) != data:
                        raise AssertionError("%s bystander: wrong echo" % kind)
                    self.counts[kind] += 1
                    i += 1
                    self.stop_flag.wait(0.005)
        except Exception as e:  # reported by check()
            self.errors.append("%s bystander: %r" % (kind, e))

    def progressed(self, before, rounds=3):
        if self.errors:
            raise AssertionError("; ".join(self.errors))
        return all(self.counts[k] >= before[k] + rounds for k in self.counts)

    def __enter__(self):
        for t in self.threads:
            t.start()
        harness.wait_until(lambda: self.progressed({"tls": 0, "tcp": 0}), 10,
                           "the bystanders to echo")
        self.before = dict(self.counts)
        return self

    def __exit__(self, kind, value, tb):
        try:
            if kind is None:
                harness.wait_until(lambda: self.progressed(self.before), 10,
                                   "the bystanders to go on echoing: %s" %
                                   self.counts)
        finally:
            self.stop_flag.set()
            for t in self.threads:
                t.join(harness.scaled(10))


class TlsTest(HostTestCase):

    def start_host(self, services, plugins=None):
        self.ports = {}
        for s in services:
            self.ports[s["name"]] = int(s["address"].rsplit(":", 1)[1])
        config = harness.make_config(plugins or {"echo": {}, "backend": {},
                                                 "chat": {}}, services)
        self.host = Host(self, config, "tls")
        # Relative paths resolve against the config's folder: the served
        # certificate lives there, so a test can rotate it.
        certs = os.path.join(self.host.dir, "certs")
        os.mkdir(certs)
        shutil.copy(fx("server.pem"), os.path.join(certs, "cert.pem"))
        shutil.copy(fx("server.key"), os.path.join(certs, "cert.key"))
        return self.host.start()

    def server(self, name, plugin="echo", framing="raw", tls=None, **extra):
        return harness.server_service(
            name, plugin, harness.free_port(), framing,
            tls=tls or {"cert_file": "certs/cert.pem",
                        "key_file": "certs/cert.key"}, **extra)

    def bystander_services(self):
        return [self.server("tls", handshake_timeout_ms=600),
                harness.server_service("tcp", "echo", harness.free_port())]

    def bystanders(self):
        return Bystanders(self.ports["tls"], self.ports["tcp"])

    def log_line(self, pattern, what, timeout=10):
        return harness.wait_until(
            lambda: re.search(pattern, self.host.log(), re.M), timeout, what)

    # --- echo ---------------------------------------------------------------

    def test_echo_over_tls_raw_every_size(self):
        self.start_host(self.bystander_services())
        with tls_connect(self.ports["tls"]) as sock:
            self.assertIn(sock.version(), ("TLSv1.2", "TLSv1.3"))
            for size in (1, 100, 16383, 16384, 16385, 100000, 1 << 20):
                data = os.urandom(size)
                self.assertEqual(echo_through(sock, data), data, size)
        # TLS 1.2 as well (AEAD suites with forward secrecy only).
        ctx = client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with tls_connect(self.ports["tls"], ctx) as sock:
            self.assertEqual(sock.version(), "TLSv1.2")
            self.assertEqual(echo_through(sock, b"twelve"), b"twelve")

    def test_echo_over_tls_packet(self):
        self.start_host([self.server("tlsp", "backend", "packet")])
        with tls_connect(self.ports["tlsp"]) as sock:
            player = struct.pack("<Q", 7)
            for i, body in enumerate((b"x", b"hello" * 100, b"y" * 60000)):
                sock.sendall(packet(40 + i, player + body))
                size, pid = struct.unpack("<HH", recv_exactly(sock, 4))
                payload = recv_exactly(sock, size - 4)
                self.assertEqual(pid, 40 + i)
                self.assertEqual(payload, player + b"reply:7:" + body)

    def test_a_graceful_close_sends_close_notify(self):
        self.start_host(self.bystander_services())
        # A TCP end without close_notify must be an error here (Python
        # ignores it by default).
        ctx = client_context()
        ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
        with tls_connect(self.ports["tls"], ctx) as sock:
            self.assertEqual(echo_through(sock, b"bye"), b"bye")
            sock.unwrap().close()  # ours; the host answers with its own
        # The host closing (a graceful stop): close_notify, then the FIN.
        with tls_connect(self.ports["tls"], ctx) as sock:
            self.assertEqual(echo_through(sock, b"stop"), b"stop")
            self.host.stop()
            self.assertEqual(sock.recv(100), b"")

    # --- wss ----------------------------------------------------------------

    def test_chat_over_wss(self):
        self.start_host([self.server("wss", "chat", "packet",
                                     transport="websocket")])
        url = "wss://localhost:%d/" % self.ports["wss"]

        async def main():
            ctx = client_context()
            async with websockets.connect(url, ssl=ctx) as a, \
                    websockets.connect(url, ssl=ctx) as b:
                async def expect(ws, pid, text):
                    while True:
                        m = await asyncio.wait_for(ws.recv(),
                                                   harness.scaled(10))
                        if struct.unpack("<HH", m[:4])[1] == pid and \
                                m[4:] == text:
                            return
                await a.send(packet(1, b"ann"))
                await expect(a, 101, b"ann")
                await b.send(packet(1, b"bob"))
                await expect(b, 101, b"bob")
                await a.send(packet(2, b"hi over wss"))
                await expect(a, 102, b"ann: hi over wss")
                await expect(b, 102, b"ann: hi over wss")
        asyncio.run(main())

    # --- refusals -----------------------------------------------------------

    def test_tls_1_0_and_1_1_are_refused(self):
        self.start_host(self.bystander_services())
        for version, name in ((ssl.TLSVersion.TLSv1, "1.0"),
                              (ssl.TLSVersion.TLSv1_1, "1.1")):
            with self.bystanders(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                ctx.minimum_version = version
                ctx.maximum_version = version
                # Debian's OpenSSL offers TLS 1.0/1.1 only at security
                # level 0: the client must really offer them.
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                with self.assertRaises((ssl.SSLError, ConnectionError),
                                       msg="TLS " + name):
                    tls_connect(self.ports["tls"], ctx).close()
        lines = re.findall(
            r"service tls: session \d+ \(127\.0\.0\.1:\d+\) handshake failed:"
            r".*TLS 1\.2 or newer is required", self.host.log())
        self.assertEqual(len(lines), 2, self.host.log())

    def test_client_certificate_required_when_ca_file_is_set(self):
        services = self.bystander_services() + [self.server(
            "mtls", tls={"cert_file": "certs/cert.pem",
                         "key_file": "certs/cert.key",
                         "ca_file": fx("ca.pem")})]
        self.start_host(services)
        with self.bystanders():
            # TLS 1.3: the client's side completes before the server has
            # checked it; the refusal comes as the first read's error.
            with self.assertRaises((ssl.SSLError, ConnectionError,
                                    AssertionError)):
                with tls_connect(self.ports["mtls"]) as sock:
                    sock.sendall(b"no certificate")
                    recv_exactly(sock, 14)
            self.log_line(r"service mtls: session \d+ \(127\.0\.0\.1:\d+\) "
                          r"handshake failed: the client presented no "
                          r"certificate", "the refusal in the log")
            # A certificate from another CA.
            with self.assertRaises((ssl.SSLError, ConnectionError,
                                    AssertionError)):
                with tls_connect(self.ports["mtls"],
                                 client_context("other_server")) as sock:
                    sock.sendall(b"other CA")
                    recv_exactly(sock, 8)
            self.log_line(r"service mtls: .* certificate verify failed",
                          "the other CA refused in the log")
        with tls_connect(self.ports["mtls"], client_context("client")) as s:
            self.assertEqual(echo_through(s, b"with a certificate"),
                             b"with a certificate")

    def test_client_service_verifies_the_server(self):
        other = self.server("other", tls={"cert_file": fx("other_server.pem"),
                                          "key_file": fx("other_server.key")})
        base = self.bystander_services()
        tls_port = int(base[0]["address"].rsplit(":", 1)[1])
        other_port = int(other["address"].rsplit(":", 1)[1])
        backoff = {"min_delay_ms": 200, "max_delay_ms": 1000}

        def client(name, port, server_name):
            return harness.client_service(
                name, "echo", port, "raw", reconnect=backoff,
                tls={"ca_file": fx("ca.pem"), "server_name": server_name})
        services = base + [other,
                           client("to_other", other_port, "localhost"),
                           client("to_wrong", tls_port, "wrong.example"),
                           client("to_right", tls_port, "localhost")]
        self.start_host(services)
        with self.bystanders():
            self.log_line(
                r"service to_other: session \d+ \(127\.0\.0\.1:%d\) handshake "
                r"failed: certificate verify failed \(the server's: unable to "
                r"get local issuer certificate\)" % other_port,
                "to_other refusing a server certificate of another CA")
            self.log_line(
                r"service to_wrong: session \d+ \(127\.0\.0\.1:%d\) handshake "
                r"failed: certificate verify failed \(.*the certificate is "
                r"not for 'wrong\.example'\)" % tls_port,
                "to_wrong refusing a certificate for another name")

            def services_now():
                return {s["name"]: s for s in self.host.status_json()[
                    "services"]}
            harness.wait_until(
                lambda: services_now()["to_right"]["connects"] == 1, 10,
                "to_right to connect (its handshake done)")
            # A refused handshake is a failed connect, not a connect. (Not
            # "sessions 0": a retry may be in its handshake right now, and a
            # session counts from its TCP connect.)
            for name in ("to_other", "to_wrong"):
                harness.wait_until(
                    lambda: services_now()[name]["connect_failures"] >= 1, 10,
                    "%s to count a failed connect" % name)
            now = services_now()
            for name in ("to_other", "to_wrong"):
                self.assertEqual(now[name]["connects"], 0, name)
            self.assertEqual(now["to_right"]["connects"], 1)
            self.assertEqual(now["to_right"]["connect_failures"], 0)

    def test_slow_handshake_is_cut_at_its_deadline(self):
        self.start_host(self.bystander_services())
        with self.bystanders():
            with harness.connect(self.ports["tls"], timeout=10) as sock:
                sock.sendall(b"\x16\x03\x01\x00\xff\x01")  # a hello begun
                start = time.monotonic()
                data = harness.read_until_eof(sock, timeout=10)
                waited = time.monotonic() - start
            self.assertEqual(data, b"")
            self.assertGreaterEqual(waited, 0.5)
            self.log_line(r"service tls: session \d+ \(127\.0\.0\.1:\d+\) did "
                          r"not complete its tls handshake within "
                          r"handshake_timeout_ms 600", "the deadline's line")

    # --- files checked by `check` and `run` ---------------------------------

    def test_check_refuses_bad_certificate_files(self):
        cases = [
            ({"cert_file": "certs/missing.pem", "key_file": "certs/cert.key"},
             r"services\[0\]\.tls \(service tls\): cannot open the "
             r"certificate chain file '.*certs[/\\]missing\.pem': .*; check "
             r"tls\.cert_file"),
            ({"cert_file": "certs/cert.pem", "key_file": fx("server2.key")},
             r"services\[0\]\.tls \(service tls\): the key in "
             r"'.*server2\.key' does not match the certificate in "
             r"'.*cert\.pem'; give the key the certificate was issued for"),
            ({"cert_file": "certs/cert.pem", "key_file": "certs/cert.key",
              "ca_file": "certs/cert.key"},
             r"services\[0\]\.tls \(service tls\): the CA file "
             r"'.*cert\.key' holds no usable PEM certificate .*tls\.ca_file "
             r"must be PEM CA certificates"),
        ]
        for tls, message in cases:
            with self.subTest(tls=tls):
                config = harness.make_config({"echo": {}}, [
                    harness.server_service("tls", "echo", harness.free_port(),
                                           tls=tls)])
                host = Host(self, config, "tls-check")
                certs = os.path.join(host.dir, "certs")
                os.mkdir(certs)
                shutil.copy(fx("server.pem"), os.path.join(certs, "cert.pem"))
                shutil.copy(fx("server.key"), os.path.join(certs, "cert.key"))
                for command in ("check", "run"):
                    result = harness.run_cli([command, "-c",
                                              host.config_path])
                    self.assertEqual(result.returncode, 1, result.stderr)
                    self.assertEqual(result.stdout, "")
                    self.assertRegex(result.stderr, message)

    # --- rotation -----------------------------------------------------------

    def rotate(self, cert, key):
        certs = os.path.join(self.host.dir, "certs")
        for src, dst in ((cert, "cert.pem"), (key, "cert.key")):
            tmp = os.path.join(certs, dst + ".new")
            shutil.copy(src, tmp)
            os.replace(tmp, os.path.join(certs, dst))

    def test_reload_rotates_the_certificate_while_sessions_stay_up(self):
        self.start_host(self.bystander_services())
        with tls_connect(self.ports["tls"]) as kept:
            self.assertNotIn("organizationName", subject_of(kept))
            self.assertEqual(echo_through(kept, b"before"), b"before")
            self.rotate(fx("server2.pem"), fx("server2.key"))
            # `check` on the running instance's config: a reloadable change.
            check = harness.run_cli(["check", "-c", self.host.config_path])
            self.assertEqual(check.returncode, 0, check.stderr)
            self.assertIn("service tls: would reload its TLS context "
                          "(cert_file, key_file changed)", check.stdout)
            with self.bystanders():
                reply = self.host.control("reload")
                self.assertTrue(reply.ok, reply)
                self.assertIn("service tls: TLS context reloaded (cert_file, "
                              "key_file changed)", reply)
            for i in range(20):
                data = b"after-%d" % i
                self.assertEqual(echo_through(kept, data), data)
            self.assertNotIn("organizationName", subject_of(kept))
            with tls_connect(self.ports["tls"]) as fresh:
                self.assertEqual(subject_of(fresh)["organizationName"],
                                 "rotated")
                self.assertEqual(echo_through(fresh, b"new"), b"new")
            # A key that does not match: refused, nothing changes.
            self.rotate(fx("server.pem"), fx("server2.key"))
            reply = self.host.control("reload")
            self.assertFalse(reply.ok, reply)
            self.assertRegex(reply, r"services\[0\]\.tls \(service tls\): "
                             r"the key in '.*cert\.key' does not match the "
                             r"certificate")
            with tls_connect(self.ports["tls"]) as fresh:
                self.assertEqual(subject_of(fresh)["organizationName"],
                                 "rotated")
            self.assertEqual(echo_through(kept, b"still"), b"still")


if __name__ == "__main__":
    unittest.main()
