"""Login benchmark: rest_auth_provider against Synapse's own login and the old blocking way.

Run from the repository root: ``python -m bench.run [--quick] [--backend ma1sd|rest|both]
[--repeats N] [--output DIR]`` (``tox -e bench``). In one run on one machine it
starts the newest installed Synapse (on a private PostgreSQL cluster when one
can be started, else SQLite) once per provider, a fake ma1sd and a fake REST
identity store, each in a process of its own with a reply delay D, then drives
C concurrent password logins of distinct users through each provider:

* ``ours-ma1sd``: ``rest_auth_provider.RestAuthProvider`` with ``{"endpoint": <fake ma1sd>}``;
* ``ours-rest``: the same module with ``{"endpoint": <fake REST store>, "backend": "rest"}``;
* ``floor``: ``bench.providers.floor`` accepts without any HTTP call (Synapse's own cost);
* ``blocking``: ``bench.providers.blocking``, a synchronous POST to ma1sd in the reactor
  thread (how the old provider worked).

All are loaded from ``modules:``. The targets (``bench.targets``) are ratios
to ``floor`` measured in the same run, per backend. See docs/performance.md
for what each figure means.
"""

import argparse
import contextlib
import itertools
import json
import os
import platform
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from bench.load import (
    Login,
    PhaseResult,
    busy_cores,
    db_transactions,
    machine_cpu,
    process_cpu_seconds,
    rss_bytes,
    run_logins,
    transactions_between,
)
from bench.ma1sd import RemoteMa1sd, make_fake, raise_listen_backlog
from bench.report import (
    METRICS,
    OURS,
    PROVIDER_ORDER,
    RATIO_HEADER,
    TABLE_HEADER,
    TRANSACTION_HEADER,
    cell_key,
    draw_chart,
    markdown_table,
    median,
    percentile,
    ratio_rows,
    table_rows,
    text_table,
    transaction_rows,
)
from bench.targets import BATCH_CONCURRENCY, BATCH_DELAY_MS, FIRST_MIN_REPEATS, FLOOR, evaluate_targets
from tests.integration.harness import (
    SERVER_NAME,
    SynapseServer,
    client_listener,
    free_port,
    log_config,
    remove_tree,
    synapse_version,
)
from tests.integration.services import PostgresCluster

ROOT = Path(__file__).resolve().parents[1]

# name: (module, the fake it talks to or None, its config given that fake's URL)
PROVIDERS: Dict[str, Tuple[str, Optional[str], Callable[[str], Dict[str, Any]]]] = {
    OURS["ma1sd"]: ("rest_auth_provider.RestAuthProvider", "ma1sd", lambda url: {"endpoint": url}),
    OURS["rest"]: ("rest_auth_provider.RestAuthProvider", "rest", lambda url: {"endpoint": url, "backend": "rest"}),
    FLOOR: ("bench.providers.floor.FloorProvider", None, lambda url: {}),
    "blocking": ("bench.providers.blocking.BlockingProvider", "ma1sd", lambda url: {"endpoint": url}),
}
BACKEND_CHOICES = ("ma1sd", "rest", "both")

# The default grid: the cells the targets need (D = 0 and D = 200 ms, C = 1, 10, 50).
DEFAULT_DELAYS_MS = (0, 200)
DEFAULT_CONCURRENCY = (1, 10, 50)
# The full grid of the runs before the REST backend (--delays 0,50,200).
FULL_DELAYS_MS = (0, 50, 200)
QUICK_DELAYS_MS = (0, 200)
QUICK_CONCURRENCY = (1, 50)
RSS_CONCURRENCY = 50
RSS_WARMUP = 200
PAUSE = 0.3  # seconds between two batches, so one batch's tail does not overlap the next


def log(message: str = "") -> None:
    print(message, flush=True)


# -- the machine ---------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def load_average() -> List[float]:
    parts = _read("/proc/loadavg").split()
    return [float(p) for p in parts[:3]] if len(parts) >= 3 else []


def background_cores(seconds: float = 3.0) -> float:
    """Returns how many cores other work kept busy over ``seconds`` (call when nothing of ours runs)."""
    before = machine_cpu()
    time.sleep(seconds)
    return round(busy_cores(before, machine_cpu()), 2)


def busy_note(meta: Dict[str, Any]) -> str:
    """Returns a warning when other work shared the machine, else an empty string."""
    cores = meta.get("cores") or 1
    others = [
        x
        for x in (
            meta.get("background_cores_before"),
            meta.get("background_cores_after"),
            meta.get("other_busy_cores_median"),
        )
        if x is not None and x == x
    ]
    load = (meta.get("load_average_at_start") or [0.0])[0]  # read before anything of ours started
    during = meta.get("other_busy_cores_median")
    # The load average also remembers the minute before the run (a previous
    # benchmark, say): when the other work during the batches was measured, it decides.
    load_busy = load >= 0.5 * cores and (during is None or during != during)
    if max(others, default=0.0) < 0.25 * cores and not load_busy:
        return ""
    measured = " / ".join("%.2f" % x for x in others) if others else "not measured"
    return (
        "BUSY MACHINE: other work was running (load average %.2f on %s cores before the run; cores busy with "
        "other work before / after%s: %s): treat absolute figures as indicative, compare providers within a cell"
        % (load, cores, " / median during the batches" if len(others) == 3 else "", measured)
    )


