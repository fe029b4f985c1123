"""Synapse as production runs it: a main process and generic workers on
PostgreSQL, with Redis replication. Client requests go straight to the
workers' ports, as a reverse proxy routing ``/login`` to workers would send them.
"""

import itertools
from pathlib import Path
from typing import Any, Dict, List

from support.harness import SynapseServer, client_listener, free_port, module_block
from support.matrix_client import MatrixClient
from support.services import PostgresCluster, RedisServer

_databases = itertools.count(1)


class WorkerTopology:
    """A main process plus ``workers`` generic workers sharing one database."""

    def __init__(
        self,
        workdir: Path,
        style: str,
        module_config: Dict[str, Any],
        postgres: PostgresCluster,
        redis: RedisServer,
        workers: int = 2,
        log_level: str = "INFO",
    ):
        self.workdir = Path(workdir)
        self.postgres = postgres
        self.database = "synapse_workers_%d" % next(_databases)
        main_port = free_port()
        replication_port = free_port()
        shared: Dict[str, Any] = {
            "database": postgres.create_database(self.database),
            "redis": {"enabled": True, "host": "127.0.0.1", "port": redis.port},
            "instance_map": {"main": {"host": "127.0.0.1", "port": replication_port}},
            "listeners": [client_listener(main_port), client_listener(replication_port, ("replication",))],
        }
        shared.update(module_block(style, module_config))
        self.main = SynapseServer(self.workdir / "main", shared, name="main", port=main_port, log_level=log_level)
        self.workers: List[SynapseServer] = [
            SynapseServer(
                self.workdir / ("worker%d" % i),
                shared,
                name="worker%d" % i,
                worker={"worker_app": "synapse.app.generic_worker", "worker_name": "worker%d" % i},
                log_level=log_level,
            )
            for i in range(1, workers + 1)
        ]
        self.main_client = MatrixClient(self.main.url)
        self.worker_clients = [MatrixClient(w.url) for w in self.workers]

    def start(self) -> "WorkerTopology":
        try:
            self.main.start()
            # As in conftest.py: a new database's users_set_deactivated_flag
            # update must not race the accounts the module creates.
            self.main.wait_for_background_updates()
            for worker in self.workers:
                worker.start(wait=False)
            for worker in self.workers:
                worker.wait_until_ready()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.workers + [self.main]:
            server.stop()

    def processes(self) -> List[SynapseServer]:
        return [self.main] + self.workers

    def count_users(self, localpart: str) -> int:
        """Returns how many accounts have this localpart, case-insensitively."""
        rows = self.postgres.query(
            "SELECT count(*) FROM users WHERE lower(name) LIKE lower('@%s:%%')" % localpart.replace("'", ""),
            database=self.database,
        )
        return int(rows[0][0])
