"""The client side of the hostile test plugin (hostile.c), and what the
hostile tests and the soak script measure about the host process.

Imported by tests/integration/test_hostile_*.py and tests/soak/soak.py,
next to harness.py (which this module uses and does not change)."""

import json
import os
import re
import select
import socket
import struct
import threading
import time
import unittest

import harness

HELLO_ID = 0xFFFE

# Chaos commands (hostile.c).
CMD_ECHO, CMD_BYE, CMD_TIMERS, CMD_LATE, CMD_ON_SEND, CMD_FLOOD, CMD_POST = \
    range(1, 8)

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer", "runtime error:",
                   "ERROR: UndefinedBehaviorSanitizer")

SESSION_LINE = re.compile(
    r"hostile session (\d+) service=(\S+) accepted=(\d+) reason=(\w+)")


def hello_raw(sock, timeout=10.0):
    """Reads a raw service's hello: the session id."""
    data = b""
    deadline = time.monotonic() + harness.scaled(timeout)
    while len(data) < 8:
        left = deadline - time.monotonic()
        if left <= 0:
            raise harness.WaitTimeout("no hello")
        sock.settimeout(left)
        chunk = sock.recv(8 - len(data))
        if not chunk:
            raise AssertionError("EOF before the hello")
        data += chunk
    return struct.unpack("<Q", data)[0]


def hello_packet(client, timeout=10.0):
    """Reads a packet service's hello (packet 0xFFFE): the session id."""
    packet = client.recv(timeout=timeout)
    if packet is None:
        raise AssertionError("EOF before the hello")
    packet_id, payload = packet
    if packet_id != HELLO_ID or len(payload) != 8:
        raise AssertionError("not a hello: %r" % (packet,))
    return struct.unpack("<Q", payload)[0]


def session_ends(log):
    """{session id: (service, accepted bytes, reason)} from the plugin's
    per-session lines (settings "log_sessions": true)."""
    return {int(m.group(1)): (m.group(2), int(m.group(3)), m.group(4))
            for m in SESSION_LINE.finditer(log)}


def summary(log):
    return harness.summary_fields(r"hostile summary:", log)


def host_lines_about(log, session_id):
    """The host's own log lines (not the plugin's) naming a session."""
    needle = "session %d (" % session_id
    return [line for line in log.splitlines()
            if needle in line and "[plugin " not in line]


def assert_no_sanitizer_reports(test, host):
    log = host.log()
    for mark in SANITIZER_MARKS:
        test.assertNotIn(mark, log, "sanitizer report in %s's log" %
                         host.label)


def status(host):
    """The running host's `status --json`, as a dict."""
    result = harness.run_cli(["status", "-c", host.config_path, "--json"])
    if result.returncode != 0:
        raise AssertionError("status failed (%d): %s%s" %
                             (result.returncode, result.stdout, result.stderr))
    text = result.stdout
    return json.loads(text[text.index("{"):])


def service_status(host, name):
    for service in status(host)["services"]:
        if service["name"] == name:
            return service
    raise AssertionError("no service %s in status" % name)


# --- the host process, seen from /proc --------------------------------------

def host_pid(host):
    """The pid whose /proc entry describes the running host: the host itself
    on Linux; under Wine, the Wine process that runs iocphost.exe (the
    harness starts `wine iocphost.exe`, which becomes that process). Wine
    runs a Windows program inside one Linux process and reports that
    process's VmRSS and VmHWM as the program's working set and peak working
    set (GetProcessMemoryInfo), so the same figures serve both builds; they
    include Wine's own ~20 MiB, which a difference cancels out."""
    if not os.path.isdir("/proc"):
        raise unittest.SkipTest("no /proc here to read the host's memory "
                                "(a native Windows run)")
    pid = host.process.pid
    try:
        exe = os.path.basename(os.readlink("/proc/%d/exe" % pid))
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError as error:
        raise AssertionError("cannot read /proc/%d of %s: %s" %
                             (pid, host.label, error)) from None
    program = os.path.basename(argv[0].decode(errors="replace")).lower()
    if exe.startswith("iocphost") or (exe.startswith("wine") and
                                      program == "iocphost.exe"):
        return pid
    raise AssertionError("/proc/%d is %s running %r, not the host" %
                         (pid, exe, argv[0]))


