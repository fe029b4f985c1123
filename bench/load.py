"""The load generator: C threads doing password logins, and a latency probe.

Each worker thread owns one kept-alive ``http.client`` connection to Synapse
(lighter than ``requests``, so the generator stays far from being the
bottleneck) and takes logins from a shared list until it is empty: a closed
loop with exactly C logins in flight. A separate thread sends
``GET /_matrix/client/versions`` every 50 ms on its own connection during the
load and records how long each took: Synapse answers that request from the
reactor without touching the database, so its latency is how long the reactor
was busy with (or blocked by) something else.
"""

import http.client
import json
import os
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

LOGIN_PATH = "/_matrix/client/v3/login"
VERSIONS_PATH = "/_matrix/client/versions"
PROBE_INTERVAL = 0.05
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class HttpClient:
    """One kept-alive HTTP/1.1 connection; reconnects when the server closed it."""

    def __init__(self, base_url: str, timeout: float):
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._timeout = timeout
        self._conn: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> Tuple[int, bytes]:
        """Returns (status, body). Sends again once only when a kept-alive
        connection turned out to be closed before anything was answered."""
        for attempt in (1, 2):
            fresh = self._conn is None
            if self._conn is None:
                self._conn = self._connect()
            headers = {"Content-Type": "application/json"} if body is not None else {}
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if fresh or attempt == 2:
                    raise
                continue
            except Exception:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def process_cpu_seconds(pid: Optional[int]) -> float:
    """Returns the user + system CPU time of process ``pid`` (all its threads)."""
    if pid is None:
        return 0.0
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def tree_cpu_seconds(root: int) -> float:
    """Returns the CPU time (user + system) of process ``root`` and all its live
    descendants, with the children each of them has reaped: everything the
    benchmark started (the Synapses, PostgreSQL and its backends, the fakes)
    and itself."""
    children: Dict[int, List[int]] = {}
    ticks: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        # utime, stime, cutime, cstime: fields 14 to 17.
        ticks[pid] = sum(int(x) for x in fields[11:15])
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += ticks.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return total / _CLOCK_TICKS


# prometheus_client adds "_total" to counter names (and "_created" samples, skipped).
_TXN_SAMPLE = re.compile(r"^synapse_storage_transaction_time_(count|sum)(?:_total)?\{(.*)\} (\S+)$")
_DESC_LABEL = re.compile(r'desc="([^"]*)"')


def db_transactions(metrics_url: Optional[str]) -> Dict[str, Tuple[float, float]]:
    """Returns Synapse's database transactions so far, from its metrics
    listener: ``{name: (count, seconds)}`` (empty when ``metrics_url`` is None).

    The names are Synapse's own transaction descriptions (``get_user_by_id``,
    ``user_add_threepid``...); the seconds are wall time spent in them."""
    if metrics_url is None:
        return {}
    with urllib.request.urlopen(metrics_url, timeout=60) as response:
        text = response.read().decode("utf-8")
    out: Dict[str, Tuple[float, float]] = {}
    for line in text.splitlines():
        sample = _TXN_SAMPLE.match(line)
        if sample is None:
            continue
        kind, labels, value = sample.groups()
        desc = _DESC_LABEL.search(labels)
        name = desc.group(1) if desc else labels
        count, seconds = out.get(name, (0.0, 0.0))
        if kind == "count":
            count += float(value)
        else:
            seconds += float(value)
        out[name] = (count, seconds)
    return out


def transactions_between(
    before: Dict[str, Tuple[float, float]], after: Dict[str, Tuple[float, float]]
) -> Dict[str, Tuple[float, float]]:
    """Returns the transactions (count, seconds) run between two db_transactions() readings."""
    out = {}
    for name, (count, seconds) in after.items():
        old_count, old_seconds = before.get(name, (0.0, 0.0))
        if count > old_count:
            out[name] = (count - old_count, seconds - old_seconds)
    return out


def machine_cpu() -> Tuple[int, int]:
    """Returns (busy, total) CPU jiffies of the whole machine, all cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return total - idle, total


def busy_cores(before: Tuple[int, int], after: Tuple[int, int]) -> float:
    """Returns how many cores were busy on average between two machine_cpu() readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total * (os.cpu_count() or 1) if total > 0 else float("nan")


def rss_bytes(pid: Optional[int]) -> int:
    """Returns VmRSS of process ``pid`` in bytes (0 when unknown)."""
    if pid is None:
        return 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Login:
    """One login to send: the name as typed and the password."""

    user: str
    password: str

    def body(self) -> bytes:
        return json.dumps(
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": self.user},
                "password": self.password,
                "initial_device_display_name": "bench",
            }
        ).encode("utf-8")


