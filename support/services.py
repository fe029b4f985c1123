"""Private PostgreSQL and Redis servers for the worker-topology tests and the benchmark.

Each runs from a temporary folder on a free loopback port and is stopped by
whoever started it. PostgreSQL refuses to run as root, so when the tests run
as root (CI) the server runs as the ``postgres`` (or ``nobody``) user.
"""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from support.harness import free_port


class ServiceMissing(Exception):
    """A binary the topology needs is not installed; ``str()`` says which."""


def _find_pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/%s" % name), reverse=True)
    if candidates:
        return candidates[0]
    raise ServiceMissing("PostgreSQL's %s (Debian: apt-get install postgresql)" % name)


def _drop_root() -> Optional[pwd.struct_passwd]:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceMissing("a non-root user to run PostgreSQL as")


def _as_user(user: Optional[pwd.struct_passwd]) -> Optional[Callable[[], None]]:
    if user is None:
        return None

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return demote


class PostgresCluster:
    """A throwaway cluster (initdb, C collation as Synapse requires)."""

    def __init__(self) -> None:
        self.initdb = _find_pg_bin("initdb")
        self.postgres = _find_pg_bin("postgres")
        self.psql = _find_pg_bin("psql")
        self.user = _drop_root()
        self.folder = Path(tempfile.mkdtemp(prefix="synapse-pg-"))
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "socket"
        self.port = free_port()
        self._proc: Optional[subprocess.Popen[bytes]] = None

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(str(path), self.user.pw_uid, self.user.pw_gid)

    def start(self) -> "PostgresCluster":
        self.socket_dir.mkdir()
        for path in (self.folder, self.socket_dir):
            self._chown(path)
        os.chmod(str(self.folder), 0o755)
        subprocess.run(
            [self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--locale=C", "--encoding=UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_as_user(self.user),
        )
        log = open(str(self.folder / "postgres.log"), "ab")
        self._proc = subprocess.Popen(
            [
                self.postgres,
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_as_user(self.user),
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("postgres exited: %s" % (self.folder / "postgres.log").read_text())
            ok = subprocess.run(
                [self.psql, "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-c", "select 1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if ok.returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError("postgres did not start")

    def query(self, sql: str, database: str = "postgres") -> List[List[str]]:
        """Runs ``sql`` with psql; returns the rows as lists of strings."""
        out = subprocess.run(
            [
                self.psql,
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-At",
                "-F",
                "\t",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
        )
        text = out.stdout.decode()
        return [line.split("\t") for line in text.splitlines() if line]

    def create_database(self, name: str) -> Dict[str, Any]:
        """Creates a database; returns Synapse's ``database:`` config for it."""
        self.query("CREATE DATABASE \"%s\" TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'" % name)
        return {
            "name": "psycopg2",
            "args": {
                "user": "postgres",
                "database": name,
                "host": "127.0.0.1",
                "port": self.port,
                "cp_min": 1,
                "cp_max": 10,
            },
        }

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(str(self.folder), ignore_errors=True)


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if binary is None:
            raise ServiceMissing("redis-server (Debian: apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self._proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> "RedisServer":
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        import socket

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
