"""The benchmark's rig: the fakes (ma1sd, REST store), the database and one Synapse per provider.

``PROVIDERS`` says which module each provider loads in Synapse's ``modules:``,
which fake it talks to and with what config; ``Bench`` starts them all, adds
users, runs one batch of logins and stops everything on ``close()``.
"""

import argparse
import contextlib
import itertools
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from bench.load import Login, PhaseResult, db_transactions, process_cpu_seconds, run_logins, transactions_between
from bench.ma1sd import RemoteMa1sd, make_fake, raise_listen_backlog
from bench.report import HTTP_FLOOR, OURS, log
from bench.targets import FLOOR
from support.harness import (
    SERVER_NAME,
    SynapseServer,
    client_listener,
    free_port,
    log_config,
    synapse_version,
)
from support.services import PostgresCluster

ROOT = Path(__file__).resolve().parents[1]
PAUSE = 0.3  # seconds between two batches, so one batch's tail does not overlap the next

# name: (module, the fake it talks to or None, its config given that fake's URL)
PROVIDERS: Dict[str, Tuple[str, Optional[str], Callable[[str], Dict[str, Any]]]] = {
    OURS["ma1sd"]: ("rest_auth_provider.RestAuthProvider", "ma1sd", lambda url: {"endpoint": url}),
    OURS["rest"]: ("rest_auth_provider.RestAuthProvider", "rest", lambda url: {"endpoint": url, "backend": "rest"}),
    FLOOR: ("bench.providers.floor.FloorProvider", None, lambda url: {}),
    "blocking": ("bench.providers.blocking.BlockingProvider", "ma1sd", lambda url: {"endpoint": url}),
    HTTP_FLOOR["ma1sd"]: ("bench.providers.httpfloor.HttpFloorProvider", "ma1sd", lambda url: {"endpoint": url}),
    HTTP_FLOOR["rest"]: (
        "bench.providers.httpfloor.HttpFloorProvider",
        "rest",
        lambda url: {"endpoint": url, "backend": "rest"},
    ),
}


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
