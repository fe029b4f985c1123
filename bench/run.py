"""Login benchmark: rest_auth_provider against Synapse's own login and the old blocking way.

Run from the repository root: ``python -m bench.run [--quick] [--repeats N] [--output DIR]``
(``tox -e bench``). In one run on one machine it starts the newest installed
Synapse (on a private PostgreSQL cluster when one can be started, else SQLite)
once per provider, and a fake ma1sd with a reply delay D, then drives C
concurrent password logins of distinct users through each provider:

* ``ours``: ``rest_auth_provider.RestAuthProvider`` with ``{"endpoint": ...}``;
* ``floor``: ``bench.providers.floor`` accepts without any HTTP call (Synapse's own cost);
* ``blocking``: ``bench.providers.blocking``, a synchronous POST to ma1sd in the reactor
  thread (how the old provider worked).

All three are loaded from ``modules:``. See docs/performance.md for what each
figure means.
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
    rss_bytes,
    run_logins,
    transactions_between,
)
from bench.ma1sd import RemoteMa1sd, raise_listen_backlog
from bench.report import (
    METRICS,
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
from tests.fake_ma1sd import FakeMa1sd
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

PROVIDERS: Dict[str, Tuple[str, Callable[[Any], Dict[str, Any]]]] = {
    "ours": ("rest_auth_provider.RestAuthProvider", lambda fake: {"endpoint": fake.url}),
    "floor": ("bench.providers.floor.FloorProvider", lambda fake: {}),
    "blocking": ("bench.providers.blocking.BlockingProvider", lambda fake: {"endpoint": fake.url}),
}

FULL_DELAYS_MS = (0, 50, 200)
FULL_CONCURRENCY = (1, 10, 50)
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
    others = [x for x in (meta.get("background_cores_before"), meta.get("background_cores_after")) if x is not None]
    load = (meta.get("load_average_at_start") or [0.0])[0]  # read before anything of ours started
    if max(others, default=0.0) < 0.25 * cores and load < 0.5 * cores:
        return ""
    measured = " / ".join("%.2f" % x for x in others) if others else "not measured"
    return (
        "BUSY MACHINE: other work was running (load average %.2f on %s cores before the run; cores busy with "
        "other work before / after: %s): treat absolute figures as indicative, compare providers within a cell"
        % (load, cores, measured)
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
    """The fake ma1sd, the database and one Synapse per provider; stops them all on close()."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.stack = contextlib.ExitStack()
        # A separate process by default, like the real ma1sd (see bench/ma1sd.py).
        self.fake: Any = RemoteMa1sd()
        if args.ma1sd_in_process:
            raise_listen_backlog()
            self.fake = FakeMa1sd()
        self.servers: Dict[str, SynapseServer] = {}
        self.metrics_urls: Dict[str, str] = {}
        self.database = "sqlite"
        self.database_note = ""
        self._postgres: Optional[PostgresCluster] = None
        self._numbers = itertools.count(1)

    def close(self) -> None:
        self.stack.close()

    def start(self, providers: Sequence[str]) -> None:
        self.fake.start()
        self.stack.callback(self.fake.stop)
        self._start_database()
        # The Synapse subprocesses import the comparison providers from bench/.
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
        for name in providers:
            module, config = PROVIDERS[name]
            folder = self.workdir / name
            folder.mkdir(parents=True)
            log_file = folder / "bench.log.yaml"
            logging_config = log_config(folder / ("%s.log" % name), self.args.log_level)
            logging_config["loggers"] = {"rest_auth_provider": {"level": self.args.log_level}}
            log_file.write_text(json.dumps(logging_config))
            module_config = config(self.fake)
            if name == "ours":
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
        """Adds ``count`` new users to the fake ma1sd; returns their logins."""
        logins = []
        for _ in range(count):
            n = next(self._numbers)
            localpart = "bench%06d" % n
            password = "pw-%06d-secret" % n
            emails = ("%s@example.org" % localpart,) if self.args.threepids else ()
            self.fake.add_user("@%s:%s" % (localpart, SERVER_NAME), password, "Bench User %d" % n, emails=emails)
            logins.append(Login(localpart, password))
        return logins

    def run(
        self, provider: str, logins: Sequence[Login], concurrency: int, delay_ms: int
    ) -> Tuple[PhaseResult, int, int]:
        """Runs one batch; returns it with the fake's accepted connections and peak in-flight requests."""
        server = self.servers[provider]
        self.fake.reset()
        self.fake.delay = delay_ms / 1000.0
        transactions = db_transactions(self.metrics_urls.get(provider))
        result = run_logins(server.url, logins, concurrency, pid=server.pid)
        connections, in_flight = self.fake.connections, self.fake.max_in_flight
        self.fake.reset()
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
        "client_cpu_pct": 100 * result.client_cpu / result.wall if result.wall > 0 else float("nan"),
        "db_txns_per_login": txn_count * per_login if result.transactions else float("nan"),
        "db_ms_per_login": txn_seconds * 1000 * per_login if result.transactions else float("nan"),
        "db_txns": {name: count * per_login for name, (count, _) in sorted(result.transactions.items())},
        "ma1sd_connections": connections,
        "ma1sd_max_in_flight": in_flight,
        "machine_busy_cores": result.extra.get("machine_busy_cores", float("nan")),
        "load_1min": (load_average() or [float("nan")])[0],
        "errors": result.errors,
        "first_error": result.first_error,
    }


