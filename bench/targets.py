"""The benchmark's targets: ratios to ``floor`` measured in the same run.

``floor`` logs in without any HTTP call (Synapse's own cost), so a target
stated against it holds on any machine; absolute limits (the old "probe max
<= 60 ms") depend on the machine and were missed by ``floor`` itself on 2
cores. Every target is evaluated once per backend the run measured (``ours``
with ``backend: ma1sd`` and with ``backend: rest``) against the same
``floor``:

* in every cell, ours' probe max <= 1.1 x floor's + 10 ms;
* D = 0, repeat logins: ours' logins/s >= 0.92 x floor's (each C);
* D = 0, first logins: ours' logins/s >= 0.85 x floor's, medians of at least
  5 interleaved repeats (each C);
* C = 50, repeat logins: Synapse's CPU per login <= floor's + 1.0 ms (each D);
* D = 200 ms, C = 50, one batch of 50 logins: ours' wall <= 1.10 x (floor's + D)
  (each phase);
* no failed login; RSS growth <= 20 MB over the RSS phase's logins; the fake
  accepted at most C connections during them.

:func:`evaluate_targets` is a pure function of the figures (no I/O, nothing
started): the unit tests call it with hand-made cells. The benchmark prints
each target with PASS, MISS or n/a (a cell the run did not measure) and the
numbers; it never fails on them.
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from bench.report import HTTP_FLOOR, OURS, cell_key

FLOOR = "floor"
BACKENDS = tuple(OURS)

PROBE_FACTOR = 1.1
PROBE_SLACK_MS = 10.0
REPEAT_RATE_FACTOR = 0.92
FIRST_RATE_FACTOR = 0.85
FIRST_MIN_REPEATS = 5
CPU_CONCURRENCY = 50
CPU_SLACK_MS = 1.0
BATCH_DELAY_MS = 200
BATCH_CONCURRENCY = 50
BATCH_FACTOR = 1.10
RSS_LIMIT_MB = 20.0

PASS, MISS, NOT_MEASURED = "PASS", "MISS", "n/a"

Cells = Dict[str, Dict[str, Any]]


def _status(ok: Optional[bool]) -> str:
    return NOT_MEASURED if ok is None else (PASS if ok else MISS)


def _number(value: Any) -> Optional[float]:
    """Returns ``value`` as a float, or None when it is missing or NaN."""
    if value is None:
        return None
    value = float(value)
    return None if value != value else value


def _where(cell: Dict[str, Any], batch: bool = False) -> str:
    return "%s%s D=%d C=%d" % (
        "one batch, " if batch else "",
        cell["phase"],
        cell["delay_ms"],
        cell["concurrency"],
    )


def _pairs(cells: Cells, ours: str) -> Iterable[Dict[str, Any]]:
    """Yields ours' cells that have a floor cell for the same phase, D and C, in the grid's order."""
    mine = [c for c in cells.values() if c.get("provider") == ours]
    mine.sort(key=lambda c: (c["phase"] != "first", c["delay_ms"], c["concurrency"]))
    for cell in mine:
        if cell_key(FLOOR, cell["phase"], cell["delay_ms"], cell["concurrency"]) in cells:
            yield cell


def _floor_of(cells: Cells, cell: Dict[str, Any]) -> Dict[str, Any]:
    return cells[cell_key(FLOOR, cell["phase"], cell["delay_ms"], cell["concurrency"])]


def backends_in(*groups: Cells) -> List[str]:
    """Returns the backends whose ``ours`` ran in any of ``groups`` of cells, in BACKENDS' order."""
    providers = {c.get("provider") for cells in groups for c in cells.values()}
    return [b for b in BACKENDS if OURS[b] in providers]