def machine_info() -> Dict[str, Any]:
    cpu_model = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu_model": cpu_model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "synapse": ".".join(str(p) for p in synapse_version()),
        "load_average_at_start": load_average(),
    }


# -- the servers ---------------------------------------------------------------


class Bench:
    """The fakes (ma1sd, REST store), the database and one Synapse per provider; stops them all on close()."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.stack = contextlib.ExitStack()
        # One fake per kind the providers talk to; a separate process by
        # default, like the real ma1sd or REST store (see bench/ma1sd.py).
        self.fakes: Dict[str, Any] = {}
        for name in args.provider_list:
            kind = PROVIDERS[name][1]
            if kind is None or kind in self.fakes:
                continue
            if args.ma1sd_in_process:
                raise_listen_backlog()
                self.fakes[kind] = make_fake(kind, SERVER_NAME)
            else:
                self.fakes[kind] = RemoteMa1sd(kind, SERVER_NAME)
        self.servers: Dict[str, SynapseServer] = {}
        self.metrics_urls: Dict[str, str] = {}
        self.database = "sqlite"
        self.database_note = ""
        self._postgres: Optional[PostgresCluster] = None
        self._numbers = itertools.count(1)

    def close(self) -> None:
        self.stack.close()

    def start(self, providers: Sequence[str]) -> None:
        for fake in self.fakes.values():
            fake.start()
            self.stack.callback(fake.stop)
        self._start_database()
        # The Synapse subprocesses import the comparison providers from bench/.
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
        for name in providers:
            module, kind, config = PROVIDERS[name]
            folder = self.workdir / name
            folder.mkdir(parents=True)
            log_file = folder / "bench.log.yaml"
            logging_config = log_config(folder / ("%s.log" % name), self.args.log_level)
            logging_config["loggers"] = {"rest_auth_provider": {"level": self.args.log_level}}
            log_file.write_text(json.dumps(logging_config))
            module_config = config(self.fakes[kind].url if kind is not None else "")
            if name in OURS.values():
                module_config.update(self.args.ours_config)
            # Synapse's metrics listener: its per-transaction counters say which
            # database work each provider adds to a login.
            port, metrics_port = free_port(), free_port()
            extra: Dict[str, Any] = {
                "modules": [{"module": module, "config": module_config}],
                "log_config": str(log_file),
                # A new database starts with pending background updates (user
                # stats, user directory...); without pauses they finish before
                # the measurement instead of running through it.
                "background_updates": {"sleep_enabled": False},
                "enable_metrics": True,
                "listeners": [
                    client_listener(port),
                    {"type": "metrics", "port": metrics_port, "bind_addresses": ["127.0.0.1"]},
                ],
            }
            if self._postgres is not None:
                extra["database"] = self._postgres.create_database("bench_%s" % name)
            server = SynapseServer(folder, extra, name=name, port=port)
            self.metrics_urls[name] = "http://127.0.0.1:%d/_synapse/metrics" % metrics_port
            self.stack.callback(server.stop)
            server.start(wait=False)
            self.servers[name] = server
        for server in self.servers.values():
            server.wait_until_ready(timeout=300)
        log("Synapse %s started for: %s" % (".".join(map(str, synapse_version())), ", ".join(self.servers)))
        self.wait_for_background_updates()

    def pending_background_updates(self, provider: str) -> int:
        """Returns how many of Synapse's background updates are still pending in ``provider``'s database."""
        sql = "SELECT count(*) FROM background_updates"
        if self._postgres is not None:
            return int(self._postgres.query(sql, database="bench_%s" % provider)[0][0])
        path = self.servers[provider].workdir / "homeserver.db"
        with contextlib.closing(sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)) as db:
            return int(db.execute(sql).fetchone()[0])

    def wait_for_background_updates(self, timeout: float = 600.0) -> None:
        """Waits until every Synapse has finished the background updates of its
        new database: they would otherwise run during the measurement, in some
        providers' cells and not others. Raises RuntimeError after ``timeout`` s."""
        started = time.monotonic()
        while True:
            pending = {name: self.pending_background_updates(name) for name in self.servers}
            if not any(pending.values()):
                break
            if time.monotonic() - started > timeout:
                raise RuntimeError("Synapse's background updates still pending after %.0f s: %s" % (timeout, pending))
            time.sleep(1)
        log("Synapse's background updates on the new databases: done after %.0f s" % (time.monotonic() - started))

    def _start_database(self) -> None:
        if self.args.database == "sqlite":
            self.database_note = "SQLite (--database sqlite)"
            return
        try:
            cluster = PostgresCluster()
            self.stack.callback(cluster.stop)
            cluster.start()
        except Exception as e:
            if self.args.database == "postgres":
                raise
            self.database_note = "SQLite (PostgreSQL could not be started: %s)" % str(e).splitlines()[0][:200]
            log("Database: " + self.database_note)
            return
        self._postgres = cluster
        version = cluster.query("SHOW server_version")[0][0]
        self.database = "postgres"
        self.database_note = "PostgreSQL %s (private cluster, fsync off)" % version
        log("Database: " + self.database_note)

    def new_logins(self, count: int) -> List[Login]:
        """Adds ``count`` new users to every fake (ma1sd, REST store); returns their logins."""
        logins = []
        for _ in range(count):
            n = next(self._numbers)
            localpart = "bench%06d" % n
            password = "pw-%06d-secret" % n
            emails = ("%s@example.org" % localpart,) if self.args.threepids else ()
            for fake in self.fakes.values():
                fake.add_user("@%s:%s" % (localpart, SERVER_NAME), password, "Bench User %d" % n, emails=emails)
            logins.append(Login(localpart, password))
        return logins

    def run(
        self, provider: str, logins: Sequence[Login], concurrency: int, delay_ms: int
    ) -> Tuple[PhaseResult, int, int]:
        """Runs one batch; returns it with the connections the provider's fake
        accepted and its peak of in-flight requests (0 and 0 for floor)."""
        server = self.servers[provider]
        kind = PROVIDERS[provider][1]
        fake = self.fakes[kind] if kind is not None else None
        if fake is not None:
            fake.reset()
            fake.delay = delay_ms / 1000.0
        else:
            # Users are queued until the next command; send them outside the measurement.
            for other in self.fakes.values():
                getattr(other, "flush", lambda: None)()
        transactions = db_transactions(self.metrics_urls.get(provider))
        # The fake's own CPU: on these 2 cores it competes with Synapse (floor has no fake).
        fake_pid = getattr(fake, "pid", None)
        fake_cpu = process_cpu_seconds(fake_pid)
        result = run_logins(server.url, logins, concurrency, pid=server.pid)
        result.extra["fake_cpu"] = process_cpu_seconds(fake_pid) - fake_cpu if fake_pid is not None else float("nan")
        connections, in_flight = (fake.connections, fake.max_in_flight) if fake is not None else (0, 0)
        if fake is not None:
            fake.reset()
        if not server.running:
            raise RuntimeError("Synapse (%s) died:\n%s" % (provider, server.tail()))
        time.sleep(PAUSE)  # work a login left running in the background counts for its batch
        result.transactions = transactions_between(transactions, db_transactions(self.metrics_urls.get(provider)))
        return result, connections, in_flight


