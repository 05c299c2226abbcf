"""The metrics endpoint (SPEC section 15, issue 16).

- A real Prometheus server (Debian's `prometheus`), started here on
  loopback with a scrape config for the host, scrapes the host every
  second; after echo and chat traffic, PromQL through its HTTP API returns
  what `status --json` says for sessions, accepted, bytes and packets in
  and out. Under Wine the Linux Prometheus scrapes the Windows host.
- `promtool check metrics` passes on the page (exit 0, no lint problem).
- Hostile clients: a request over the size cap (431), a slow one cut at
  metrics.timeout_ms, more idle clients than max_connections while a real
  scrape still answers, another path (404), another method (405), garbage
  (400 or a close); the game service echoes all along.
- A metrics address in use stops the start with a message naming
  metrics.address, and nothing listens.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import harness
from harness import HostTestCase, Host, PacketClient

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
JOIN, SAY = 1, 2
JOINED, SAID = 101, 102
TIMEOUT_MS = 1000
MAX_CONNECTIONS = 4


def http_get(port, path="/metrics", timeout=10.0):
    """(status, headers, body) of one GET."""
    request = urllib.request.Request("http://%s:%d%s" % (harness.LOOPBACK,
                                                          port, path))
    try:
        with urllib.request.urlopen(request,
                                    timeout=harness.scaled(timeout)) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_request(port, data, timeout=10.0):
    """Sends data, returns what came back until the host closed ('' if it
    closed, or reset, without an answer)."""
    s = harness.connect(port, timeout)
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, ConnectionAbortedError):
        pass
    s.close()
    return out


def samples(text, name):
    """{labels-text: value} of a metric in the exposition text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            out[series[len(name):]] = float(value)
    return out


class MetricsHost:
    """A host with an echo (raw) and a chat (packet) service and metrics."""

    def __init__(self, test, **metrics):
        self.game = harness.free_port()
        self.chat = harness.free_port()
        self.metrics = harness.free_port()
        config = harness.make_config(
            {"echo": {}, "chat": {"presence_interval_ms": 0}},
            [harness.server_service("game", "echo", self.game),
             harness.server_service("chat", "chat", self.chat, "packet")])
        config["metrics"] = {"address": "%s:%d" % (harness.LOOPBACK,
                                                   self.metrics)}
        config["metrics"].update(metrics)
        self.host = Host(test, config, "metrics")
        self.host.start()
        # The endpoint answers once the host is started: a moment after
        # the game ports accept.
        harness.wait_until(lambda: harness.port_accepts(self.metrics), 10,
                           "the metrics port to accept")

    def echo(self, data=b"ping"):
        with harness.connect(self.game) as s:
            got = harness.exchange(s, data)
        return got