def probe_target(backend: str, cells: Cells, one_batch: Cells, subject: Optional[str] = None) -> Dict[str, Any]:
    """In every cell (the grid's and the one batch's): ours' probe max <= 1.1 x floor's + 10 ms (medians)."""
    ours = subject or OURS[backend]
    name = "probe max <= %.1f x floor's + %.0f ms in every cell" % (PROBE_FACTOR, PROBE_SLACK_MS)
    checked, misses = 0, []
    worst: Optional[Tuple[float, str]] = None  # (ours - limit, text)
    for group, batch in ((cells, False), (one_batch, True)):
        for cell in _pairs(group, ours):
            mine = _number(cell["median"].get("probe_max_ms"))
            base = _number(_floor_of(group, cell)["median"].get("probe_max_ms"))
            if mine is None or base is None:
                continue
            checked += 1
            limit = PROBE_FACTOR * base + PROBE_SLACK_MS
            text = "%s: ours %.1f ms, limit %.1f ms (floor %.1f ms)" % (_where(cell, batch), mine, limit, base)
            if worst is None or mine - limit > worst[0]:
                worst = (mine - limit, text)
            if mine > limit:
                misses.append(text)
    if not checked or worst is None:
        return _target(backend, name, None, "no cell with both ours and floor")
    detail = "%d of %d cells over; closest to the limit: %s" % (len(misses), checked, worst[1])
    if misses:
        detail = "%d of %d cells over: %s" % (len(misses), checked, "; ".join(misses))
    return _target(backend, name, not misses, detail)


def rate_targets(
    backend: str, cells: Cells, concurrencies: Sequence[int], subject: Optional[str] = None
) -> List[Dict[str, Any]]:
    """D = 0: repeat logins/s >= 0.92 x floor's; first logins/s >= 0.85 x floor's over >= 5 repeats."""
    ours = subject or OURS[backend]
    out = []
    for phase, factor in (("repeat", REPEAT_RATE_FACTOR), ("first", FIRST_RATE_FACTOR)):
        for conc in concurrencies:
            name = "D=0 %s logins C=%d: logins/s >= %.2f x floor's" % (phase, conc, factor)
            if phase == "first":
                name += " (medians of >= %d interleaved repeats)" % FIRST_MIN_REPEATS
            mine, base = cells.get(cell_key(ours, phase, 0, conc)), cells.get(cell_key(FLOOR, phase, 0, conc))
            if mine is None or base is None:
                out.append(_target(backend, name, None, "cell not in this run's grid"))
                continue
            rate, floor_rate = _number(mine["median"].get("logins_per_s")), _number(base["median"].get("logins_per_s"))
            if rate is None or not floor_rate:
                out.append(_target(backend, name, None, "no figures"))
                continue
            repeats = min(len(mine.get("runs", ())), len(base.get("runs", ())))
            detail = (
                "ours %.1f/s, floor %.1f/s: %.3f x (limit %.2f x); Synapse CPU/login ours %.1f ms, floor %.1f ms"
                % (
                    rate,
                    floor_rate,
                    rate / floor_rate,
                    factor,
                    _number(mine["median"].get("synapse_cpu_ms_per_login")) or float("nan"),
                    _number(base["median"].get("synapse_cpu_ms_per_login")) or float("nan"),
                )
            )
            detail += "; median of %d repeats" % repeats
            ok: Optional[bool] = rate >= factor * floor_rate
            if phase == "first" and repeats < FIRST_MIN_REPEATS:
                ok = None
                detail += " (fewer than %d: not evaluated)" % FIRST_MIN_REPEATS
            out.append(_target(backend, name, ok, detail))
    return out