# -- figures -------------------------------------------------------------------


def figures(result: PhaseResult, connections: int, in_flight: int) -> Dict[str, Any]:
    latencies = [x * 1000 for x in result.latencies]
    probes = [x * 1000 for x in result.probes]
    per_login = 1.0 / result.logins if result.logins else float("nan")
    txn_count = sum(count for count, _ in result.transactions.values())
    txn_seconds = sum(seconds for _, seconds in result.transactions.values())
    return {
        "logins": result.logins,
        "wall_s": result.wall,
        "logins_per_s": result.logins / result.wall if result.wall > 0 else float("nan"),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "probe_p99_ms": percentile(probes, 99),
        "probe_max_ms": max(probes) if probes else float("nan"),
        "probes": len(probes),
        "probe_errors": int(result.extra.get("probe_errors", 0)),
        "synapse_cpu_ms_per_login": result.synapse_cpu * 1000 / result.logins if result.logins else float("nan"),
        "fake_cpu_ms_per_login": result.extra.get("fake_cpu", float("nan")) * 1000 * per_login,
        "client_cpu_pct": 100 * result.client_cpu / result.wall if result.wall > 0 else float("nan"),
        "db_txns_per_login": txn_count * per_login if result.transactions else float("nan"),
        "db_ms_per_login": txn_seconds * 1000 * per_login if result.transactions else float("nan"),
        "db_txns": {name: count * per_login for name, (count, _) in sorted(result.transactions.items())},
        "ma1sd_connections": connections,
        "ma1sd_max_in_flight": in_flight,
        "machine_busy_cores": result.extra.get("machine_busy_cores", float("nan")),
        "other_busy_cores": result.extra.get("other_busy_cores", float("nan")),
        "load_1min": (load_average() or [float("nan")])[0],
        "errors": result.errors,
        "first_error": result.first_error,
    }


def summary(f: Dict[str, Any]) -> str:
    text = (
        "%5.2f s %6.1f/s p50 %6.1f p99 %7.1f ms | probe p99 %6.1f max %6.1f ms | cpu %4.1f ms/login "
        "(fake %3.1f) | db %4.1f txns/login | other work %.2f cores"
        % (
            f["wall_s"],
            f["logins_per_s"],
            f["p50_ms"],
            f["p99_ms"],
            f["probe_p99_ms"],
            f["probe_max_ms"],
            f["synapse_cpu_ms_per_login"],
            f["fake_cpu_ms_per_login"],
            f["db_txns_per_login"],
            f["other_busy_cores"],
        )
    )
    if f["errors"]:
        text += " | %d ERRORS (%s)" % (f["errors"], f["first_error"])
    return text


