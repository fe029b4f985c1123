"""The fake ma1sd (``support.fake_ma1sd.FakeMa1sd``), or the fake REST identity
store (``support.fake_reststore.FakeRestStore``), in a process of its own.

Real ma1sd is a separate (Java) process, and so is a real REST store. Running
the threaded fake inside the benchmark process would make it share one GIL
with the 50 load threads and the probe, so at C=50 its replies would queue
behind the load generator and the provider under test would look slower than
it is. ``RemoteMa1sd`` runs it in a child process and offers the attributes
the benchmark uses (``url``, ``delay``, ``connections``, ``max_in_flight``,
``add_user``, ``reset``); ``RemoteMa1sd("rest")`` serves the REST store.
"""

import http.server
import multiprocessing
import signal
from multiprocessing.connection import Connection
from typing import Any, List, Optional, Tuple

from support.fake_ma1sd import FakeMa1sd
from support.fake_reststore import FakeRestStore

#: What each kind of fake speaks: ma1sd's own API, or ma1sd's REST-store backend protocol.
KINDS = ("ma1sd", "rest")

_User = Tuple[str, str, Optional[str], Tuple[str, ...]]

# socketserver listens with a backlog of 5. When 50 first logins open 50
# connections at once, the kernel drops the SYNs beyond the backlog and the
# client retries after 1, 3, 7 s: ma1sd would look seconds slow (or time out)
# for reasons that have nothing to do with the provider. Real ma1sd (Undertow)
# listens with a backlog of 1000.
LISTEN_BACKLOG = 1024


def raise_listen_backlog() -> None:
    """Makes every server the fake starts in this process listen with LISTEN_BACKLOG."""
    http.server.ThreadingHTTPServer.request_queue_size = LISTEN_BACKLOG


def make_fake(kind: str, domain: str = "example.org") -> FakeMa1sd:
    """Returns a new (not started) fake of ``kind``: ma1sd, or a REST store serving ``domain``."""
    if kind == "rest":
        return FakeRestStore(domain=domain)
    if kind == "ma1sd":
        return FakeMa1sd()
    raise ValueError("unknown kind of fake: %r (expected one of %s)" % (kind, ", ".join(KINDS)))


def _serve(conn: Connection, kind: str = "ma1sd", domain: str = "example.org") -> None:
    # Ctrl-C reaches the whole process group; the benchmark stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_listen_backlog()
    fake = make_fake(kind, domain).start()
    try:
        conn.send(fake.url)
        while True:
            try:
                command, argument = conn.recv()
            except (EOFError, OSError):
                return  # the benchmark is gone
            reply: Any = None
            if command == "stop":
                conn.send(None)
                return
            if command == "add_users":
                for user_id, password, display_name, emails in argument:
                    fake.add_user(user_id, password, display_name, emails=emails)
            elif command == "delay":
                fake.delay = float(argument)
            elif command == "reset":
                fake.reset()
            elif command == "stats":
                reply = (fake.connections, fake.max_in_flight)
            conn.send(reply)
    finally:
        fake.stop()


class RemoteMa1sd:
    """Starts, drives and stops the fake ma1sd (``kind="ma1sd"``) or the fake
    REST store (``kind="rest"``, answering for ``domain``) in a child process."""

    def __init__(self, kind: str = "ma1sd", domain: str = "example.org") -> None:
        if kind not in KINDS:
            raise ValueError("unknown kind of fake: %r (expected one of %s)" % (kind, ", ".join(KINDS)))
        self.kind = kind
        self.domain = domain
        self._process: Optional[Any] = None
        self._conn: Optional[Connection] = None
        self._pending: List[_User] = []
        self._delay = 0.0
        self.url = ""

    def start(self) -> "RemoteMa1sd":
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, self.kind, self.domain), name="fake-%s" % self.kind, daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(60):
            raise RuntimeError("the fake %s process did not start" % self.kind)
        self.url = parent.recv()
        return self

    def _call(self, command: str, argument: Any = None) -> Any:
        assert self._conn is not None, "not started"
        if self._pending and command != "add_users":
            pending, self._pending = self._pending, []
            self._call("add_users", pending)
        self._conn.send((command, argument))
        if not self._conn.poll(60):
            raise RuntimeError("the fake %s process does not answer" % self.kind)
        return self._conn.recv()

    def add_user(
        self, user_id: str, password: str, display_name: Optional[str] = None, emails: Tuple[str, ...] = ()
    ) -> None:
        """Queues a user; sent with the next command."""
        self._pending.append((user_id, password, display_name, tuple(emails)))

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._call("delay", seconds)
        self._delay = seconds

    def reset(self) -> None:
        """Clears the delay and the counters (users stay)."""
        self._call("reset")
        self._delay = 0.0

    def flush(self) -> None:
        """Sends queued users now."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._call("add_users", pending)

    @property
    def connections(self) -> int:
        """TCP connections accepted since the last reset()."""
        return int(self._call("stats")[0])

    @property
    def max_in_flight(self) -> int:
        """Most requests handled at once since the last reset()."""
        return int(self._call("stats")[1])

    @property
    def pid(self) -> Optional[int]:
        """The child process's ID (for its CPU time), or None when not running."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        process, self._process = self._process, None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.send(("stop", None))
                conn.poll(10)
            except OSError:
                pass
            conn.close()
        if process is not None:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