def cpu_targets(
    backend: str, cells: Cells, delays: Sequence[int], subject: Optional[str] = None
) -> List[Dict[str, Any]]:
    """C = 50, repeat logins: Synapse's CPU per login <= floor's + 1.0 ms, at each D of the grid."""
    ours = subject or OURS[backend]
    out = []
    for delay in delays:
        name = "Synapse CPU per repeat login, D=%d C=%d: <= floor's + %.1f ms" % (delay, CPU_CONCURRENCY, CPU_SLACK_MS)
        mine = cells.get(cell_key(ours, "repeat", delay, CPU_CONCURRENCY))
        base = cells.get(cell_key(FLOOR, "repeat", delay, CPU_CONCURRENCY))
        if mine is None or base is None:
            out.append(_target(backend, name, None, "cell not in this run's grid"))
            continue
        cpu = _number(mine["median"].get("synapse_cpu_ms_per_login"))
        floor_cpu = _number(base["median"].get("synapse_cpu_ms_per_login"))
        if cpu is None or floor_cpu is None:
            out.append(_target(backend, name, None, "no figures"))
            continue
        detail = "ours %.2f ms, floor %.2f ms: %+.2f ms (limit %.2f ms)" % (
            cpu,
            floor_cpu,
            cpu - floor_cpu,
            floor_cpu + CPU_SLACK_MS,
        )
        out.append(_target(backend, name, cpu <= floor_cpu + CPU_SLACK_MS, detail))
    return out


def batch_targets(backend: str, one_batch: Cells, subject: Optional[str] = None) -> List[Dict[str, Any]]:
    """D = 200 ms, C = 50, one batch of 50 logins: ours' wall <= 1.10 x (floor's wall + D), each phase."""
    ours = subject or OURS[backend]
    out = []
    for phase in ("repeat", "first"):
        name = "one batch of %d %s logins, D=%d ms: wall <= %.2f x (floor's + D)" % (
            BATCH_CONCURRENCY,
            phase,
            BATCH_DELAY_MS,
            BATCH_FACTOR,
        )
        mine = one_batch.get(cell_key(ours, phase, BATCH_DELAY_MS, BATCH_CONCURRENCY))
        base = one_batch.get(cell_key(FLOOR, phase, BATCH_DELAY_MS, BATCH_CONCURRENCY))
        if mine is None or base is None:
            out.append(_target(backend, name, None, "one-batch cell not run"))
            continue
        wall, floor_wall = _number(mine["median"].get("wall_s")), _number(base["median"].get("wall_s"))
        if wall is None or floor_wall is None:
            out.append(_target(backend, name, None, "no figures"))
            continue
        limit = BATCH_FACTOR * (floor_wall + BATCH_DELAY_MS / 1000.0)
        detail = "ours %.3f s, limit %.3f s (floor %.3f s): %.3f x (floor + D); median of %d repeats" % (
            wall,
            limit,
            floor_wall,
            wall / (floor_wall + BATCH_DELAY_MS / 1000.0),
            min(len(mine.get("runs", ())), len(base.get("runs", ()))),
        )
        out.append(_target(backend, name, wall <= limit, detail))
    return out


def error_target(backend: str, cells: Cells, one_batch: Cells, subject: Optional[str] = None) -> Dict[str, Any]:
    ours = subject or OURS[backend]
    mine = [c for group in (cells, one_batch) for c in group.values() if c.get("provider") == ours]
    floor = [c for group in (cells, one_batch) for c in group.values() if c.get("provider") == FLOOR]
    if not mine:
        return _target(backend, "no failed login", None, "ours not run")
    errors = sum(int(c.get("errors", 0)) for c in mine)
    floor_errors = sum(int(c.get("errors", 0)) for c in floor)
    return _target(backend, "no failed login", errors == 0, "ours %d, floor %d failed logins" % (errors, floor_errors))