class MetricsEndpointTest(HostTestCase):

    def test_page_is_prometheus_text_and_follows_status(self):
        h = MetricsHost(self)
        self.assertEqual(h.echo(b"x" * 1000), b"x" * 1000)
        key = '{service="game",plugin="echo",core="main"}'
        # Bytes sent count once the socket took them, on the server's
        # worker: the client can read the echo a moment before that (under
        # Wine's load, seen once with a send that waited for its completion).
        def echo_counted():
            body = http_get(h.metrics)[2].decode()
            return samples(body, "iocphost_bytes_out_total").get(key) == 1000
        harness.wait_until(echo_counted, 10,
                           "iocphost_bytes_out_total to count the echo")
        status, headers, body = http_get(h.metrics)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"],
                         "text/plain; version=0.0.4; charset=utf-8")
        text = body.decode()
        st = h.host.status_json()
        game = [s for s in st["services"] if s["name"] == "game"][0]
        self.assertEqual(samples(text, "iocphost_accepted_total")[key],
                         game["accepted"])
        self.assertEqual(samples(text, "iocphost_bytes_in_total")[key], 1000)
        self.assertEqual(samples(text, "iocphost_bytes_out_total")[key], 1000)
        # Wine's GetProcessHandleCount answers 0: no process_open_fds there.
        fds = () if harness.WINDOWS else ("process_open_fds",)
        for name in ("process_resident_memory_bytes",
                     "process_cpu_seconds_total",
                     "process_start_time_seconds") + fds:
            self.assertIn("# TYPE %s " % name, text)
            self.assertGreaterEqual(samples(text, name)[""], 0, name)
        for name in ("process_resident_memory_bytes",) + fds:
            self.assertGreater(samples(text, name)[""], 0, name)
        start = samples(text, "process_start_time_seconds")[""]
        self.assertLess(abs(start - time.time()), 600, "start time %r" % start)
        self.assertIn("# TYPE iocphost_work_run_seconds histogram", text)
        # Callback durations are sampled (metrics.callback_sample, 16): a
        # timed call counts for 16, so the count is a multiple of 16 and
        # at least the calls of whole samples.
        with harness.connect(h.game) as s:
            for _ in range(40):
                self.assertEqual(harness.exchange(s, b"y"), b"y")
        text = http_get(h.metrics)[2].decode()
        count = samples(text, "iocphost_plugin_callback_duration_seconds_count")[
            '{plugin="echo",generation="1",kind="on_recv"}']
        self.assertEqual(count % 16, 0, count)
        self.assertGreaterEqual(count, 32)
        self.assertIn('iocphost_rooms{plugin="chat",generation="1"} 0', text)
        # HEAD: the headers only.
        head = raw_request(h.metrics,
                           b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head[:100])
        self.assertTrue(head.endswith(b"\r\n\r\n"), head[-100:])

    @unittest.skipUnless(PROMTOOL, "promtool not installed (Debian's "
                         "prometheus package; scripts/deps.sh installs it)")
    def test_promtool_check_metrics_passes(self):
        h = MetricsHost(self)
        h.echo()
        c = PacketClient(h.chat)
        c.send(JOIN, b"ann")
        self.assertEqual(c.recv()[0], JOINED)
        c.close()
        _, _, body = http_get(h.metrics)
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=body,
                                capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout + result.stderr, b"")

    def test_hostile_clients_while_the_game_echoes(self):
        h = MetricsHost(self, timeout_ms=TIMEOUT_MS,
                        max_connections=MAX_CONNECTIONS)
        # Another path, another method, garbage.
        self.assertEqual(http_get(h.metrics, "/")[0], 404)
        self.assertEqual(http_get(h.metrics, "/metricsx")[0], 404)
        reply = raw_request(h.metrics, b"POST /metrics HTTP/1.1\r\n"
                            b"Content-Length: 0\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 405 "), reply[:80])
        self.assertIn(b"Allow: GET, HEAD\r\n", reply)
        reply = raw_request(h.metrics, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        self.assertTrue(reply == b"" or reply.startswith(b"HTTP/1.1 400 "),
                        reply[:80])
        self.assertEqual(h.echo(b"after garbage"), b"after garbage")

        # Over the size cap: 431 (or a close), never a page.
        big = b"GET /metrics HTTP/1.1\r\nX-Fill: " + b"a" * 20000 + b"\r\n\r\n"
        reply = raw_request(h.metrics, big)
        self.assertTrue(reply == b"" or reply.startswith(b"HTTP/1.1 431 "),
                        reply[:80])
        self.assertEqual(h.echo(b"after big"), b"after big")

        # A slow client is cut at the deadline: half a request, then
        # silence; the host closes it (a recv that returns, not our timeout).
        slow = harness.connect(h.metrics, timeout=30)
        slow.sendall(b"GET /metr")
        began = time.monotonic()
        try:
            self.assertEqual(slow.recv(100), b"")
        except ConnectionResetError:
            pass
        waited = time.monotonic() - began
        self.assertGreater(waited, TIMEOUT_MS / 1000 * 0.5)
        slow.close()

        # More idle clients than max_connections: a real scrape still gets
        # the page (the oldest idle one gives way), and the game echoes.
        idle = [harness.connect(h.metrics) for _ in range(3 * MAX_CONNECTIONS)]
        status, _, body = http_get(h.metrics)
        self.assertEqual(status, 200)
        self.assertIn(b"iocphost_accepted_total", body)
        self.assertEqual(h.echo(b"while squatted"), b"while squatted")
        for s in idle:
            s.close()

        # A flood of connections that send nothing: the host stays up.
        for _ in range(200):
            with socket.create_connection((harness.LOOPBACK, h.metrics),
                                          timeout=5):
                pass
        self.assertEqual(http_get(h.metrics)[0], 200)
        self.assertEqual(h.echo(b"after flood"), b"after flood")

    def test_address_in_use_stops_the_start(self):
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        taken.bind((harness.LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        game = harness.free_port()
        config = harness.make_config(
            {"echo": {}}, [harness.server_service("game", "echo", game)])
        config["metrics"] = {"address": "%s:%d" % (harness.LOOPBACK, port)}
        host = Host(self, config, "metrics-in-use")
        result = harness.run_cli(["run", "-c", host.config_path], timeout=60)
        taken.close()
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('metrics.address "%s:%d": cannot listen: the address '
                      'is in use' % (harness.LOOPBACK, port), result.stderr)
        self.assertFalse(harness.port_accepts(game))


@unittest.skipUnless(PROMETHEUS and PROMTOOL,
                     "prometheus not installed (Debian's prometheus package; "
                     "scripts/deps.sh installs it)")
class RealPrometheusTest(HostTestCase):

    def start_prometheus(self, target_port):
        folder = tempfile.mkdtemp(prefix="iocphost-prom-")
        self.addCleanup(shutil.rmtree, folder, True)
        self.prom_port = harness.free_port()
        config = os.path.join(folder, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: iocphost\n"
                    "    static_configs:\n"
                    "      - targets: ['%s:%d']\n" %
                    (harness.LOOPBACK, target_port))
        log = open(os.path.join(folder, "prometheus.log"), "w+")
        self.addCleanup(log.close)
        # Offline and small: loopback only, no alertmanager or remote
        # storage configured, a temp TSDB kept one hour, few queries at once.
        self.prom = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(folder, "data"),
             "--storage.tsdb.retention.time=1h",
             "--web.listen-address=%s:%d" % (harness.LOOPBACK,
                                             self.prom_port),
             "--web.max-connections=16", "--query.max-concurrency=2",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def stop():
            self.prom.terminate()
            try:
                self.prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        self.addCleanup(stop)
        self.prom_log = log
        def ready():
            if self.prom.poll() is not None:
                return True
            try:
                return http_get(self.prom_port, "/-/ready", 5)[0] == 200
            except OSError:
                return False
        harness.wait_until(ready, 60, "prometheus to be ready")
        if self.prom.poll() is not None:
            log.seek(0)
            self.fail("prometheus exited: %s" % log.read()[-3000:])

    def query(self, promql):
        url = "http://%s:%d/api/v1/query?%s" % (
            harness.LOOPBACK, self.prom_port,
            urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=harness.scaled(10)) as r:
            answer = json.load(r)
        self.assertEqual(answer["status"], "success", answer)
        return answer["data"]["result"]

    def test_promql_matches_status_json(self):
        # Every callback timed, so the histogram's count is exact.
        h = MetricsHost(self, callback_sample=1)
        self.start_prometheus(h.metrics)
        # Traffic: echo on two sessions, one left open; chat packets.
        self.assertEqual(h.echo(b"a" * 5000), b"a" * 5000)
        kept = harness.connect(h.game)
        self.addCleanup(kept.close)
        self.assertEqual(harness.exchange(kept, b"b" * 777), b"b" * 777)
        chat = PacketClient(h.chat)
        self.addCleanup(chat.close)
        chat.send(JOIN, b"ann")
        self.assertEqual(chat.recv()[0], JOINED)
        chat.send(SAY, b"hello")
        self.assertEqual(chat.recv()[0], SAID)
        traffic_done = time.time()
        # A scrape that began after the traffic, recorded by Prometheus.
        harness.wait_until(
            lambda: any(float(r["value"][1]) > traffic_done
                        for r in self.query('timestamp(up{job="iocphost"})')),
            60, "a scrape after the traffic")
        up = self.query('up{job="iocphost"}')
        self.assertEqual([float(r["value"][1]) for r in up], [1.0])
        status = h.host.status_json()
        fields = {"sessions": "iocphost_sessions",
                  "accepted": "iocphost_accepted_total",
                  "bytes_in": "iocphost_bytes_in_total",
                  "bytes_out": "iocphost_bytes_out_total",
                  "packets_in": "iocphost_packets_in_total",
                  "packets_out": "iocphost_packets_out_total"}
        for service in status["services"]:
            for key, metric in fields.items():
                result = self.query('%s{job="iocphost",service="%s"}' %
                                    (metric, service["name"]))
                self.assertEqual(len(result), 1, (metric, result))
                self.assertEqual(float(result[0]["value"][1]), service[key],
                                 "%s of %s: prometheus %s, status %s" %
                                 (metric, service["name"], result,
                                  service[key]))
        game = [s for s in status["services"] if s["name"] == "game"][0]
        self.assertEqual(game["sessions"], 1)
        self.assertEqual(game["bytes_in"], 5777)
        chat_status = [s for s in status["services"] if s["name"] == "chat"][0]
        self.assertGreaterEqual(chat_status["packets_in"], 2)
        # A metric the echo plugin defines (ABI 1.3), with its own label and
        # the host's plugin and generation labels.
        result = self.query('echo_bytes_total{job="iocphost"}')
        self.assertEqual(len(result), 1, result)
        self.assertEqual(
            {k: v for k, v in result[0]["metric"].items()
             if k in ("service", "plugin", "generation")},
            {"service": "game", "plugin": "echo", "generation": "1"}, result)
        self.assertEqual(float(result[0]["value"][1]), game["bytes_in"])
        # Callback durations: every echo receive was measured.
        result = self.query(
            'iocphost_plugin_callback_duration_seconds_count'
            '{job="iocphost",plugin="echo",kind="on_recv"}')
        self.assertEqual(len(result), 1, result)
        self.assertGreaterEqual(float(result[0]["value"][1]), 2)
        result = self.query('iocphost_plugin_stalls_total{plugin="echo"}')
        self.assertEqual([float(r["value"][1]) for r in result], [0.0])


if __name__ == "__main__":
    unittest.main()
