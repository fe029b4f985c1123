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

This module is the command line; the rest lives in ``bench.machine`` (the
machine and how busy it was), ``bench.rig`` (the fakes, the database and the
Synapses), ``bench.grid`` (the cells, the one batch, the RSS phase),
``bench.figures`` (a batch's figures), ``bench.targets`` (the verdicts),
``bench.report`` (tables and chart) and ``bench.publish`` (the written report).
"""

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from bench.grid import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DELAYS_MS,
    QUICK_CONCURRENCY,
    QUICK_DELAYS_MS,
    grid_line,
    measure,
)
from bench.machine import background_cores, busy_note, load_average, load_during, machine_info, machine_line
from bench.publish import publish
from bench.report import HTTP_FLOOR, OURS, PROVIDER_ORDER, cell_key, log
from bench.rig import PROVIDERS, ROOT, Bench
from bench.targets import BATCH_CONCURRENCY, BATCH_DELAY_MS, FIRST_MIN_REPEATS, evaluate_targets
from support.harness import remove_tree

BACKEND_CHOICES = ("ma1sd", "rest", "both")


def _ints(text: str) -> Tuple[int, ...]:
    """Returns the whole numbers of a comma-separated list; raises ValueError on anything else."""
    return tuple(int(x) for x in text.split(",") if x.strip())


def expand_providers(names: Sequence[str], backend: str) -> List[str]:
    """Returns the providers to run, in PROVIDER_ORDER: ``ours`` becomes ours
    under ``backend`` (ma1sd, rest or both); ``ours-ma1sd`` and ``ours-rest``
    name one backend; raises ValueError on an unknown name."""
    backends = ("ma1sd", "rest") if backend == "both" else (backend,)
    wanted: Set[str] = set()
    for name in names:
        if name == "ours":
            wanted.update(OURS[b] for b in backends)
        elif name == "http":
            wanted.update(HTTP_FLOOR[b] for b in backends)
        elif name in PROVIDERS:
            wanted.add(name)
        else:
            raise ValueError(name)
    return [p for p in PROVIDER_ORDER if p in wanted]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Returns the options with their defaults filled in (``delays_ms``,
    ``concurrencies``, ``provider_list``...); exits with status 2 on a bad one."""
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
        help="subset of ours,http,floor,blocking (ours and http, the HTTP floor, as --backend says; "
        "or ours-ma1sd, ours-rest, http-ma1sd, http-rest)",
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
        parser.error("unknown provider: %s (expected one of ours, http, %s)" % (e, ", ".join(PROVIDER_ORDER)))
    if not args.provider_list:
        parser.error("--providers: none to run")
    return args


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
    publish(args, data["meta"], data["cells"], one_batch, data["rss"], targets)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark (or ``--render``); returns the exit status: 0, 1 if it failed, 130 if interrupted."""
    args = parse_args(argv)
    if args.render is not None:
        return render(args)
    started = time.time()
    meta = machine_info()
    meta["command"] = "python -m bench.run" + "".join(" " + a for a in (sys.argv[1:] if argv is None else argv))
    meta["background_cores_before"] = background_cores()
    log(machine_line(meta))
    log(grid_line(args))
    workdir = Path(tempfile.mkdtemp(prefix="rap-bench-"))
    bench = Bench(args, workdir)
    keep = args.keep
    try:
        with _terminate_as_interrupt():
            try:
                bench.start(args.provider_list)
                meta["load_average_measurement_start"] = load_average()
                cells, one_batch, rss = measure(bench, args)
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
    meta.update(load_during(runs))
    meta["busy"] = bool(busy_note(meta))
    targets = evaluate_targets(cells, one_batch, rss, args.delays_ms, args.concurrencies)
    publish(args, meta, cells, one_batch, rss, targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