def add_run(
    cells: Dict[str, Dict[str, Any]], provider: str, phase: str, delay: int, conc: int, f: Dict[str, Any]
) -> None:
    key = cell_key(provider, phase, delay, conc)
    cell = cells.setdefault(
        key,
        {"provider": provider, "phase": phase, "delay_ms": delay, "concurrency": conc, "runs": []},
    )
    cell["runs"].append(f)
    cell["logins"] = f["logins"]
    cell["errors"] = sum(r["errors"] for r in cell["runs"])
    cell["median"] = {m: median([r.get(m, float("nan")) for r in cell["runs"]]) for m in METRICS}
    names = sorted(set().union(*(r["db_txns"] for r in cell["runs"])))
    cell["db_txns_median"] = {n: median([r["db_txns"].get(n, 0.0) for r in cell["runs"]]) for n in names}
    cell["worst"] = {
        "p99_ms": max(r["p99_ms"] for r in cell["runs"]),
        "probe_max_ms": max(r["probe_max_ms"] for r in cell["runs"]),
    }


def rss_phase(bench: Bench, provider: str, logins_count: int) -> Dict[str, Any]:
    """Synapse's RSS before and after ``logins_count`` repeat logins at C=50, D=0
    (after a warm-up of RSS_WARMUP first logins), and the connections ma1sd accepted."""
    server = bench.servers[provider]
    pool = bench.new_logins(RSS_WARMUP)
    warmup, warmup_connections, _ = bench.run(provider, pool, RSS_CONCURRENCY, 0)
    time.sleep(1)
    before = rss_bytes(server.pid)
    logins = [pool[i % len(pool)] for i in range(logins_count)]
    result, connections, in_flight = bench.run(provider, logins, RSS_CONCURRENCY, 0)
    time.sleep(1)
    after = rss_bytes(server.pid)
    f = figures(result, connections, in_flight)
    out = {
        "provider": provider,
        "concurrency": RSS_CONCURRENCY,
        "delay_ms": 0,
        "warmup_logins": len(pool),
        "warmup_errors": warmup.errors,
        "warmup_ma1sd_connections": warmup_connections,
        "logins": logins_count,
        "rss_before_mb": before / 1e6,
        "rss_after_mb": after / 1e6,
        "rss_growth_mb": (after - before) / 1e6,
        "ma1sd_connections": connections,
        "ma1sd_max_in_flight": in_flight,
        "figures": f,
    }
    log(
        "  RSS %-10s %4d logins: %.1f -> %.1f MB (%+.1f MB); its fake accepted %d connections "
        "(%d during warm-up), peak %d in flight; %s"
        % (
            provider,
            logins_count,
            out["rss_before_mb"],
            out["rss_after_mb"],
            out["rss_growth_mb"],
            connections,
            warmup_connections,
            in_flight,
            summary(f),
        )
    )
    return out


# -- the run -------------------------------------------------------------------


