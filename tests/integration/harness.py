"""Harness for the integration tests: the real host binary, real plugins and
real loopback sockets.

Where things are comes from the environment (ctest sets it; see
tests/integration/CMakeLists.txt), so the same tests can run against another
build of the host:

  IOCPHOST_BIN            the host command line, split like a shell would
                          (e.g. "build/bin/iocphost", later "wine x/iocphost.exe")
  IOCPHOST_BUILD_DIR      build tree holding the plugins (default: <source>/build)
  IOCPHOST_SOURCE_DIR     source tree (default: two folders up from here)
  IOCPHOST_PLUGIN_SUFFIX  ".so" or ".dll" (default: by platform)
  IOCPHOST_PLUGIN_DIR     optional extra folder searched first for plugins
  IOCPHOST_TIMEOUT_SCALE  multiplies every timeout (slow machines, sanitizers)
  IOCPHOST_KEEP_TEMP      "1" keeps each test's temp folder (config and logs)

Rules every test keeps: every socket operation has a timeout, every wait is a
bounded poll loop (never a fixed sleep), only loopback addresses are used,
and a host's log is printed when its test fails.
"""

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(
    os.environ.get("IOCPHOST_SOURCE_DIR") or os.path.join(HERE, "..", ".."))
BUILD_DIR = os.path.abspath(
    os.environ.get("IOCPHOST_BUILD_DIR") or os.path.join(SOURCE_DIR, "build"))
PLUGIN_SUFFIX = os.environ.get("IOCPHOST_PLUGIN_SUFFIX") or (
    ".dll" if os.name == "nt" else ".so")
TIMEOUT_SCALE = float(os.environ.get("IOCPHOST_TIMEOUT_SCALE") or "1")
KEEP_TEMP = os.environ.get("IOCPHOST_KEEP_TEMP") == "1"

# The Windows build under Wine (IOCPHOST_BIN="wine .../iocphost.exe"): a
# graceful stop is asked for with SIGINT, which Wine turns into CTRL_C_EVENT
# for the Windows process (SIGTERM would end it at once); the control
# endpoint is a named pipe, which only iocphost.exe's own commands reach.
WINDOWS = PLUGIN_SUFFIX == ".dll"
STOP_SIGNAL = signal.SIGINT if WINDOWS else signal.SIGTERM

# The tests' temporary folders go under IOCPHOST_TEST_TMPDIR when it is set
# (the Windows build's, in its build folder: under Wine /tmp reads as
# "Everyone may delete what it holds"; see tests/integration/CMakeLists.txt).
# For this process only: the TMPDIR of the host, and of Wine, stays as is.
if os.environ.get("IOCPHOST_TEST_TMPDIR"):
    os.makedirs(os.environ["IOCPHOST_TEST_TMPDIR"], exist_ok=True)
    tempfile.tempdir = os.environ["IOCPHOST_TEST_TMPDIR"]


def posix_only(reason):
    """Skips a test or class on the Windows build, saying why."""
    return unittest.skipIf(WINDOWS, "POSIX only: " + reason)


LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.02  # seconds between two looks of a bounded poll loop


class WaitTimeout(AssertionError):
    """A bounded wait ran out of time."""


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def host_command():
    """The host binary as an argv prefix."""
    text = os.environ.get("IOCPHOST_BIN")
    if text:
        return shlex.split(text)
    return [os.path.join(BUILD_DIR, "bin", "iocphost")]


def plugin_path(name):
    """Absolute path of a built plugin, with its platform suffix."""
    file = name + PLUGIN_SUFFIX
    folders = []
    if os.environ.get("IOCPHOST_PLUGIN_DIR"):
        extra = os.environ["IOCPHOST_PLUGIN_DIR"]
        folders += [extra, os.path.join(extra, name)]
    folders += [
        os.path.join(BUILD_DIR, "plugins", name),
        os.path.join(BUILD_DIR, "tests", "integration", "plugins", name),
    ]
    for folder in folders:
        candidate = os.path.join(folder, file)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise AssertionError("plugin %s not built; looked in: %s" %
                         (file, ", ".join(folders)))


# --- ports and sockets ------------------------------------------------------

_ports_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A loopback TCP port that nothing listens on right now. Ports handed
    out by this process are not handed out twice."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise AssertionError("no free loopback port found")