def summary(f: Dict[str, Any]) -> str:
    text = (
        "%5.2f s %6.1f/s p50 %6.1f p99 %7.1f ms | probe p99 %6.1f max %6.1f ms | cpu %4.1f ms/login "
        "| db %4.1f txns/login"
        % (
            f["wall_s"],
            f["logins_per_s"],
            f["p50_ms"],
            f["p99_ms"],
            f["probe_p99_ms"],
            f["probe_max_ms"],
            f["synapse_cpu_ms_per_login"],
            f["db_txns_per_login"],
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
    cell["median"] = {m: median([r[m] for r in cell["runs"]]) for m in METRICS}
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
        "  RSS %-8s %4d logins: %.1f -> %.1f MB (%+.1f MB); ma1sd accepted %d connections "
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


# -- targets -------------------------------------------------------------------


def evaluate_targets(
    cells: Dict[str, Dict[str, Any]], rss: Dict[str, Dict[str, Any]], delays: Sequence[int], concs: Sequence[int]
) -> List[Dict[str, Any]]:
    targets: List[Dict[str, Any]] = []

    def add(name: str, ok: Optional[bool], detail: str) -> None:
        status = "n/a" if ok is None else ("PASS" if ok else "MISS")
        targets.append({"target": name, "status": status, "detail": detail})

    def med(provider: str, phase: str, delay: int, conc: int) -> Optional[Dict[str, float]]:
        cell = cells.get(cell_key(provider, phase, delay, conc))
        return cell["median"] if cell else None

    ours, floor = med("ours", "repeat", 200, 50), med("floor", "repeat", 200, 50)
    name = "repeat logins D=200ms C=50: ours wall <= 1.15 x (floor wall + D)"
    if ours and floor:
        limit = 1.15 * (floor["wall_s"] + 0.2)
        detail = "ours %.2f s, limit %.2f s (floor %.2f s); Synapse CPU/login ours %.1f ms, floor %.1f ms" % (
            ours["wall_s"],
            limit,
            floor["wall_s"],
            ours["synapse_cpu_ms_per_login"],
            floor["synapse_cpu_ms_per_login"],
        )
        add(name, ours["wall_s"] <= limit, detail)
    else:
        add(name, None, "cell not in this run's grid")

    if 0 in delays:
        for phase in ("first", "repeat"):
            for conc in concs:
                ours, floor = med("ours", phase, 0, conc), med("floor", phase, 0, conc)
                name = "D=0 %s C=%d: ours logins/s >= 0.9 x floor" % (phase, conc)
                if ours and floor:
                    ratio = ours["logins_per_s"] / floor["logins_per_s"]
                    detail = "ours %.1f/s, floor %.1f/s (%.2f x); Synapse CPU/login ours %.1f ms, floor %.1f ms" % (
                        ours["logins_per_s"],
                        floor["logins_per_s"],
                        ratio,
                        ours["synapse_cpu_ms_per_login"],
                        floor["synapse_cpu_ms_per_login"],
                    )
                    add(name, ratio >= 0.9, detail)
                else:
                    add(name, None, "ours or floor not run")

    ours_cells = [c for c in cells.values() if c["provider"] == "ours"]
    if ours_cells:
        over = [c for c in ours_cells if not c["median"]["probe_max_ms"] <= 60]
        worst = max(ours_cells, key=lambda c: c["median"]["probe_max_ms"])

        def where(c: Dict[str, Any]) -> str:
            floor = med("floor", c["phase"], c["delay_ms"], c["concurrency"])
            return "%s D=%d C=%d: %.0f ms (floor %s)" % (
                c["phase"],
                c["delay_ms"],
                c["concurrency"],
                c["median"]["probe_max_ms"],
                "%.0f ms" % floor["probe_max_ms"] if floor else "-",
            )

        add(
            "probe max <= 60 ms for ours in every cell (median of repeats)",
            not over,
            "worst %.1f ms; over 60 ms in %d of %d cells%s"
            % (
                worst["median"]["probe_max_ms"],
                len(over),
                len(ours_cells),
                (": " + "; ".join(where(c) for c in over)) if over else "",
            ),
        )
        errors = sum(c["errors"] for c in ours_cells)
        add("ours: no failed logins", errors == 0, "%d failed logins" % errors)

    r = rss.get("ours")
    if r:
        add(
            "RSS growth <= 20 MB over %d logins (ours, C=50, D=0)" % r["logins"],
            r["rss_growth_mb"] <= 20,
            "%.1f -> %.1f MB (%+.1f MB)%s"
            % (
                r["rss_before_mb"],
                r["rss_after_mb"],
                r["rss_growth_mb"],
                "; floor %+.1f MB" % rss["floor"]["rss_growth_mb"] if "floor" in rss else "",
            ),
        )
        add(
            "ma1sd connections accepted <= C (%d) during those %d logins" % (r["concurrency"], r["logins"]),
            r["ma1sd_connections"] <= r["concurrency"],
            "%d accepted (%d during the warm-up before)" % (r["ma1sd_connections"], r["warmup_ma1sd_connections"]),
        )
    else:
        add("RSS growth <= 20 MB over 2,000 logins", None, "RSS phase not run")
        add("ma1sd connections accepted <= C", None, "RSS phase not run")
    return targets


# -- the run -------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="D in {0, 200} ms, C in {1, 50}, 1 repeat, 500 RSS logins")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3; 1 with --quick)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results", help="where latest.{json,png,md} go")
    parser.add_argument("--delays", type=str, default=None, help="ma1sd delays in ms, e.g. 0,200")
    parser.add_argument("--concurrency", type=str, default=None, help="comma-separated C values (overrides the grid)")
    parser.add_argument("--logins", type=int, default=0, help="logins per batch (default max(4 C, 20))")
    parser.add_argument("--providers", type=str, default=",".join(PROVIDER_ORDER), help="subset of ours,floor,blocking")
    parser.add_argument("--rss-logins", type=int, default=None, help="RSS phase logins (2000; --quick 500; 0 skips)")
    parser.add_argument("--database", choices=("auto", "postgres", "sqlite"), default="auto")
    parser.add_argument("--no-threepids", dest="threepids", action="store_false", help="ma1sd users without an email")
    parser.add_argument(
        "--ours-config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="extra config keys for ours, e.g. '{\"profile_recheck_interval\": 0}'",
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
        help="run the fake ma1sd in the benchmark process (shares the load generator's GIL; for comparison)",
    )
    args = parser.parse_args(argv)
    if not isinstance(args.ours_config, dict):
        parser.error("--ours-config: expected a JSON object")
    args.delays_ms = (
        tuple(int(x) for x in args.delays.split(","))
        if args.delays
        else (QUICK_DELAYS_MS if args.quick else FULL_DELAYS_MS)
    )
    args.concurrencies = (
        tuple(int(x) for x in args.concurrency.split(","))
        if args.concurrency
        else (QUICK_CONCURRENCY if args.quick else FULL_CONCURRENCY)
    )
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.rss_logins is None:
        args.rss_logins = 500 if args.quick else 2000
    if args.repeats < 1 or args.logins < 0 or args.rss_logins < 0:
        parser.error("--repeats must be at least 1, --logins and --rss-logins not negative")
    args.provider_list = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = set(args.provider_list) - set(PROVIDERS)
    if unknown:
        parser.error("unknown providers: %s" % ", ".join(sorted(unknown)))
    return args


def grid_kind(args: argparse.Namespace) -> str:
    if args.quick:
        return "--quick run"
    if tuple(args.delays_ms) == FULL_DELAYS_MS and tuple(args.concurrencies) == FULL_CONCURRENCY:
        return "full grid"
    return "custom grid"


def logins_per_cell(concurrency: int, override: int = 0) -> int:
    """Returns how many logins one batch sends: max(4 C, 20) unless --logins says otherwise."""
    return override or max(concurrency * 4, 20)


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


def run_grid(bench: Bench, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    cells: Dict[str, Dict[str, Any]] = {}
    providers = args.provider_list
    total = len(args.delays_ms) * len(args.concurrencies) * args.repeats * len(providers)
    done = 0
    for delay in args.delays_ms:
        for conc in args.concurrencies:
            count = logins_per_cell(conc, args.logins)
            for rep in range(args.repeats):
                # Rotate the order so that no provider always runs first or last.
                order = providers[rep % len(providers) :] + providers[: rep % len(providers)]
                for provider in order:
                    done += 1
                    logins = bench.new_logins(count)
                    for phase in ("first", "repeat"):
                        result, connections, in_flight = bench.run(provider, logins, conc, delay)
                        f = figures(result, connections, in_flight)
                        add_run(cells, provider, phase, delay, conc, f)
                        log(
                            "[%d/%d] %-8s D=%3d C=%2d rep %d %-6s %3d logins: %s"
                            % (done, total, provider, delay, conc, rep + 1, phase, count, summary(f))
                        )
    return cells


def render(args: argparse.Namespace) -> int:
    """Reprints and rewrites the report of an earlier run from its JSON."""
    data = json.loads(args.render.read_text())
    options = data["options"]
    args.quick = options["quick"]
    args.repeats = options["repeats"]
    args.delays_ms = tuple(options["delays_ms"])
    args.concurrencies = tuple(options["concurrency"])
    args.provider_list = options["providers"]
    args.rss_logins = options["rss_logins"]
    args.threepids = options["threepids"]
    args.log_level = options["synapse_log_level"]
    args.ours_config = options.get("ours_config", {})
    args.logins = 0
    args.ma1sd_in_process = data["meta"].get("fake_ma1sd") == "in the benchmark process"
    targets = evaluate_targets(data["cells"], data["rss"], args.delays_ms, args.concurrencies)
    report(args, data["meta"], data["cells"], data["rss"], targets)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args)
    started = time.time()
    meta = machine_info()
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
        "Grid: D = %s ms, C = %s, %d repeat(s), providers %s%s%s"
        % (
            ", ".join(map(str, args.delays_ms)),
            ", ".join(map(str, args.concurrencies)),
            args.repeats,
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
                # Warm-up: connections, caches and JIT-free code paths, not measured.
                for provider in args.provider_list:
                    logins = bench.new_logins(20)
                    bench.run(provider, logins, 5, 0)
                    bench.run(provider, logins, 5, 0)
                cells = run_grid(bench, args)
                rss: Dict[str, Dict[str, Any]] = {}
                if args.rss_logins > 0:
                    for provider in ("ours", "floor"):
                        if provider in bench.servers:
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
    loads = [r.get("load_1min", float("nan")) for c in cells.values() for r in c["runs"]]
    meta["load_average_max"] = max((x for x in loads if x == x), default=float("nan"))
    meta["busy"] = bool(busy_note(meta))
    targets = evaluate_targets(cells, rss, args.delays_ms, args.concurrencies)
    report(args, meta, cells, rss, targets)
    return 0


def report(
    args: argparse.Namespace,
    meta: Dict[str, Any],
    cells: Dict[str, Dict[str, Any]],
    rss: Dict[str, Dict[str, Any]],
    targets: List[Dict[str, Any]],
) -> None:
    delays, concs = args.delays_ms, args.concurrencies
    rows = table_rows(cells, delays, concs)
    ratios = ratio_rows(cells, delays, concs)
    transactions = transaction_rows(cells, delays, concs)
    kind = grid_kind(args)
    log()
    log(
        "Results (%s; median of %d repeat(s); latencies in ms; database: %s; load average %s at start, %s at end)"
        % (
            kind,
            args.repeats,
            meta["database_detail"],
            " ".join("%.2f" % x for x in meta["load_average_at_start"]),
            " ".join("%.2f" % x for x in meta["load_average_at_end"]),
        )
    )
    note = busy_note(meta)
    if note:
        log(note)
    log(text_table(TABLE_HEADER, rows, group=slice(1, 4)))
    log()
    log("Ratios (medians)")
    log(text_table(RATIO_HEADER, ratios, group=slice(0, 2)))
    log()
    if transactions:
        log("Database transactions per login where ours and floor differ (Synapse's names; medians)")
        log(text_table(TRANSACTION_HEADER, transactions, group=slice(0, 1)))
        log()
    log("Targets")
    for t in targets:
        log("  %-4s  %s: %s" % (t["status"], t["target"], t["detail"]))

    out_dir: Path = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "options": {
            "quick": args.quick,
            "repeats": args.repeats,
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
        "ratios": [dict(zip(RATIO_HEADER, r)) for r in ratios],
        "transactions": [dict(zip(TRANSACTION_HEADER, r)) for r in transactions],
        "rss": rss,
        "targets": targets,
    }
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    title = "rest_auth_provider login benchmark (%s): Synapse %s, %s, %s cores, median of %d%s" % (
        kind,
        meta["synapse"],
        meta["database"],
        meta["cores"],
        args.repeats,
        ", BUSY MACHINE (load average %.1f before the run)" % meta["load_average_at_start"][0]
        if busy_note(meta)
        else "",
    )
    png_path = out_dir / "latest.png"
    problem = draw_chart(png_path, cells, delays, concs, title)
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_report(args, meta, rows, ratios, transactions, rss, targets))
    log()
    log("Wrote %s, %s%s" % (json_path, md_path, "" if problem else ", " + str(png_path)))
    if problem:
        log("No chart: %s" % problem)


def markdown_report(
    args: argparse.Namespace,
    meta: Dict[str, Any],
    rows: List[List[str]],
    ratios: List[List[str]],
    transactions: List[List[str]],
    rss: Dict[str, Dict[str, Any]],
    targets: List[Dict[str, Any]],
) -> str:
    lines = [
        "Run of %s: %s; %s cores (%s), %.1f GiB RAM; Python %s, Synapse %s; %s; load average %s at start, "
        "%s at end; %d repeat(s) per cell, medians; %.0f s in all."
        % (
            meta["finished"],
            grid_kind(args),
            meta["cores"],
            meta["cpu_model"],
            meta["ram_gib"],
            meta["python"],
            meta["synapse"],
            meta["database_detail"],
            " ".join("%.2f" % x for x in meta["load_average_at_start"]),
            " ".join("%.2f" % x for x in meta["load_average_at_end"]),
            args.repeats,
            meta["duration_s"],
        ),
        "",
        ("**%s.**" % busy_note(meta)) if busy_note(meta) else "The machine was otherwise idle.",
        "",
        markdown_table(TABLE_HEADER, rows),
        "",
        markdown_table(RATIO_HEADER, ratios),
        "",
    ]
    if transactions:
        lines += [markdown_table(TRANSACTION_HEADER, transactions), ""]
    for provider, r in rss.items():
        lines.append(
            "* RSS, %s, %d logins at C=50, D=0 after %d warm-up logins: %.1f → %.1f MB (%+.1f MB); "
            "ma1sd accepted %d connections during them."
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
    lines += ["", "| target | result | figures |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % (t["target"], t["status"], t["detail"]) for t in targets]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
