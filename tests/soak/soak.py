"""Soak: churn plus load against one host for a long time, on loopback.

Not a CI test (tests/soak/soak.sh runs it, against the Linux build or the
Windows build under Wine). It starts the host with the hostile test plugin
on six server services and one client service, and keeps, for the whole
duration:
  - load: steady clients exchanging packets and raw bytes, every echo
    checked;
  - churn: clients that connect and leave in every way (FIN, reset,
    half-close, malformed frames, trickling, slow reading, chaos commands,
    a flood past max_sessions);
  - the host's own client service: sessions to its echo-raw service that
    go idle and are cut (idle_timeout_ms), then reconnect, all the time.
Every interval it prints the host's memory (VmRSS, VmHWM), its descriptor
count and its counters; at the end the drift between the first and the last
sample, and it fails (exit 1) on a client error, a plugin violation, a
sanitizer report, an unclean stop, or drift beyond its bounds:
  - VmRSS under load, first sample to last: at most --max-rss-drift-kib
    (default 1024 KiB; the runs in docs/robustness.md drifted +8..+156 KiB,
    all of it in the first minutes);
  - descriptors held by no session (descriptors minus open sessions, which
    also counts the host's own client sessions, reconnecting all the time),
    quiet after the load against the median under load: at most
    --max-fd-drift more (default 8: a sample may catch a few connections
    between their accept or connect and their session).
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "plugins",
                                "hostile"))
import harness  # noqa: E402
import hostile_client as hc  # noqa: E402


class Soak:

    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.errors = []
        self.ports = {name: harness.free_port() for name in
                      ("echo-pkt", "echo-raw", "chaos-pkt", "sink-raw",
                       "push-raw", "small-pkt")}

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def error(self, what):
        with self.lock:
            self.errors.append(what)
        print("ERROR: %s" % what, file=sys.stderr, flush=True)

    # --- the host ----------------------------------------------------------

    def start_host(self):
        p = self.ports
        services = [
            harness.server_service("echo-pkt", "hostile", p["echo-pkt"],
                                   "packet", idle_timeout_ms=20000),
            harness.server_service("echo-raw", "hostile", p["echo-raw"],
                                   "raw"),
            harness.server_service("chaos-pkt", "hostile", p["chaos-pkt"],
                                   "packet",
                                   send_queue_limit_bytes=256 * 1024),
            harness.server_service("sink-raw", "hostile", p["sink-raw"], "raw",
                                   max_recv_bytes=4096,
                                   incomplete_timeout_ms=1000),
            harness.server_service("push-raw", "hostile", p["push-raw"], "raw",
                                   send_queue_limit_bytes=256 * 1024),
            harness.server_service("small-pkt", "hostile", p["small-pkt"],
                                   "packet", max_sessions=20,
                                   max_packet_bytes=256, max_recv_bytes=512,
                                   incomplete_timeout_ms=1000),
        ]
        # The engine's client side churns too: each session sends its hello
        # to echo-raw, keeps the echo unconsumed (sink), goes idle, is cut
        # and reconnects.
        services.append(harness.client_service(
            "sink-client", "hostile", p["echo-raw"], "raw",
            sessions=self.args.client_sessions, idle_timeout_ms=200,
            reconnect={"min_delay_ms": 10, "max_delay_ms": 50}))
        config = harness.make_config({"hostile": {"log_sessions": False}},
                                     services, threads=self.args.threads)
        self.dir = tempfile.mkdtemp(prefix="iocphost-soak-")
        self.config_path = os.path.join(self.dir, "config.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.log_path = os.path.join(self.dir, "host.log")
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            harness.host_command() + ["run", "-c", self.config_path],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=self.log_file)
        harness.wait_until(lambda: all(harness.port_accepts(port)
                                       for port in self.ports.values()),
                           20, "the host's ports")
        self.pid = self.process.pid

    def status(self):
        result = harness.run_cli(["status", "-c", self.config_path, "--json"])
        text = result.stdout
        return json.loads(text[text.index("{"):]) if result.returncode == 0 \
            else None

    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def served_sessions(self):
        """Sessions open now that the soak's own clients made: all of the
        server services' sessions but those of the client service's."""
        st = self.status()
        if not st or not st.get("services"):
            return None
        by_name = {s["name"]: s["sessions"] for s in st["services"]}
        own = by_name.pop("sink-client", 0)
        return sum(by_name.values()) - own

    # --- load: steady clients ----------------------------------------------

    def steady_packet(self, index):
        rng = random.Random(index)
        while not self.stop.is_set():
            try:
                client = harness.PacketClient(self.ports["echo-pkt"],
                                              timeout=10)
                hc.hello_packet(client)
                for _ in range(rng.randrange(200, 2000)):
                    if self.stop.is_set():
                        break
                    payload = rng.randbytes(rng.randrange(0, 4000))
                    packet_id = rng.randrange(0, 0xFFF0)
                    client.send(packet_id, payload)
                    if client.recv(timeout=10) != (packet_id, payload):
                        self.error("steady packet client %d: wrong echo" %
                                   index)
                        break
                    self.count("packets")
                    time.sleep(rng.random() * 0.01)
                client.close()
            except Exception as e:  # counted; the soak goes on
                self.error("steady packet client %d: %r" % (index, e))
                time.sleep(1)

    def steady_raw(self, index):
        rng = random.Random(10000 + index)
        while not self.stop.is_set():
            try:
                sock = harness.connect(self.ports["echo-raw"], timeout=10)
                hc.hello_raw(sock)
                for _ in range(rng.randrange(20, 200)):
                    if self.stop.is_set():
                        break
                    data = rng.randbytes(rng.randrange(1, 100000))
                    if harness.exchange(sock, data, timeout=20) != data:
                        self.error("steady raw client %d: wrong echo" % index)
                        break
                    self.count("raw_bytes", len(data))
                    time.sleep(rng.random() * 0.02)
                sock.close()
            except Exception as e:
                self.error("steady raw client %d: %r" % (index, e))
                time.sleep(1)

    # --- churn -----------------------------------------------------------

    def churn(self, index):
        rng = random.Random(20000 + index)
        kinds = ["fin", "reset", "half_close", "malformed", "trickle",
                 "slow_reader", "chaos", "flood", "sink"]
        while not self.stop.is_set():
            kind = rng.choice(kinds)
            try:
                getattr(self, "churn_" + kind)(rng)
                self.count("churn_" + kind)
            except (OSError, AssertionError, harness.WaitTimeout):
                self.count("churn_" + kind)  # the host may cut us: expected
            except Exception as e:
                self.error("churn %s: %r" % (kind, e))
            time.sleep(rng.random() * 0.02)

    def churn_fin(self, rng):
        c = harness.PacketClient(self.ports["echo-pkt"], timeout=10)
        hc.hello_packet(c)
        c.send(1, rng.randbytes(rng.randrange(0, 1000)))
        c.recv(timeout=10)
        c.close()

    def churn_reset(self, rng):
        sock = harness.connect(self.ports[rng.choice(["echo-pkt", "echo-raw",
                                                      "chaos-pkt"])])
        if rng.random() < 0.5:
            sock.sendall(rng.randbytes(rng.randrange(1, 50000)))
        harness.abort(sock)

    def churn_half_close(self, rng):
        sock = harness.connect(self.ports["echo-raw"], timeout=10)
        data = rng.randbytes(rng.randrange(1, 20000))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = harness.read_until_eof(sock, timeout=20)
        sock.close()
        if got[8:] != data:
            self.error("half-closed client: %d of %d bytes" %
                       (len(got) - 8, len(data)))

    def churn_malformed(self, rng):
        sock = harness.connect(self.ports["small-pkt"], timeout=10)
        bad = rng.choice([struct.pack("<HH", rng.randrange(0, 4), 1),
                          struct.pack("<HH", rng.randrange(257, 65536), 1),
                          rng.randbytes(rng.randrange(1, 3000))])
        sock.sendall(bad)
        harness.read_until_eof(sock, timeout=10)
        sock.close()

    def churn_trickle(self, rng):
        sock = harness.connect(self.ports["small-pkt"], timeout=10)
        sock.sendall(struct.pack("<HH", 200, 1))
        for _ in range(30):  # cut after incomplete_timeout_ms 1000
            sock.send(b"t")
            time.sleep(0.1)
        sock.close()

    def churn_slow_reader(self, rng):
        sock = hc.small_receive_buffer_socket(self.ports["push-raw"])
        hc.hello_raw(sock)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # cut at send_queue_limit_bytes
            try:
                sock.settimeout(0.5)
                if not sock.recv(1):
                    break
            except socket.timeout:
                continue
            time.sleep(0.2)
        sock.close()

    def churn_chaos(self, rng):
        sock = harness.connect(self.ports["chaos-pkt"], timeout=10)
        for _ in range(rng.randrange(1, 8)):
            command = rng.choice([hc.CMD_ECHO, hc.CMD_TIMERS, hc.CMD_LATE,
                                  hc.CMD_ON_SEND, hc.CMD_POST])
            payload = bytes([rng.randrange(1, 5), rng.randrange(0, 20)])
            sock.sendall(harness.pack(command, payload))
        sock.sendall(harness.pack(rng.choice([hc.CMD_BYE, hc.CMD_ECHO])))
        if rng.random() < 0.5:
            sock.shutdown(socket.SHUT_WR)
        harness.read_until_eof(sock, timeout=20)
        sock.close()

    def churn_flood(self, rng):
        held = []
        for _ in range(40):  # past max_sessions 20
            held.append(socket.create_connection(
                (harness.LOOPBACK, self.ports["small-pkt"]), timeout=5))
        for sock in held:
            sock.close()

    def churn_sink(self, rng):
        sock = harness.connect(self.ports["sink-raw"], timeout=10)
        sock.sendall(rng.randbytes(rng.randrange(1, 8000)))
        harness.read_until_eof(sock, timeout=10)
        sock.close()

    # --- sampling ----------------------------------------------------------

    def sample(self, started):
        mem = hc.memory_kib(self.pid)
        fds = hc.descriptor_count(self.pid)
        st = self.status() or {"services": []}
        sessions = sum(s["sessions"] for s in st["services"])
        rejected = sum(s["rejected"] for s in st["services"])
        accepted = sum(s["accepted"] for s in st["services"])
        reasons = {}
        for s in st["services"]:
            for k, v in s.get("disconnects", {}).items():
                reasons[k] = reasons.get(k, 0) + v
        with self.lock:
            counts = dict(self.counts)
            errors = len(self.errors)
        row = {"t": time.monotonic() - started, "rss": mem["VmRSS"],
               "hwm": mem["VmHWM"], "fds": fds, "sessions": sessions}
        print("%6.0f s  VmRSS %7d KiB  VmHWM %7d KiB  fds %5d  sessions %4d"
              "  accepted %8d  rejected %7d  packets %9d  raw %6d MiB  "
              "churn %7d  client errors %d" %
              (row["t"], row["rss"], row["hwm"], fds, sessions, accepted,
               rejected, counts.get("packets", 0),
               counts.get("raw_bytes", 0) >> 20,
               sum(v for k, v in counts.items() if k.startswith("churn_")),
               errors), flush=True)
        print("         reasons %s" % json.dumps(reasons, sort_keys=True),
              flush=True)
        return row

    def run(self):
        self.start_host()
        print("soak: host pid %d, %s minute(s), sample every %d s, %d steady "
              "+ %d churn clients; log %s" %
              (self.pid, self.args.minutes, self.args.interval,
               self.args.steady, self.args.churn, self.log_path), flush=True)
        started = time.monotonic()
        quiet_before = self.sample(started)
        threads = [threading.Thread(target=self.steady_packet, args=(i,),
                                    daemon=True)
                   for i in range(self.args.steady)]
        threads += [threading.Thread(target=self.steady_raw, args=(i,),
                                     daemon=True)
                    for i in range(max(1, self.args.steady // 5))]
        threads += [threading.Thread(target=self.churn, args=(i,),
                                     daemon=True)
                    for i in range(self.args.churn)]
        for t in threads:
            t.start()
        end = started + self.args.minutes * 60
        rows = []
        while time.monotonic() < end:
            time.sleep(min(self.args.interval, max(0, end - time.monotonic())))
            rows.append(self.sample(started))
        self.stop.set()
        for t in threads:
            t.join(30)
        # Quiet again: every churn session has ended (the client service's
        # own sessions keep reconnecting; the echo-raw sessions they make
        # are theirs).
        harness.wait_until(lambda: self.served_sessions() == 0,
                           30, "every session to end")
        quiet_after = self.sample(started)
        self.process.send_signal(harness.STOP_SIGNAL)  # Ctrl+C under Wine
        code = self.process.wait(timeout=60)
        self.log_file.close()
        log = self.log()
        totals = hc.summary(log) or {}
        reports = [m for m in hc.SANITIZER_MARKS if m in log]
        first, last = rows[0], rows[-1]
        print("drift under load (first to last sample, %.0f s apart): VmRSS "
              "%+d KiB (%d -> %d), fds %+d (%d -> %d)" %
              (last["t"] - first["t"], last["rss"] - first["rss"],
               first["rss"], last["rss"], last["fds"] - first["fds"],
               first["fds"], last["fds"]), flush=True)
        print("drift when quiet (before the load, after it): VmRSS %+d KiB "
              "(%d -> %d), fds %+d (%d -> %d); peak VmHWM %d KiB" %
              (quiet_after["rss"] - quiet_before["rss"], quiet_before["rss"],
               quiet_after["rss"], quiet_after["fds"] - quiet_before["fds"],
               quiet_before["fds"], quiet_after["fds"], quiet_after["hwm"]),
              flush=True)
        print("host exit code %d; plugin summary %s; %d client errors; "
              "sanitizer reports: %s" % (code, totals, len(self.errors),
                                         reports or "none"), flush=True)
        rss_drift = last["rss"] - first["rss"]
        spare = sorted(row["fds"] - row["sessions"] for row in rows)
        spare_under_load = spare[len(spare) // 2]
        spare_after = quiet_after["fds"] - quiet_after["sessions"]
        fd_drift = spare_after - spare_under_load
        print("descriptors held by no session: %d under load (median), %d "
              "quiet after it (%+d)" %
              (spare_under_load, spare_after, fd_drift), flush=True)
        drift_problems = []
        if rss_drift > self.args.max_rss_drift_kib:
            drift_problems.append(
                "VmRSS grew %d KiB under load, more than --max-rss-drift-kib "
                "%d: a leak?" % (rss_drift, self.args.max_rss_drift_kib))
        if fd_drift > self.args.max_fd_drift:
            drift_problems.append(
                "%d more descriptors held by no session after the load than "
                "under it, more than --max-fd-drift %d: a descriptor leak?" %
                (fd_drift, self.args.max_fd_drift))
        for problem in drift_problems:
            print("soak: %s" % problem, flush=True)
        ok = (code == 0 and not self.errors and not reports and
              totals.get("violations", 1) == 0 and not drift_problems)
        print("soak: %s" % ("PASSED" if ok else "FAILED"), flush=True)
        return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--interval", type=int, default=60,
                        help="seconds between two samples")
    parser.add_argument("--steady", type=int, default=50,
                        help="steady packet clients (raw: a fifth of it)")
    parser.add_argument("--churn", type=int, default=8,
                        help="threads connecting and leaving")
    parser.add_argument("--threads", type=int, default=2,
                        help="the host's worker threads")
    parser.add_argument("--client-sessions", type=int, default=8,
                        help="sessions of the host's own client service")
    parser.add_argument("--max-rss-drift-kib", type=int, default=1024,
                        help="VmRSS growth allowed under load, first sample "
                        "to last")
    parser.add_argument("--max-fd-drift", type=int, default=8,
                        help="descriptors held by no session allowed to "
                        "stay open after the load, over the median under it")
    args = parser.parse_args()
    if args.minutes * 60 < 2 * args.interval:
        parser.error("--minutes must give at least two samples under load "
                     "(two --interval periods) to measure drift")
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