def memory_kib(pid):
    """{"VmRSS": kib, "VmHWM": kib} of a process."""
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def reset_peak(pid):
    """Resets VmHWM to the current RSS (Linux 4.0+: write 5 to clear_refs);
    returns False when not allowed."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def socket_buffer_bytes(rcvbuf=4096, chunk=16384):
    """How many bytes the kernel holds between a loopback sender and a peer
    that never reads (the sender's send buffer, grown as Linux grows it, and
    the reader's receive window of rcvbuf): what a host hands to the network
    for a slow reader beyond its own queue. Measured with a socket set up as
    the host sets its own (TCP_NODELAY, default buffers), written until a
    write has not gone through for 0.3 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((harness.LOOPBACK, 0))
        listener.listen(1)
        reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        reader.connect(listener.getsockname())
        sender, _ = listener.accept()
    with reader, sender:
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sender.setblocking(False)
        data = b"x" * chunk
        total = 0
        deadline = time.monotonic() + harness.scaled(30)
        last = time.monotonic()
        while time.monotonic() - last < 0.3:
            if time.monotonic() > deadline:
                raise AssertionError("the kernel took more than %d bytes" %
                                     total)
            try:
                total += sender.send(data)
                last = time.monotonic()
            except BlockingIOError:
                select.select([], [sender], [], 0.05)
        return total


def descriptor_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def sanitized(pid):
    """True when the host runs under ASan or TSan: their allocators keep
    freed memory in quarantine and shadow it, so RSS bounds do not apply."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            maps = f.read()
    except OSError:
        return False
    return "libasan" in maps or "libtsan" in maps


# --- small clients ----------------------------------------------------------

class Bystander(threading.Thread):
    """A client of an echo service that exchanges a packet (or raw bytes)
    every few milliseconds for as long as it runs, and records the round
    trip times. Any failure is kept and re-raised by stop()."""

    def __init__(self, port, packet=True, seed=1, interval=0.002):
        super().__init__(daemon=True)
        self.port = port
        self.packet = packet
        self.seed = seed
        self.interval = interval
        self.stopping = threading.Event()
        self.rounds = 0
        self.latencies = []
        self.error = None
        self.ready = threading.Event()

    def run(self):
        import random
        rng = random.Random(self.seed)
        try:
            if self.packet:
                client = harness.PacketClient(self.port, timeout=10)
                hello_packet(client)
            else:
                sock = harness.connect(self.port, timeout=10)
                hello_raw(sock)
            self.ready.set()
            while not self.stopping.is_set():
                payload = rng.randbytes(rng.randrange(0, 300))
                packet_id = rng.randrange(0, 0xFFF0)
                started = time.monotonic()
                if self.packet:
                    client.send(packet_id, payload)
                    back = client.recv(timeout=10)
                    if back != (packet_id, payload):
                        raise AssertionError("bystander got %r" %
                                             (back if back is None else
                                              (back[0], back[1][:40]),))
                else:
                    data = payload or b"."
                    if harness.exchange(sock, data, timeout=10) != data:
                        raise AssertionError("bystander: wrong echo")
                self.latencies.append(time.monotonic() - started)
                self.rounds += 1
                self.stopping.wait(self.interval)
            (client.sock if self.packet else sock).close()
        except BaseException as error:  # re-raised by stop()
            self.error = error
            self.ready.set()

    def start_and_wait(self):
        self.start()
        self.ready.wait(harness.scaled(20))
        if self.error:
            raise self.error
        return self

    def wait_rounds(self, more, timeout=20.0):
        want = self.rounds + more
        harness.wait_until(lambda: self.rounds >= want or self.error,
                           timeout, "the bystander to echo %d more" % more)
        if self.error:
            raise self.error

    def stop(self):
        self.stopping.set()
        self.join(harness.scaled(30))
        if self.error:
            raise AssertionError("the bystander failed: %r" % self.error) \
                from self.error
        return self.rounds


def percentiles(samples):
    """(p50, p99, max) in milliseconds."""
    if not samples:
        return (0.0, 0.0, 0.0)
    ordered = sorted(samples)

    def at(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
    return (at(0.50), at(0.99), ordered[-1] * 1000)


def small_receive_buffer_socket(port, rcvbuf=4096, timeout=10.0):
    """A connected socket whose receive window stays small: a slow reader
    that the host's queue, not the kernel, has to absorb."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(harness.scaled(timeout))
    sock.connect((harness.LOOPBACK, port))
    return sock