@dataclass
class PhaseResult:
    """What one batch of logins measured (times in seconds)."""

    logins: int
    concurrency: int
    wall: float
    latencies: List[float]
    probes: List[float]
    errors: int = 0
    first_error: Optional[str] = None
    synapse_cpu: float = 0.0
    client_cpu: float = 0.0
    extra: Dict[str, float] = field(default_factory=dict)
    # Synapse's database transactions during the batch: {name: (count, seconds)}.
    transactions: Dict[str, Tuple[float, float]] = field(default_factory=dict)


class _Probe(threading.Thread):
    """Sends GET /versions every ``interval`` seconds until stopped."""

    def __init__(self, base_url: str, interval: float, timeout: float):
        super().__init__(name="bench-probe", daemon=True)
        self._client = HttpClient(base_url, timeout)
        self._interval = interval
        self.go = threading.Event()
        self.stop = threading.Event()
        self.samples: List[Tuple[float, float]] = []  # (start, latency)
        self.errors = 0

    def run(self) -> None:
        try:
            self._client.request("GET", VERSIONS_PATH)  # connect before the load starts
            self.go.wait()
            origin = time.perf_counter()
            tick = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status, _ = self._client.request("GET", VERSIONS_PATH)
                    if status != 200:
                        self.errors += 1
                except OSError:
                    self.errors += 1
                done = time.perf_counter()
                self.samples.append((started, done - started))
                # Fixed schedule; ticks missed while a probe hung are skipped.
                tick = max(tick + 1, int((done - origin) / self._interval) + 1)
                self.stop.wait(max(0.0, origin + tick * self._interval - time.perf_counter()))
        finally:
            self._client.close()


def run_logins(
    base_url: str,
    logins: Sequence[Login],
    concurrency: int,
    pid: Optional[int] = None,
    probe_interval: float = PROBE_INTERVAL,
    timeout: float = 300.0,
) -> PhaseResult:
    """Sends ``logins`` with ``concurrency`` threads (closed loop) while probing;
    returns the figures. ``pid`` is Synapse's, for its CPU time."""
    lock = threading.Lock()
    queue = list(reversed(logins))
    latencies: List[float] = []
    finished: List[float] = []
    errors: List[str] = []
    ready = threading.Barrier(concurrency + 1)

    def take() -> Optional[Login]:
        with lock:
            return queue.pop() if queue else None

    def worker() -> None:
        client = HttpClient(base_url, timeout)
        try:
            try:
                client.request("GET", VERSIONS_PATH)  # open the connection outside the measurement
            finally:
                ready.wait()
            mine: List[float] = []
            while True:
                login = take()
                if login is None:
                    break
                body = login.body()
                started = time.perf_counter()
                try:
                    status, data = client.request("POST", LOGIN_PATH, body)
                    error = None if status == 200 else "HTTP %d %s" % (status, data[:200].decode(errors="replace"))
                except OSError as e:
                    error = "%s: %s" % (type(e).__name__, e)
                done = time.perf_counter()
                mine.append(done - started)
                if error is not None:
                    with lock:
                        errors.append(error)
            with lock:
                latencies.extend(mine)
                finished.append(time.perf_counter())
        finally:
            client.close()

    probe = _Probe(base_url, probe_interval, timeout)
    probe.start()
    threads = [threading.Thread(target=worker, name="bench-login-%d" % i, daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    cpu_synapse = process_cpu_seconds(pid)
    cpu_client = time.process_time()
    cpu_machine = machine_cpu()
    cpu_ours = tree_cpu_seconds(os.getpid())
    start = time.perf_counter()
    probe.go.set()
    for t in threads:
        t.join()
    end = max(finished) if finished else time.perf_counter()
    probe.stop.set()
    probe.join(timeout=timeout)
    result = PhaseResult(
        logins=len(logins),
        concurrency=concurrency,
        wall=end - start,
        latencies=latencies,
        probes=[lat for started, lat in probe.samples if started <= end],
        errors=len(errors) + (len(logins) - len(latencies)),
        first_error=errors[0] if errors else None,
        synapse_cpu=process_cpu_seconds(pid) - cpu_synapse,
        client_cpu=time.process_time() - cpu_client,
    )
    result.extra["probe_errors"] = probe.errors
    machine_after = machine_cpu()
    cpu_ours = tree_cpu_seconds(os.getpid()) - cpu_ours
    result.extra["machine_busy_cores"] = busy_cores(cpu_machine, machine_after)
    # What the machine was busy with besides the benchmark and everything it started.
    elapsed = (machine_after[1] - cpu_machine[1]) / _CLOCK_TICKS / (os.cpu_count() or 1)
    result.extra["other_busy_cores"] = (
        max(0.0, result.extra["machine_busy_cores"] - cpu_ours / elapsed) if elapsed > 0 else float("nan")
    )
    return result