def rss_targets(backend: str, rss: Dict[str, Dict[str, Any]], subject: Optional[str] = None) -> List[Dict[str, Any]]:
    r = rss.get(subject or OURS[backend])
    name_rss = "RSS growth <= %.0f MB over the RSS phase's repeat logins" % RSS_LIMIT_MB
    name_conn = "connections the fake accepted during them <= C"
    if not r:
        return [
            _target(backend, name_rss, None, "RSS phase not run"),
            _target(backend, name_conn, None, "RSS phase not run"),
        ]
    floor = rss.get(FLOOR)
    return [
        _target(
            backend,
            name_rss,
            r["rss_growth_mb"] <= RSS_LIMIT_MB,
            "%d logins at C=%d, D=0: %.1f -> %.1f MB (%+.1f MB)%s"
            % (
                r["logins"],
                r["concurrency"],
                r["rss_before_mb"],
                r["rss_after_mb"],
                r["rss_growth_mb"],
                "; floor %+.1f MB" % floor["rss_growth_mb"] if floor else "",
            ),
        ),
        _target(
            backend,
            name_conn,
            r["ma1sd_connections"] <= r["concurrency"],
            "%d accepted, C = %d (%d during the warm-up before)"
            % (r["ma1sd_connections"], r["concurrency"], r["warmup_ma1sd_connections"]),
        ),
    ]


def _target(backend: str, name: str, ok: Optional[bool], detail: str) -> Dict[str, Any]:
    return {"backend": backend, "target": name, "status": _status(ok), "detail": detail}


def _targets_of(
    subject: str,
    backend: str,
    cells: Cells,
    one_batch: Cells,
    rss: Dict[str, Dict[str, Any]],
    delays: Sequence[int],
    concurrencies: Sequence[int],
) -> List[Dict[str, Any]]:
    """Returns every target for ``subject`` (ours or an HTTP floor) against floor, labelled ``backend``."""
    return (
        [probe_target(backend, cells, one_batch, subject)]
        + rate_targets(backend, cells, concurrencies, subject)
        + cpu_targets(backend, cells, delays, subject)
        + batch_targets(backend, one_batch, subject)
        + [error_target(backend, cells, one_batch, subject)]
        + rss_targets(backend, rss, subject)
    )


def evaluate_targets(
    cells: Cells,
    one_batch: Optional[Cells] = None,
    rss: Optional[Dict[str, Dict[str, Any]]] = None,
    delays: Optional[Sequence[int]] = None,
    concurrencies: Optional[Sequence[int]] = None,
) -> List[Dict[str, Any]]:
    """Returns every target, per backend that ran, as ``{"backend", "target",
    "status" (PASS, MISS or n/a), "detail"}``, plus ``"http_floor"`` (the
    same target's status for that backend's HTTP floor) when the HTTP floor ran.

    ``cells`` and ``one_batch`` map ``cell_key(provider, phase, D, C)`` to
    ``{"provider", "phase", "delay_ms", "concurrency", "runs": [...],
    "median": {metric: value}, "errors"}``; ``rss`` maps a provider to its RSS
    phase. ``delays`` and ``concurrencies`` default to those in ``cells``."""
    one_batch = one_batch or {}
    rss = rss or {}
    if delays is None:
        delays = sorted({int(c["delay_ms"]) for c in cells.values()})
    if concurrencies is None:
        concurrencies = sorted({int(c["concurrency"]) for c in cells.values()})
    targets: List[Dict[str, Any]] = []
    for backend in backends_in(cells, one_batch):
        mine = _targets_of(OURS[backend], backend, cells, one_batch, rss, delays, concurrencies)
        if HTTP_FLOOR[backend] in {c.get("provider") for group in (cells, one_batch) for c in group.values()}:
            # The same target against the HTTP floor (one bare POST per login):
            # a MISS there means no module that asks this backend meets it here.
            http = _targets_of(HTTP_FLOOR[backend], backend, cells, one_batch, rss, delays, concurrencies)
            for target, theirs in zip(mine, http):
                target["http_floor"] = theirs["status"]
        targets += mine
    return targets


def summary(targets: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, int]]:
    """Returns ``{backend: {"PASS": n, "MISS": n, "n/a": n}}``."""
    out: Dict[str, Dict[str, int]] = {}
    for t in targets:
        counts = out.setdefault(t["backend"], {PASS: 0, MISS: 0, NOT_MEASURED: 0})
        counts[t["status"]] += 1
    return out
