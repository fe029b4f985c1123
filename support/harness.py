"""Real Synapse processes for the integration tests, the demo and the benchmark.

``SynapseServer`` runs ``python -m synapse.app.homeserver`` from the current
environment (where the package under test is installed) on a free loopback
port, with SQLite or PostgreSQL, waits for ``/_matrix/client/versions``,
keeps its log for failure messages and always stops it.
"""

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml

SERVER_NAME = "example.org"
MODULE = "rest_auth_provider.RestAuthProvider"

# The generated templates of this process, by (server name, python); each
# holds a signing key and is removed when the process exits (remove_templates).
_template_dirs: Dict[Any, Path] = {}
_template_owner = os.getpid()


def synapse_version() -> Tuple[int, ...]:
    """Returns the installed Synapse version as a tuple of ints, e.g. (1, 19, 3)."""
    import synapse

    # The newest releases say e.g. "1.163.2 (b=main,95939...)": only the leading numbers count.
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", synapse.__version__)
    if match is None:
        raise RuntimeError("unreadable Synapse version: %r" % synapse.__version__)
    return tuple(int(part or 0) for part in match.groups())


def supports_modules_style() -> bool:
    """Returns True when this Synapse loads password checkers from ``modules:``."""
    return synapse_version() >= (1, 46, 0)


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _template(server_name: str, python: str = sys.executable) -> Path:
    """Returns a folder with a generated homeserver.yaml and signing key,
    made once per process and server name (``--generate-config`` is slow);
    removed by :func:`remove_templates`, at the latest when the process exits."""
    if (server_name, python) in _template_dirs:
        return _template_dirs[(server_name, python)]
    if not _template_dirs:
        atexit.register(remove_templates)
    folder = Path(tempfile.mkdtemp(prefix="synapse-template-"))
    _template_dirs[(server_name, python)] = folder
    cmd = [
        python,
        "-m",
        "synapse.app.homeserver",
        "--server-name",
        server_name,
        "--config-path",
        str(folder / "homeserver.yaml"),
        "--generate-config",
        "--report-stats=no",
    ]
    try:
        # In its own session, as Synapse runs: a Ctrl-C in the terminal goes
        # to the caller (the demo, pytest), which stops things in order.
        result = subprocess.run(
            cmd,
            cwd=str(folder),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=180,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError("synapse --generate-config failed:\n%s" % result.stdout.decode(errors="replace"))
    except BaseException:
        del _template_dirs[(server_name, python)]
        remove_tree(folder)
        raise
    return folder


def remove_templates() -> None:
    """Removes the template folders (and their signing keys) this process
    generated; the next :func:`_template` call makes a new one. Runs at exit."""
    if os.getpid() != _template_owner:
        return  # a forked child: the folders belong to its parent
    while _template_dirs:
        _, folder = _template_dirs.popitem()
        remove_tree(folder)


def module_block(style: str, config: Dict[str, Any]) -> Dict[str, Any]:
    """Returns the homeserver.yaml fragment loading the provider in ``style``
    ('modules' or 'password_providers')."""
    entry = {"module": MODULE, "config": config}
    return {style: [entry]}


def log_config(path: Path, level: str) -> Dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "precise": {"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}
        },
        "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(path),
                "filters": ["context"],
                "encoding": "utf8",
            }
        },
        "loggers": {"rest_auth_provider": {"level": "DEBUG"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def client_listener(port: int, names: Any = ("client",)) -> Dict[str, Any]:
    """Returns a plain-HTTP listener on 127.0.0.1 serving ``names``."""
    return {
        "port": port,
        "tls": False,
        "type": "http",
        "x_forwarded": False,
        "bind_addresses": ["127.0.0.1"],
        "resources": [{"names": list(names), "compress": False}],
    }


class SynapseServer:
    """One Synapse process (main, or a worker when ``worker`` is given)."""

    def __init__(
        self,
        workdir: Path,
        config: Dict[str, Any],
        server_name: str = SERVER_NAME,
        log_level: str = "INFO",
        worker: Optional[Dict[str, Any]] = None,
        name: str = "main",
        port: Optional[int] = None,
        python: str = sys.executable,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server_name = server_name
        self.name = name
        self.port = port or free_port()
        self.python = python
        self.log_path = self.workdir / ("%s.log" % name)
        self.output_path = self.workdir / ("%s.out" % name)
        self._extra = config
        self._log_level = log_level
        self._worker = worker
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._output: Any = None
        # The config files of the last start, in the order Synapse reads them.
        self.files: List[Path] = []

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def config_files(self) -> List[Path]:
        """Writes and returns the config files, in the order Synapse reads them."""
        template = _template(self.server_name, self.python)
        log_file = self.workdir / ("%s.log.yaml" % self.name)
        log_file.write_text(yaml.safe_dump(log_config(self.log_path, self._log_level)))
        base: Dict[str, Any] = {
            "server_name": self.server_name,
            "report_stats": False,
            "signing_key_path": str(template / ("%s.signing.key" % self.server_name)),
            "pid_file": str(self.workdir / "homeserver.pid"),
            "media_store_path": str(self.workdir / "media_store"),
            "database": {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}},
            "log_config": str(log_file),
            "listeners": [client_listener(self.port)],
            "enable_registration": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "rc_login": {
                "address": {"per_second": 10000, "burst_count": 10000},
                "account": {"per_second": 10000, "burst_count": 10000},
                "failed_attempts": {"per_second": 10000, "burst_count": 10000},
            },
            "rc_message": {"per_second": 10000, "burst_count": 10000},
            "rc_joins": {
                "local": {"per_second": 10000, "burst_count": 10000},
                "remote": {"per_second": 10000, "burst_count": 10000},
            },
            "rc_registration": {"per_second": 10000, "burst_count": 10000},
            "rc_admin_redaction": {"per_second": 10000, "burst_count": 10000},
            # A fresh database has dozens of background updates queued, run
            # with pauses for a minute or more; a production database has long
            # finished them, and until then some admin APIs fail (reactivating
            # an account answers 500 on 1.76+ until profiles_full_user_id_key_idx
            # is built). Releases before this setting ignore it.
            "background_updates": {"sleep_enabled": False},
        }
        base.update(self._extra)
        files = [template / "homeserver.yaml"]
        main_file = self.workdir / "homeserver-extra.yaml"
        main_file.write_text(yaml.safe_dump(base))
        files.append(main_file)
        if self._worker is not None:
            worker = dict(self._worker)
            worker["worker_log_config"] = str(log_file)
            worker.setdefault("worker_listeners", [client_listener(self.port)])
            worker_file = self.workdir / ("%s.yaml" % self.name)
            worker_file.write_text(yaml.safe_dump(worker))
            files.append(worker_file)
        self.files = files
        return files

    def command(self) -> List[str]:
        app = "synapse.app.generic_worker" if self._worker is not None else "synapse.app.homeserver"
        cmd = [self.python, "-m", app]
        for path in self.config_files():
            cmd += ["--config-path", str(path)]
        return cmd

    def start(self, timeout: float = 120.0, wait: bool = True) -> "SynapseServer":
        """Starts the process and (by default) waits until it answers."""
        cmd = self.command()
        self._output = open(self.output_path, "ab")
        env = dict(os.environ)
        self._proc = subprocess.Popen(
            cmd,
            cwd=str(self.workdir),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        if wait:
            self.wait_until_ready(timeout)
        return self

    def wait_until_ready(self, timeout: float = 120.0, abort: Optional[Callable[[], bool]] = None) -> bool:
        """Waits until the server answers; returns True then, or False as soon
        as ``abort()`` is true (the server is left running: call stop()).
        Raises RuntimeError when it exits (``exit_code`` says how) or does
        not answer within ``timeout`` (then it is stopped)."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if abort is not None and abort():
                return False
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (self.name, self._proc.returncode, self.tail()))
            try:
                r = requests.get(self.url + "/_matrix/client/versions", timeout=2)
                if r.status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("%s did not answer within %.0f s:\n%s" % (self.name, timeout, self.tail()))

    def wait_for_exit(self, timeout: float = 120.0) -> int:
        """Returns the exit code of a process expected to stop by itself."""
        assert self._proc is not None
        try:
            return int(self._proc.wait(timeout=timeout))
        finally:
            self.stop()

    def stop(self) -> None:
        """Stops the process (TERM, then KILL) and its children."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        if self._output is not None:
            self._output.close()
            self._output = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> Optional[int]:
        """Returns the exit code of a process that stopped by itself; None
        while it runs, and after stop()."""
        return self._proc.poll() if self._proc is not None else None

    def log_text(self) -> str:
        """Returns the whole log and console output written so far."""
        text = ""
        for path in (self.log_path, self.output_path):
            if path.exists():
                text += path.read_text(encoding="utf8", errors="replace")
        return text

    def log_lines(self, since: int = 0) -> List[str]:
        """Returns log lines (of the log file only), from line number ``since``."""
        if not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf8", errors="replace").splitlines()[since:]

    def sql(self, query: str) -> List[List[str]]:
        """Runs ``query`` on this server's database (SQLite or PostgreSQL);
        returns the rows as lists of strings. For test preconditions only:
        what a test asserts, it reads through Synapse's APIs."""
        database = dict(self._extra.get("database") or {})
        if database.get("name") == "psycopg2":
            import psycopg2

            args = {k: v for k, v in database["args"].items() if not k.startswith("cp_")}
            conn = psycopg2.connect(**args)
        else:
            import sqlite3

            conn = sqlite3.connect("file:%s?mode=ro" % (self.workdir / "homeserver.db"), uri=True, timeout=30)
        try:
            cursor = conn.cursor()
            cursor.execute(query)
            return [[str(value) for value in row] for row in cursor.fetchall()]
        finally:
            conn.close()

    def wait_for_background_updates(self, timeout: float = 180.0) -> None:
        """Waits until Synapse has run every queued background update."""
        deadline = time.monotonic() + timeout
        while True:
            pending = self.sql("SELECT update_name FROM background_updates")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError("%s: background updates still pending: %s" % (self.name, pending))
            time.sleep(0.2)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> "SynapseServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def remove_tree(path: Path) -> None:
    shutil.rmtree(str(path), ignore_errors=True)