def _ints(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def expand_providers(names: Sequence[str], backend: str) -> List[str]:
    """Returns the providers to run, in PROVIDER_ORDER: ``ours`` becomes ours
    under ``backend`` (ma1sd, rest or both); ``ours-ma1sd`` and ``ours-rest``
    name one backend; raises ValueError on an unknown name."""
    backends = ("ma1sd", "rest") if backend == "both" else (backend,)
    wanted = set()
    for name in names:
        if name == "ours":
            wanted.update(OURS[b] for b in backends)
        elif name in PROVIDERS:
            wanted.add(name)
        else:
            raise ValueError(name)
    return [p for p in PROVIDER_ORDER if p in wanted]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: D in {0, 200} ms, C in {1, 50}, 1 repeat everywhere, 500 RSS logins",
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="both",
        help="what ours talks to: the fake ma1sd, the fake REST identity store, or both (default)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell at D > 0 (default 3; 1 with --quick)")
    parser.add_argument(
        "--d0-repeats",
        type=int,
        default=None,
        help="runs per cell at D = 0 (default max(%d, --repeats); 1 with --quick): the first-login target "
        "compares medians of at least %d interleaved repeats" % (FIRST_MIN_REPEATS, FIRST_MIN_REPEATS),
    )
    parser.add_argument(
        "--blocking-repeats",
        type=int,
        default=1,
        help="runs per cell of blocking at D > 0 (default 1: there it takes D x logins, minutes per cell, "
        "and no target reads it; at D = 0 it runs as often as the others)",
    )
    parser.add_argument(
        "--batch-repeats",
        type=int,
        default=None,
        help="runs of the one-batch cell (D = %d ms, %d logins at C = %d; ours and floor; default 5, 1 with "
        "--quick; 0 skips)" % (BATCH_DELAY_MS, BATCH_CONCURRENCY, BATCH_CONCURRENCY),
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results", help="where latest.{json,png,md} go")
    parser.add_argument("--delays", type=str, default=None, help="reply delays of the fakes in ms (default 0,200)")
    parser.add_argument("--concurrency", type=str, default=None, help="comma-separated C values (default 1,10,50)")
    parser.add_argument("--logins", type=int, default=0, help="logins per batch (default max(4 C, 20))")
    parser.add_argument(
        "--providers",
        type=str,
        default="ours,floor,blocking",
        help="subset of ours,floor,blocking (ours as --backend says; or ours-ma1sd, ours-rest)",
    )
    parser.add_argument("--rss-logins", type=int, default=None, help="RSS phase logins (2000; --quick 500; 0 skips)")
    parser.add_argument("--database", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--no-threepids", dest="threepids", action="store_false", help="users without an email")
    parser.add_argument(
        "--ours-config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="extra config keys for ours (both backends), e.g. '{\"profile_recheck_interval\": 0}'",
    )
    parser.add_argument("--log-level", default="INFO", help="Synapse's log level (INFO, like production)")
    parser.add_argument("--keep", action="store_true", help="keep the Synapse folders and logs")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="JSON",
        help="only print and write the report (table, chart, Markdown) of an earlier run's latest.json",
    )
    parser.add_argument(
        "--ma1sd-in-process",
        action="store_true",
        help="run the fakes in the benchmark process (share the load generator's GIL; for comparison)",
    )
    args = parser.parse_args(argv)
    if not isinstance(args.ours_config, dict):
        parser.error("--ours-config: expected a JSON object")
    try:
        args.delays_ms = _ints(args.delays) if args.delays else (QUICK_DELAYS_MS if args.quick else DEFAULT_DELAYS_MS)
        args.concurrencies = (
            _ints(args.concurrency) if args.concurrency else (QUICK_CONCURRENCY if args.quick else DEFAULT_CONCURRENCY)
        )
    except ValueError:
        parser.error("--delays and --concurrency take comma-separated whole numbers")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.d0_repeats is None:
        args.d0_repeats = 1 if args.quick else max(FIRST_MIN_REPEATS, args.repeats)
    if args.batch_repeats is None:
        args.batch_repeats = 1 if args.quick else 5
    if args.rss_logins is None:
        args.rss_logins = 500 if args.quick else 2000
    if min(args.repeats, args.d0_repeats, args.blocking_repeats) < 1:
        parser.error("--repeats, --d0-repeats and --blocking-repeats must be at least 1")
    if min(args.logins, args.rss_logins, args.batch_repeats) < 0:
        parser.error("--logins, --rss-logins and --batch-repeats must not be negative")
    if not args.delays_ms or not args.concurrencies or min(args.delays_ms + args.concurrencies) < 0:
        parser.error("--delays and --concurrency need values, none negative")
    if 0 in args.concurrencies:
        parser.error("--concurrency: C must be at least 1")
    try:
        args.provider_list = expand_providers([p.strip() for p in args.providers.split(",") if p.strip()], args.backend)
    except ValueError as e:
        parser.error("unknown provider: %s (expected ours, floor, blocking, ours-ma1sd or ours-rest)" % e)
    if not args.provider_list:
        parser.error("--providers: none to run")
    return args


def grid_kind(args: argparse.Namespace) -> str:
    if args.quick:
        return "--quick run"
    if tuple(args.concurrencies) == DEFAULT_CONCURRENCY and tuple(args.delays_ms) == DEFAULT_DELAYS_MS:
        return "default grid"
    if tuple(args.concurrencies) == DEFAULT_CONCURRENCY and tuple(args.delays_ms) == FULL_DELAYS_MS:
        return "full grid"
    return "custom grid"


def logins_per_cell(concurrency: int, override: int = 0) -> int:
    """Returns how many logins one batch sends: max(4 C, 20) unless --logins says otherwise."""
    return override or max(concurrency * 4, 20)


def repeats_for(args: argparse.Namespace, provider: str, delay_ms: int) -> int:
    """Returns how many times ``provider`` runs a cell at ``delay_ms``."""
    if delay_ms == 0:
        return int(args.d0_repeats)
    if provider == "blocking":
        return min(int(args.repeats), int(args.blocking_repeats))
    return int(args.repeats)


def rotated(providers: Sequence[str], rep: int) -> List[str]:
    """Returns ``providers`` rotated by ``rep``, so that no provider always runs first or last."""
    shift = rep % len(providers) if providers else 0
    return list(providers[shift:]) + list(providers[:shift])


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turns SIGTERM into KeyboardInterrupt, so that every cleanup runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_cell(
    bench: Bench,
    cells: Dict[str, Dict[str, Any]],
    providers: Sequence[str],
    delay: int,
    conc: int,
    count: int,
    repeats: Callable[[str], int],
    progress: Callable[[], str],
) -> None:
    """Runs one cell: its repeats interleaved (every provider runs before the next repeat), both phases."""
    for rep in range(max((repeats(p) for p in providers), default=0)):
        for provider in rotated(providers, rep):
            if rep >= repeats(provider):
                continue
            logins = bench.new_logins(count)
            for phase in ("first", "repeat"):
                result, connections, in_flight = bench.run(provider, logins, conc, delay)
                f = figures(result, connections, in_flight)
                add_run(cells, provider, phase, delay, conc, f)
                log(
                    "%s %-10s D=%3d C=%2d rep %d %-6s %3d logins: %s"
                    % (progress(), provider, delay, conc, rep + 1, phase, count, summary(f))
                )


def run_grid(bench: Bench, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    cells: Dict[str, Dict[str, Any]] = {}
    providers = args.provider_list
    total = sum(
        repeats_for(args, p, d) * 2 for d in args.delays_ms for _ in args.concurrencies for p in args.provider_list
    )
    done = [0]

    def progress() -> str:
        done[0] += 1
        return "[%d/%d]" % (done[0], total)

    for delay in args.delays_ms:
        for conc in args.concurrencies:
            count = logins_per_cell(conc, args.logins)
            _run_cell(bench, cells, providers, delay, conc, count, lambda p, d=delay: repeats_for(args, p, d), progress)
    return cells


def run_one_batch(bench: Bench, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """The one-batch cell: D = 200 ms, C = 50 logins at once, once (first and
    repeat), ``--batch-repeats`` times interleaved, for ours and floor."""
    cells: Dict[str, Dict[str, Any]] = {}
    providers = [p for p in args.provider_list if p == FLOOR or p in OURS.values()]
    if args.batch_repeats < 1 or FLOOR not in providers or len(providers) < 2:
        return cells
    total = len(providers) * args.batch_repeats * 2
    done = [0]

    def progress() -> str:
        done[0] += 1
        return "[batch %d/%d]" % (done[0], total)

    log(
        "One batch: %d logins at C = %d, D = %d ms, %d repeats"
        % ((BATCH_CONCURRENCY,) * 2 + (BATCH_DELAY_MS, args.batch_repeats))
    )
    _run_cell(
        bench,
        cells,
        providers,
        BATCH_DELAY_MS,
        BATCH_CONCURRENCY,
        BATCH_CONCURRENCY,
        lambda p: int(args.batch_repeats),
        progress,
    )
    return cells


def _legacy(data: Dict[str, Any]) -> Dict[str, Any]:
    """Renames a run from before the REST backend (provider ``ours``) to ``ours-ma1sd``."""

    def rename(name: Any) -> Any:
        return OURS["ma1sd"] if name == "ours" else name

    cells = {}
    for cell in data.get("cells", {}).values():
        cell["provider"] = rename(cell["provider"])
        cells[cell_key(cell["provider"], cell["phase"], cell["delay_ms"], cell["concurrency"])] = cell
    data["cells"] = cells
    data["rss"] = {rename(k): dict(v, provider=rename(v.get("provider"))) for k, v in data.get("rss", {}).items()}
    data["options"]["providers"] = [rename(p) for p in data["options"]["providers"]]
    return data


def render(args: argparse.Namespace) -> int:
    """Reprints and rewrites the report of an earlier run from its JSON."""
    data = _legacy(json.loads(args.render.read_text()))
    options = data["options"]
    args.quick = options["quick"]
    args.repeats = options["repeats"]
    args.d0_repeats = options.get("d0_repeats", args.repeats)
    args.blocking_repeats = options.get("blocking_repeats", args.repeats)
    args.batch_repeats = options.get("batch_repeats", 0)
    args.backend = options.get("backend", "ma1sd")
    args.delays_ms = tuple(options["delays_ms"])
    args.concurrencies = tuple(options["concurrency"])
    args.provider_list = options["providers"]
    args.rss_logins = options["rss_logins"]
    args.threepids = options["threepids"]
    args.log_level = options["synapse_log_level"]
    args.ours_config = options.get("ours_config", {})
    args.logins = 0
    args.ma1sd_in_process = data["meta"].get("fake_ma1sd") == "in the benchmark process"
    one_batch = data.get("one_batch", {})
    targets = evaluate_targets(data["cells"], one_batch, data["rss"], args.delays_ms, args.concurrencies)
    report(args, data["meta"], data["cells"], one_batch, data["rss"], targets)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args)
    started = time.time()
    meta = machine_info()
    meta["command"] = "python -m bench.run" + "".join(" " + a for a in (sys.argv[1:] if argv is None else argv))
    meta["background_cores_before"] = background_cores()
    log(
        "Machine: %s, %s cores, %.1f GiB RAM; load average %s; other work busy on %.2f cores; Python %s, Synapse %s"
        % (
            meta["cpu_model"],
            meta["cores"],
            meta["ram_gib"],
            " ".join("%.2f" % x for x in meta["load_average_at_start"]),
            meta["background_cores_before"],
            meta["python"],
            meta["synapse"],
        )
    )
    log(
        "Grid: D = %s ms, C = %s, %d repeat(s) (%d at D = 0, blocking %d at D > 0), one batch %d time(s), "
        "providers %s%s%s"
        % (
            ", ".join(map(str, args.delays_ms)),
            ", ".join(map(str, args.concurrencies)),
            args.repeats,
            args.d0_repeats,
            min(args.repeats, args.blocking_repeats),
            args.batch_repeats,
            ", ".join(args.provider_list),
            " (--quick)" if args.quick else "",
            "; ours' config adds %s" % json.dumps(args.ours_config) if args.ours_config else "",
        )
    )
    workdir = Path(tempfile.mkdtemp(prefix="rap-bench-"))
    bench = Bench(args, workdir)
    keep = args.keep
    try:
        with _terminate_as_interrupt():
            try:
                bench.start(args.provider_list)
                meta["load_average_measurement_start"] = load_average()
                # Warm-up: connections, caches and JIT-free code paths, not measured.
                for provider in args.provider_list:
                    logins = bench.new_logins(20)
                    bench.run(provider, logins, 5, 0)
                    bench.run(provider, logins, 5, 0)
                cells = run_grid(bench, args)
                one_batch = run_one_batch(bench, args)
                rss: Dict[str, Dict[str, Any]] = {}
                if args.rss_logins > 0:
                    for provider in args.provider_list:
                        if provider == FLOOR or provider in OURS.values():
                            rss[provider] = rss_phase(bench, provider, args.rss_logins)
            except KeyboardInterrupt:
                log("\nInterrupted; stopping everything.")
                return 130
            except Exception:
                keep = True
                traceback.print_exc()
                log("Benchmark failed; Synapse folders and logs kept in %s" % workdir)
                return 1
            meta["load_average_at_end"] = load_average()
            meta["database"] = bench.database
            meta["database_detail"] = bench.database_note
            meta["fake_ma1sd"] = "in the benchmark process" if args.ma1sd_in_process else "separate process"
    finally:
        bench.close()
        if keep:
            log("Synapse folders and logs: %s" % workdir)
        else:
            remove_tree(workdir)

    meta["background_cores_after"] = background_cores()
    meta["duration_s"] = round(time.time() - started, 1)
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    runs = [r for group in (cells, one_batch) for c in group.values() for r in c["runs"]]
    loads = [x for x in (r.get("load_1min", float("nan")) for r in runs) if x == x]
    meta["load_average_max"] = max(loads, default=float("nan"))
    meta["load_average_median"] = median(loads)
    meta["load_average_min"] = min(loads, default=float("nan"))
    others = [x for x in (r.get("other_busy_cores", float("nan")) for r in runs) if x == x]
    meta["other_busy_cores_median"] = median(others)
    meta["other_busy_cores_max"] = max(others, default=float("nan"))
    meta["busy"] = bool(busy_note(meta))
    targets = evaluate_targets(cells, one_batch, rss, args.delays_ms, args.concurrencies)
    report(args, meta, cells, one_batch, rss, targets)
    return 0


def load_line(meta: Dict[str, Any]) -> str:
    """Returns the machine's load average before, during (1 min, at each batch's end) and after the run."""
    text = "load average %s before the run" % " ".join("%.2f" % x for x in meta.get("load_average_at_start", []))
    if meta.get("load_average_max") == meta.get("load_average_max") and "load_average_max" in meta:
        text += ", 1-min %.2f / %.2f / %.2f (min / median / max) during it" % (
            meta.get("load_average_min", float("nan")),
            meta.get("load_average_median", float("nan")),
            meta["load_average_max"],
        )
    if meta.get("load_average_at_end"):
        text += ", %s at the end" % " ".join("%.2f" % x for x in meta["load_average_at_end"])
    other = meta.get("other_busy_cores_median")
    if other is not None and other == other:
        text += "; cores busy with other work during the batches: median %.2f, max %.2f" % (
            other,
            meta.get("other_busy_cores_max", float("nan")),
        )
    return text


def report(
    args: argparse.Namespace,
    meta: Dict[str, Any],
    cells: Dict[str, Dict[str, Any]],
    one_batch: Dict[str, Dict[str, Any]],
    rss: Dict[str, Dict[str, Any]],
    targets: List[Dict[str, Any]],
) -> None:
    delays, concs = args.delays_ms, args.concurrencies
    rows = table_rows(cells, delays, concs)
    ratios = ratio_rows(cells, delays, concs)
    transactions = transaction_rows(cells, delays, concs)
    batch_rows = table_rows(one_batch, (BATCH_DELAY_MS,), (BATCH_CONCURRENCY,))
    batch_ratios = ratio_rows(one_batch, (BATCH_DELAY_MS,), (BATCH_CONCURRENCY,))
    kind = grid_kind(args)
    log()
    log(
        "Results (%s; medians: %d repeat(s) at D > 0, %d at D = 0; latencies in ms; database: %s; %s)"
        % (kind, args.repeats, args.d0_repeats, meta["database_detail"], load_line(meta))
    )
    if meta.get("command"):
        log("Command: %s" % meta["command"])
    note = busy_note(meta)
    if note:
        log(note)
    log(text_table(TABLE_HEADER, rows, group=slice(1, 4)))
    log()
    log("Ratios (medians)")
    log(text_table(RATIO_HEADER, ratios, group=slice(0, 3)))
    log()
    if batch_rows:
        log(
            "One batch: %d logins at C = %d, D = %d ms (medians of %d)"
            % (BATCH_CONCURRENCY, BATCH_CONCURRENCY, BATCH_DELAY_MS, args.batch_repeats)
        )
        log(text_table(TABLE_HEADER, batch_rows, group=slice(1, 4)))
        log(text_table(RATIO_HEADER, batch_ratios, group=slice(0, 3)))
        log()
    if transactions:
        log("Database transactions per login where ours and floor differ (Synapse's names; medians)")
        log(text_table(TRANSACTION_HEADER, transactions, group=slice(0, 4)))
        log()
    log("Targets (ratios to floor in this run, per backend)")
    for t in targets:
        log("  %-4s  [%s] %s: %s" % (t["status"], t["backend"], t["target"], t["detail"]))

    out_dir: Path = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "options": {
            "quick": args.quick,
            "backend": args.backend,
            "repeats": args.repeats,
            "d0_repeats": args.d0_repeats,
            "blocking_repeats": args.blocking_repeats,
            "batch_repeats": args.batch_repeats,
            "delays_ms": list(delays),
            "concurrency": list(concs),
            "providers": args.provider_list,
            "logins_per_cell": {str(c): logins_per_cell(c, args.logins) for c in concs},
            "rss_logins": args.rss_logins,
            "threepids": args.threepids,
            "synapse_log_level": args.log_level,
            "ours_config": args.ours_config,
        },
        "cells": cells,
        "one_batch": one_batch,
        "ratios": [dict(zip(RATIO_HEADER, r)) for r in ratios],
        "transactions": [dict(zip(TRANSACTION_HEADER, r)) for r in transactions],
        "rss": rss,
        "targets": targets,
    }
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    title = "rest_auth_provider login benchmark (%s): Synapse %s, %s, %s cores, medians%s" % (
        kind,
        meta["synapse"],
        meta["database"],
        meta["cores"],
        ", BUSY MACHINE (load average %.1f before the run)" % meta["load_average_at_start"][0]
        if busy_note(meta)
        else "",
    )
    png_path = out_dir / "latest.png"
    problem = draw_chart(png_path, cells, delays, concs, title)
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_report(args, meta, rows, ratios, batch_rows, batch_ratios, transactions, rss, targets))
    log()
    log("Wrote %s, %s%s" % (json_path, md_path, "" if problem else ", " + str(png_path)))
    if problem:
        log("No chart: %s" % problem)