def connect(port, timeout=5.0):
    """A connected loopback socket whose every operation times out."""
    s = socket.create_connection((LOOPBACK, port), timeout=scaled(timeout))
    s.settimeout(scaled(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def port_accepts(port, timeout=0.2):
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def abort(sock):
    """Close with a reset (RST) instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def wait_until(predicate, timeout, what):
    """Polls predicate() until it returns a true value, at most `timeout`
    seconds (scaled); returns that value or fails naming `what`."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout("timed out after %.1fs waiting for %s" %
                                 (scaled(timeout), what))
        time.sleep(POLL_INTERVAL)


def exchange(sock, data, expect_len=None, timeout=30.0):
    """Sends data while reading what comes back (so neither side's buffers
    can deadlock us) until at least expect_len (default len(data)) bytes came
    back; returns everything received."""
    expect_len = len(data) if expect_len is None else expect_len
    deadline = time.monotonic() + scaled(timeout)
    view = memoryview(data)
    sent = 0
    received = bytearray()
    while sent < len(data) or len(received) < expect_len:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                "exchange timed out: sent %d/%d, received %d/%d bytes" %
                (sent, len(data), len(received), expect_len))
        writers = [sock] if sent < len(data) else []
        readable, writable, _ = select.select([sock], writers, [],
                                              min(left, 1.0))
        if writable:
            sent += sock.send(view[sent:sent + 65536])
        if readable:
            chunk = sock.recv(262144)
            if not chunk:
                raise AssertionError(
                    "connection closed: sent %d/%d, received %d/%d bytes" %
                    (sent, len(data), len(received), expect_len))
            received += chunk
    return bytes(received)


