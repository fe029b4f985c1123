"""CPU cost per password check of the module's HTTP layer: the treq transport
against the client it replaced.

Run from the repository root: ``python -m bench.transport_cpu [--rounds 5]
[--calls 2000] [--concurrency 50] [--old REV:PATH | --old none]``.

The fake ma1sd runs in a process of its own (``bench.ma1sd.RemoteMa1sd``), so
``time.process_time()`` around the calls counts only this process: the client
and Twisted's reactor. Each round measures ``--calls`` sequential
``check_credentials`` calls of each implementation, then the same number
spread over ``--concurrency`` concurrent callers, then sequential calls over
https (a second fake with a CA of its own, ``tls.ca_file``); the two
implementations alternate which goes first from round to round. Each
measurement starts with a warm-up (connections opened, caches filled) that is
not counted, and runs with the garbage collector off.

On a busy machine those figures move by 10 % from round to round, so each
round also measures the client alone ("memory"): the same calls on a memory
reactor, whose one connection this script answers with a canned reply, so no
socket, no other process and no scheduling is involved (old, new, new, old;
the mean of each pair).

* ``old``: ``Ma1sdClient`` as it was before the move to treq, loaded from git
  (``--old``, default ``OLD_CLIENT``), so the comparison stays reproducible
  after its deletion;
* ``new``: ``Transport`` + ``Ma1sdBackend``.

Prints per round and the median over rounds: CPU µs per call, wall µs per
call, and new / old.
"""

import argparse
import contextlib
import gc
import logging
import multiprocessing
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address

from bench.ma1sd import RemoteMa1sd, raise_listen_backlog
from rest_auth_provider.backends.ma1sd import Ma1sdBackend
from rest_auth_provider.config import ProviderConfig, parse_config
from rest_auth_provider.transport import Transport
from support.certs import write_certs
from support.fake_ma1sd import FakeMa1sd
from support.memory_reactor import MemoryClock
from support.twisted_helpers import string_transport, take_written

ROOT = Path(__file__).resolve().parents[1]
# The last version of the client before the treq transport (issue 15).
OLD_CLIENT = "f4f0edacca846e931f8a0c8d956a363396046eba:rest_auth_provider/client.py"
USER = "@bench:example.org"
PASSWORD = "bench password"
WARM_UP_CALLS = 200

Call = Callable[[], Awaitable[Any]]
Close = Callable[[], Awaitable[None]]
Factory = Callable[[], Tuple[Call, Close]]


def load_old_client(spec: str) -> Any:
    """Returns the module ``git show spec`` prints (the old client), or None
    when git cannot show it."""
    shown = subprocess.run(["git", "show", spec], cwd=str(ROOT), capture_output=True)
    if shown.returncode != 0:
        print("cannot load the old client (%s): %s" % (spec, shown.stderr.decode().strip()), file=sys.stderr)
        return None
    module = types.ModuleType("bench_old_client")
    module.__file__ = spec
    exec(compile(shown.stdout, spec, "exec"), module.__dict__)  # noqa: S102 - our own history
    return module


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Collects garbage, then keeps the collector off: its pauses would land in one measurement or another."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def _run(call: Call, calls: int, concurrency: int) -> Tuple[float, float]:
    """Returns (CPU seconds, wall seconds) of ``calls`` calls by ``concurrency`` concurrent callers."""

    async def caller(count: int) -> None:
        for _ in range(count):
            reply = await call()
            if not reply.success:
                raise AssertionError("the fake ma1sd refused the bench user")

    shares = [calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)]
    with _no_gc():
        cpu, wall = time.process_time(), time.perf_counter()
        await defer.gatherResults([defer.ensureDeferred(caller(n)) for n in shares if n], consumeErrors=True)
        return time.process_time() - cpu, time.perf_counter() - wall


async def measure(make: Factory, calls: int, concurrency: int) -> Tuple[float, float]:
    """Returns (CPU seconds, wall seconds) per call: a fresh client, warmed up, then measured."""
    call, close = make()
    try:
        await _run(call, WARM_UP_CALLS, concurrency)
        cpu, wall = await _run(call, calls, concurrency)
    finally:
        await close()
    return cpu / calls, wall / calls


def _factories(config: ProviderConfig, old: Any) -> Dict[str, Factory]:
    def new() -> Tuple[Call, Close]:
        backend = Ma1sdBackend(config, Transport(config))
        return (lambda: backend.verify_password(USER, PASSWORD)), backend.close

    if old is None:
        return {"new": new}

    def old_client() -> Tuple[Call, Close]:
        client = old.Ma1sdClient(config)
        return (lambda: client.check_credentials(USER, PASSWORD)), client.close

    return {"old": old_client, "new": new}


