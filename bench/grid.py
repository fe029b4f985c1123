"""The grid of cells (reply delay D x concurrency C), the one-batch cell and the RSS phase.

A cell runs every provider's repeats interleaved (``rotated``), each repeat a
``first`` then a ``repeat`` batch of the same new users. ``logins_per_cell``,
``repeats_for``, ``rotated`` and ``grid_kind`` are pure.
"""

import argparse
import functools
import json
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from bench.figures import add_run, figures, summary
from bench.load import rss_bytes
from bench.machine import current_load
from bench.report import HTTP_FLOOR, OURS, log
from bench.rig import Bench
from bench.targets import BATCH_CONCURRENCY, BATCH_DELAY_MS, FLOOR

Cells = Dict[str, Dict[str, Any]]

# The default grid: the cells the targets need (D = 0 and D = 200 ms, C = 1, 10, 50).
DEFAULT_DELAYS_MS = (0, 200)
DEFAULT_CONCURRENCY = (1, 10, 50)
# The full grid of the runs before the REST backend (--delays 0,50,200).
FULL_DELAYS_MS = (0, 50, 200)
QUICK_DELAYS_MS = (0, 200)
QUICK_CONCURRENCY = (1, 50)
RSS_CONCURRENCY = 50
RSS_WARMUP = 200


def grid_kind(args: argparse.Namespace) -> str:
    """Returns how the report names the grid ``args`` ask for (quick, default, full or custom)."""
    if args.quick:
        return "--quick run"
    if tuple(args.concurrencies) == DEFAULT_CONCURRENCY and tuple(args.delays_ms) == DEFAULT_DELAYS_MS:
        return "default grid"
    if tuple(args.concurrencies) == DEFAULT_CONCURRENCY and tuple(args.delays_ms) == FULL_DELAYS_MS:
        return "full grid"
    return "custom grid"


def grid_line(args: argparse.Namespace) -> str:
    """Returns the line that says which grid, repeats and providers the run measures."""
    return (
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
                f = figures(result, connections, in_flight, current_load())
                add_run(cells, provider, phase, delay, conc, f)
                log(
                    "%s %-10s D=%3d C=%2d rep %d %-6s %3d logins: %s"
                    % (progress(), provider, delay, conc, rep + 1, phase, count, summary(f))
                )


def run_grid(bench: Bench, args: argparse.Namespace) -> Cells:
    """Runs every cell of the grid ``args`` ask for; returns the cells by ``cell_key``."""
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
            repeats = functools.partial(repeats_for, args, delay_ms=delay)
            _run_cell(bench, cells, providers, delay, conc, count, repeats, progress)
    return cells


def run_one_batch(bench: Bench, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """The one-batch cell: D = 200 ms, C = 50 logins at once, once (first and
    repeat), ``--batch-repeats`` times interleaved, for ours and floor."""
    cells: Dict[str, Dict[str, Any]] = {}
    providers = [p for p in args.provider_list if p == FLOOR or p in OURS.values() or p in HTTP_FLOOR.values()]
    if args.batch_repeats < 1 or FLOOR not in providers or len(providers) < 2:
        return cells
    total = len(providers) * args.batch_repeats * 2
    done = [0]

    def progress() -> str:
        done[0] += 1
        return "[batch %d/%d]" % (done[0], total)

    log(
        "One batch: %d logins at C = %d, D = %d ms, %d repeats"
        % (BATCH_CONCURRENCY, BATCH_CONCURRENCY, BATCH_DELAY_MS, args.batch_repeats)
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
    f = figures(result, connections, in_flight, current_load())
    out: Dict[str, Any] = {
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


def measure(bench: Bench, args: argparse.Namespace) -> Tuple[Cells, Cells, Dict[str, Dict[str, Any]]]:
    """Warms every provider up, then runs the grid, the one-batch cell and the
    RSS phase (ours and floor); returns their cells, cells and RSS figures."""
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
    return cells, one_batch, rss