def markdown_report(
    args: argparse.Namespace,
    meta: Dict[str, Any],
    rows: List[List[str]],
    ratios: List[List[str]],
    batch_rows: List[List[str]],
    batch_ratios: List[List[str]],
    transactions: List[List[str]],
    rss: Dict[str, Dict[str, Any]],
    targets: List[Dict[str, Any]],
) -> str:
    lines = [
        "Run of %s: %s; %s cores (%s), %.1f GiB RAM; Python %s, Synapse %s; %s; %s; medians of %d repeat(s) "
        "per cell at D > 0, %d at D = 0; %.0f s in all."
        % (
            meta["finished"],
            grid_kind(args),
            meta["cores"],
            meta["cpu_model"],
            meta["ram_gib"],
            meta["python"],
            meta["synapse"],
            meta["database_detail"],
            load_line(meta),
            args.repeats,
            args.d0_repeats,
            meta["duration_s"],
        ),
        "",
    ]
    if meta.get("command"):
        lines += ["Command: `%s`" % meta["command"], ""]
    lines += [
        ("**%s.**" % busy_note(meta)) if busy_note(meta) else "The machine was otherwise idle.",
        "",
        markdown_table(TABLE_HEADER, rows),
        "",
        markdown_table(RATIO_HEADER, ratios),
        "",
    ]
    if batch_rows:
        lines += [
            "One batch: %d logins at C = %d, D = %d ms, medians of %d:"
            % (BATCH_CONCURRENCY, BATCH_CONCURRENCY, BATCH_DELAY_MS, args.batch_repeats),
            "",
            markdown_table(TABLE_HEADER, batch_rows),
            "",
            markdown_table(RATIO_HEADER, batch_ratios),
            "",
        ]
    if transactions:
        lines += [markdown_table(TRANSACTION_HEADER, transactions), ""]
    for provider, r in rss.items():
        lines.append(
            "* RSS, %s, %d logins at C=50, D=0 after %d warm-up logins: %.1f → %.1f MB (%+.1f MB); "
            "its fake accepted %d connections during them."
            % (
                provider,
                r["logins"],
                r["warmup_logins"],
                r["rss_before_mb"],
                r["rss_after_mb"],
                r["rss_growth_mb"],
                r["ma1sd_connections"],
            )
        )
    lines += ["", "| backend | target | result | figures |", "|---|---|---|---|"]
    lines += ["| %s | %s | %s | %s |" % (t["backend"], t["target"], t["status"], t["detail"]) for t in targets]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