def read_until_eof(sock, timeout=10.0, limit=64 << 20):
    """Everything the peer sends until it closes (bounded in time and size)."""
    deadline = time.monotonic() + scaled(timeout)
    data = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no EOF within %.1fs (got %d bytes)" %
                                 (scaled(timeout), len(data)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise WaitTimeout("no EOF within %.1fs (got %d bytes)" %
                              (scaled(timeout), len(data))) from None
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise AssertionError("more than %d bytes before EOF" % limit)


def read_text(path):
    """A text file's content, or "" while it does not exist (yet)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def read_to_end(sock, timeout=10.0, limit=256 << 20):
    """Reads until the connection ends; returns (bytes read, "fin" or
    "reset"): how the peer ended the stream (bounded in time and size)."""
    deadline = time.monotonic() + scaled(timeout)
    count = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout("no end of stream within %.1fs (got %d bytes)" %
                              (scaled(timeout), count))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise WaitTimeout("no end of stream within %.1fs (got %d bytes)"
                              % (scaled(timeout), count)) from None
        except ConnectionResetError:
            return count, "reset"
        if not chunk:
            return count, "fin"
        count += len(chunk)
        if count > limit:
            raise AssertionError("more than %d bytes before the end" % limit)


# --- packet framing (SPEC section 5) ----------------------------------------

def pack(packet_id, payload=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    return struct.pack("<HH", 4 + len(payload), packet_id) + payload


class PacketClient:
    """A loopback client of a "packet" service."""

    def __init__(self, port, timeout=5.0):
        self.sock = connect(port, timeout)
        self.buffer = bytearray()

    def send(self, packet_id, payload=b"", timeout=5.0):
        self.sock.settimeout(scaled(timeout))
        self.sock.sendall(pack(packet_id, payload))

    def recv(self, timeout=5.0):
        """The next packet as (id, payload bytes); None at EOF."""
        return self._recv_before(time.monotonic() + scaled(timeout))

    def recv_matching(self, accept, timeout=5.0, what="a packet"):
        """Skips packets until accept(id, payload) is true; returns it."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            packet = self._recv_before(deadline, what)
            if packet is None:
                raise AssertionError("EOF while waiting for %s" % what)
            if accept(*packet):
                return packet

    def _recv_before(self, deadline, what="a packet"):
        while True:
            if len(self.buffer) >= 4:
                size, packet_id = struct.unpack_from("<HH", self.buffer)
                if size < 4:
                    raise AssertionError("malformed packet size %d" % size)
                if len(self.buffer) >= size:
                    payload = bytes(self.buffer[4:size])
                    del self.buffer[:size]
                    return packet_id, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout("timed out waiting for %s" % what)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise WaitTimeout("timed out waiting for %s" % what) from None
            if not chunk:
                if self.buffer:
                    raise AssertionError("EOF inside a packet")
                return None
            self.buffer += chunk

    def close(self):
        self.sock.close()


# --- the host ---------------------------------------------------------------

def server_service(name, plugin, port, framing="raw", **extra):
    service = {"name": name, "type": "server", "core": "main",
               "plugin": plugin, "address": "%s:%d" % (LOOPBACK, port),
               "framing": framing}
    service.update(extra)
    return service


def client_service(name, plugin, port, framing="packet", **extra):
    service = {"name": name, "type": "client", "core": "main",
               "plugin": plugin, "address": "%s:%d" % (LOOPBACK, port),
               "framing": framing}
    service.update(extra)
    return service


def make_config(plugins, services, threads=2, name="iocphost-test",
                log_level="info", drain_timeout_ms=5000):
    """A config dict. plugins: {name: settings}; each plugin's path is the
    absolute path of the built plugin."""
    return {
        "name": name,
        "log": {"level": log_level, "file": None},
        "shutdown": {"drain_timeout_ms": drain_timeout_ms},
        "cores": [{"name": "main", "threads": threads}],
        "plugins": [{"name": plugin, "path": plugin_path(plugin),
                     "settings": settings}
                    for plugin, settings in plugins.items()],
        "services": services,
    }


def run_program(argv, timeout=20.0, cwd=None, text=True, env=None):
    """Runs a program of ours to completion; returns CompletedProcess.

    Under Wine a process now and then ends with exit code 1 before its main
    runs, printing nothing: a plain hello-world .exe did so once in about
    4000 starts here, two at a time. Our programs (the host, the test tools)
    never exit non-zero without saying why on stderr, so that one signature
    (exit 1, no output at all) is Wine's, and the program runs once more,
    noted on the test's stderr."""
    def run():
        return subprocess.run(list(argv), cwd=cwd, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=text, errors="replace" if text else None,
                              timeout=scaled(timeout))
    result = run()
    if WINDOWS and result.returncode == 1 and not result.stdout and \
            not result.stderr:
        sys.stderr.write("harness: %s exited 1 saying nothing (a Wine "
                         "start failure); running it again\n" %
                         " ".join(os.path.basename(a) for a in argv[:3]))
        result = run()
    return result


def run_host_command(args, timeout=20.0, cwd=None, text=True):
    """Runs the host command to completion (run_program)."""
    return run_program(host_command() + list(args), timeout, cwd, text)


def run_cli(args, timeout=20.0, cwd=None):
    """Runs the host command to completion; returns CompletedProcess with
    text stdout/stderr."""
    return run_host_command(args, timeout, cwd)


class Host:
    """One host process running a generated config in its own temp folder
    (so runtime_dir, the default "run", is private to it too)."""

    def __init__(self, test, config, label="host", env=None):
        """env: extra environment variables for the host process; a value of
        None removes that variable. NOTIFY_SOCKET and WATCHDOG_* inherited
        from the test runner are never passed on (a test that plays systemd
        sets them here), so a CI runner's own service manager is never
        notified by a host under test."""
        self.test = test
        self.label = label
        self.config = config
        self.env = dict(env or {})
        self.preexec_fn = None  # run in the child before exec (POSIX only)
        self.extra_log_paths = []  # more files log() shows (e.g. log.file)
        self.dir = tempfile.mkdtemp(prefix="iocphost-%s-" % label)
        self.config_path = os.path.join(self.dir, "config.json")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.process = None
        self.probe_connections = 0
        test.track_host(self)

    def ports(self):
        """Ports of the config's server services."""
        return [int(s["address"].rsplit(":", 1)[1])
                for s in self.config["services"] if s["type"] == "server"]

    def environment(self):
        env = {k: v for k, v in os.environ.items()
               if k != "NOTIFY_SOCKET" and not k.startswith("WATCHDOG_")}
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def start(self, timeout=20.0, wait_ports=True):
        """Starts the host and waits until every server port accepts. Each
        successful probe is one session the plugin sees (probe_connections).
        wait_ports=False returns at once, without probing."""
        def launch():
            with open(self.stdout_path, "ab") as out, \
                    open(self.stderr_path, "ab") as err:
                self.process = subprocess.Popen(
                    host_command() + ["run", "-c", self.config_path],
                    cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=err, env=self.environment(),
                    preexec_fn=self.preexec_fn)
            return self.output_size()

        written_before = launch()
        relaunched = False
        if not wait_ports:
            return self
        pending = list(self.ports())

        def ready():
            nonlocal written_before, relaunched
            if self.process.poll() is not None:
                # Wine's start failure (see run_host_command): exit 1
                # before anything was written. Once only.
                if WINDOWS and not relaunched and \
                        self.process.returncode == 1 and \
                        self.output_size() == written_before:
                    sys.stderr.write("harness: %s exited 1 saying nothing "
                                     "(a Wine start failure); starting it "
                                     "again\n" % self.label)
                    relaunched = True
                    written_before = launch()
                    return False
                raise AssertionError(
                    "%s exited with %s before its ports accepted" %
                    (self.label, self.process.returncode))
            while pending and port_accepts(pending[0]):
                self.probe_connections += 1
                pending.pop(0)
            return not pending

        wait_until(ready, timeout, "%s to accept on %s" %
                   (self.label, self.ports()))
        return self

    def output_size(self):
        """Bytes in the host's stdout and stderr files so far."""
        return sum(os.path.getsize(path) if os.path.exists(path) else 0
                   for path in (self.stdout_path, self.stderr_path))

    def running(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout=30.0):
        """SIGTERM (graceful stop; STOP_SIGNAL: Ctrl+C on Windows); the host
        must exit 0 in time."""
        assert self.process is not None, "not started"
        if self.process.poll() is None:
            self.process.send_signal(STOP_SIGNAL)
        try:
            code = self.process.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not exit within %.1fs of SIGTERM" %
                                 (self.label, scaled(timeout)))
        if code != 0:
            raise AssertionError("%s exited with %d after SIGTERM, not 0" %
                                 (self.label, code))
        return code

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                pass

    def log(self):
        """What the host wrote so far, stderr then stdout."""
        parts = []
        for path in [self.stderr_path, self.stdout_path] + \
                list(self.extra_log_paths):
            try:
                with open(path, "r", errors="replace") as f:
                    parts.append(f.read())
            except FileNotFoundError:
                pass
        return "".join(parts)

    def dump(self, stream=sys.stderr, limit=200000):
        text = self.log()
        if len(text) > limit:
            text = "[... %d bytes cut ...]\n" % (len(text) - limit) + \
                text[-limit:]
        stream.write("\n----- %s log (%s) -----\n%s\n----- end of %s log "
                     "-----\n" % (self.label, self.dir, text, self.label))
        stream.flush()

    def control_path(self):
        """The control endpoint: <runtime_dir>/<name>.sock, runtime_dir
        resolved against the config file's folder (SPEC section 6)."""
        runtime_dir = self.config.get("runtime_dir", "run")
        if not os.path.isabs(runtime_dir):
            runtime_dir = os.path.join(self.dir, runtime_dir)
        return os.path.join(runtime_dir,
                            self.config.get("name", "iocphost") + ".sock")

    def control(self, request, timeout=10.0):
        """Asks the running host, as an operator does: through `iocphost
        status|stop|reload|reopen-logs -c FILE` on every platform, whose
        standard output is the answer only and whose standard error holds
        an error (SPEC section 8). Returns a ControlReply. A request the
        command line cannot send (garbage, for the protocol's own tests)
        goes over the Unix socket on Linux; the Windows pipe is out of
        reach, so the test skips."""
        words = request.split()
        if words and words[0] in CLI_CONTROL_COMMANDS and \
                words[1:] in CLI_CONTROL_COMMANDS[words[0]]:
            return self.control_through_cli(words, timeout)
        if WINDOWS:
            raise unittest.SkipTest(
                "the Windows control endpoint is a named pipe that only "
                "iocphost.exe's own commands reach; cannot send %r" % request)
        wire = control_exchange(self.control_path(), request.encode() + b"\n",
                                timeout=timeout).decode("utf-8", "replace")
        first, _, rest = wire.partition("\n")
        if first == "ok":
            return ControlReply(True, rest)
        return ControlReply(False, wire[len("error: "):]
                            if wire.startswith("error: ") else wire)

    def control_through_cli(self, words, timeout=10.0):
        # The command reads only the config's top level (name, runtime_dir)
        # to find the endpoint, so it reaches a host whose config no longer
        # validates as a whole (a plugin file removed).
        result = run_cli(words + ["-c", self.config_path], timeout=timeout)
        if result.returncode == 3:
            raise ConnectionRefusedError(
                "control: %s" % (result.stderr.strip() or "no instance"))
        if result.returncode == 0:
            # The answer alone: no protocol status line, nothing on stderr.
            if result.stdout.startswith("ok\n") or result.stderr:
                raise AssertionError(
                    "`iocphost %s` printed more than its answer:\nstdout "
                    "%r\nstderr %r" % (" ".join(words), result.stdout[:300],
                                        result.stderr[:300]))
            return ControlReply(True, result.stdout)
        prefix = "iocphost: %s: " % words[0]
        if result.returncode != 1 or result.stdout or \
                not result.stderr.startswith(prefix):
            raise AssertionError(
                "`iocphost %s` failed with %d, stdout %r, stderr %r; an "
                "error reply is exit code 1 with the reason on stderr only" %
                (" ".join(words), result.returncode, result.stdout[:300],
                 result.stderr[:300]))
        return ControlReply(False, result.stderr[len(prefix):])

    def status_json(self, timeout=10.0):
        """`iocphost status --json`, parsed: its standard output must be
        exactly one JSON document. The listeners accept (start() returns)
        a moment before the host answers status ("still starting"): that
        answer is asked again, within timeout."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            reply = self.control("status --json", timeout)
            if reply.ok or "still starting" not in reply or \
                    time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        if not reply.ok:
            raise AssertionError("status --json answered: %r" % reply[:500])
        return json.loads(reply)

    def remove(self):
        if KEEP_TEMP:
            return
        shutil.rmtree(self.dir, ignore_errors=True)


# The control commands of the command line, with the options each takes.
CLI_CONTROL_COMMANDS = {
    "status": ([], ["--json"]),
    "stop": ([],),
    "reload": ([], ["--dry-run"]),
    "reopen-logs": ([],),
}


class ControlReply(str):
    """What the running host answered: the text is the answer, or when ok
    is False the error's text (without "error: "). The control protocol's
    status line is never part of it."""

    def __new__(cls, ok, text):
        reply = str.__new__(cls, text)
        reply.ok = ok
        return reply


def control_exchange(path, data, timeout=10.0):
    """Talks to a control endpoint (a Unix stream socket): sends data while
    reading (so a server that stops reading cannot block us), stops sending
    if the server closes, and returns every byte of the reply up to its EOF.
    A reset after the reply counts as its end (a server that closes without
    reading everything we sent may reset); a reset before any reply byte is
    raised."""
    deadline = time.monotonic() + scaled(timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(scaled(timeout))
        sock.connect(path)
        sock.setblocking(False)
        view = memoryview(data)
        sent = 0
        reply = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    "control %s: no complete reply within %.1fs (sent %d/%d "
                    "bytes, got %r)" % (path, scaled(timeout), sent,
                                        len(data), bytes(reply[:200])))
            writers = [sock] if sent < len(data) else []
            readable, writable, _ = select.select([sock], writers, [],
                                                  min(left, 1.0))
            if writable:
                try:
                    sent += sock.send(view[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(data)  # the server stopped listening
                except BlockingIOError:
                    pass
            if readable:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    if not reply:
                        raise
                    return bytes(reply)
                if not chunk:
                    return bytes(reply)
                reply += chunk
    finally:
        sock.close()


class HostTestCase(unittest.TestCase):
    """Base class: hosts started by a test are killed if still running at its
    end, their logs printed if the test failed, their temp folders removed."""

    def track_host(self, host):
        self._hosts.append(host)

    def run(self, result=None):
        self._hosts = []
        result = result or self.defaultTestResult()
        problems = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            for host in self._hosts:
                host.kill()
            if len(result.failures) + len(result.errors) > problems:
                for host in self._hosts:
                    host.dump()
            for host in self._hosts:
                host.remove()


def run_parallel(function, argument_lists, timeout):
    """Runs function(*args) for each args in its own thread; waits at most
    `timeout` seconds (scaled) for all; re-raises the first failure and
    returns the results in order."""
    results = [None] * len(argument_lists)
    errors = []

    def body(index, args):
        try:
            results[index] = function(*args)
        except BaseException as error:  # reported to the caller
            errors.append((index, error))

    threads = [threading.Thread(target=body, args=(i, args), daemon=True)
               for i, args in enumerate(argument_lists)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + scaled(timeout)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = sum(thread.is_alive() for thread in threads)
    if errors:
        index, error = errors[0]
        raise AssertionError("worker %d of %d failed (%d failed in all): %r" %
                             (index, len(threads), len(errors), error)) \
            from error
    if alive:
        raise AssertionError("%d of %d workers still running after %.1fs" %
                             (alive, len(threads), scaled(timeout)))
    return results


def summary_fields(line_regex, text):
    """The key=value integers of the last log line matching line_regex."""
    matches = re.findall(line_regex + r"[^\n]*", text)
    if not matches:
        return None
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", matches[-1])}