def _serve_tls(conn: Connection, certificate: str, key: str) -> None:
    """Runs the fake ma1sd over TLS in this (child) process until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_listen_backlog()
    fake = FakeMa1sd(tls=(certificate, key)).start()
    fake.add_user(USER, PASSWORD, display_name="Bench User", emails=("bench@example.org",))
    try:
        conn.send(fake.url)
        conn.recv()
    except (EOFError, OSError):
        pass
    finally:
        fake.stop()


class _TlsFake:
    """The fake ma1sd over https (a CA of its own) in a child process."""

    def __init__(self) -> None:
        self.certs = write_certs(tempfile.mkdtemp(prefix="transport-cpu-"))
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_tls, args=(child, *self.certs.server), daemon=True)
        self._process.start()
        child.close()
        if not self._conn.poll(60):
            raise RuntimeError("the https fake ma1sd did not start")
        self.url: str = self._conn.recv()

    def stop(self) -> None:
        try:
            self._conn.send("stop")
        except OSError:
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


MEMORY_REPLY = b'{"auth": {"success": true, "profile": {"display_name": "Bench User", "three_pids": []}}}'
MEMORY_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(MEMORY_REPLY),
    MEMORY_REPLY,
)


def measure_memory(name: str, old: Any, calls: int) -> float:
    """Returns CPU seconds per call of ``name`` ("old" or "new") on a memory reactor."""
    clock: Any = MemoryClock()
    config = parse_config({"endpoint": "http://ma1sd.test:8090"})
    if name == "old":
        client = old.Ma1sdClient(config, reactor=clock)
        call: Call = lambda: client.check_credentials(USER, PASSWORD)  # noqa: E731
    else:
        backend = Ma1sdBackend(config, Transport(config, reactor=clock))
        call = lambda: backend.verify_password(USER, PASSWORD)  # noqa: E731
    server = string_transport()
    protocol: List[Any] = []

    def one() -> None:
        d: Any = defer.ensureDeferred(call())  # type: ignore[arg-type]
        if not protocol:  # the first call opens the one connection; the others reuse it
            factory: Any = clock.tcpClients[0][2]
            protocol.append(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8090)))
            protocol[0].makeConnection(server)
        take_written(server)
        protocol[0].dataReceived(MEMORY_RESPONSE)
        if not (d.called and d.result.success):
            raise AssertionError("no answer on the memory reactor")

    for _ in range(WARM_UP_CALLS):
        one()
    with _no_gc():
        cpu = time.process_time()
        for _ in range(calls):
            one()
        return (time.process_time() - cpu) / calls


def _us(seconds: float) -> str:
    return "%8.1f" % (seconds * 1e6)


async def main_async(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    old = None if args.old == "none" else load_old_client(args.old)
    fake = RemoteMa1sd().start()
    tls_fake = _TlsFake()
    try:
        fake.add_user(USER, PASSWORD, display_name="Bench User", emails=("bench@example.org",))
        fake.flush()
        http = _factories(parse_config({"endpoint": fake.url}), old)
        https = _factories(parse_config({"endpoint": tls_fake.url, "tls": {"ca_file": tls_fake.certs.ca_cert}}), old)
        modes = [
            ("sequential", 1, http),
            ("concurrency %d" % args.concurrency, args.concurrency, http),
            ("https sequential", 1, https),
        ]
        results: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
        for round_number in range(args.rounds):
            names = list(http)
            if round_number % 2:
                names.reverse()
            for mode, concurrency, factories in modes:
                for name in names:
                    cpu, wall = await measure(factories[name], args.calls, concurrency)
                    results.setdefault((mode, name), []).append((cpu, wall))
                    print(
                        "round %d  %-16s %-4s CPU %s µs/call  wall %s µs/call"
                        % (round_number + 1, mode, name, _us(cpu), _us(wall)),
                        flush=True,
                    )
            # Let the fake's threads finish with the connections just closed,
            # then measure A B B A: the first measurement after the socket
            # runs is slower, whichever it is.
            await task.deferLater(reactor, 1.0, lambda: None)
            memory: Dict[str, List[float]] = {}
            for name in names + names[::-1]:
                memory.setdefault(name, []).append(measure_memory(name, old, args.calls))
            for name in names:
                cpu = statistics.mean(memory[name])
                results.setdefault(("memory", name), []).append((cpu, float("nan")))
                print("round %d  %-16s %-4s CPU %s µs/call" % (round_number + 1, "memory", name, _us(cpu)), flush=True)
        print()
        print(
            "Median of %d rounds, %d check_credentials calls each, fake ma1sd in another process"
            " (memory: no sockets, no wall time)" % (args.rounds, args.calls)
        )
        print("%-16s %-4s %12s %12s" % ("mode", "impl", "CPU µs/call", "wall µs/call"))
        for mode in [m[0] for m in modes] + ["memory"]:
            for name in http:
                samples = results[(mode, name)]
                cpu = statistics.median(s[0] for s in samples)
                wall = statistics.median(s[1] for s in samples)
                print("%-16s %-4s %12s %12s" % (mode, name, _us(cpu), _us(wall)))
            if old is not None:
                ratios = [n[0] / o[0] for n, o in zip(results[(mode, "new")], results[(mode, "old")])]
                print(
                    "%-16s new/old CPU: median %.3f (per round: %s)"
                    % (mode, statistics.median(ratios), ", ".join("%.3f" % r for r in ratios))
                )
    finally:
        fake.stop()
        tls_fake.stop()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--old", default=OLD_CLIENT, help="git REV:PATH of the old client, or 'none'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    codes: List[int] = []

    async def run(reactor: Any) -> None:
        codes.append(await main_async(args))

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit:
        pass
    return codes[0] if codes else 1


if __name__ == "__main__":
    sys.exit(main())
