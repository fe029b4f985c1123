"""Figures, the terminal and Markdown tables, and the chart."""

import itertools
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

#: The module under test, per backend: ``ours`` with ``backend: ma1sd`` and with ``backend: rest``.
OURS = {"ma1sd": "ours-ma1sd", "rest": "ours-rest"}
# The HTTP floor (bench/providers/httpfloor.py): one bare keep-alive POST per login to that backend.
HTTP_FLOOR = {"ma1sd": "http-ma1sd", "rest": "http-rest"}
PROVIDER_ORDER = (OURS["ma1sd"], OURS["rest"], HTTP_FLOOR["ma1sd"], HTTP_FLOOR["rest"], "floor", "blocking")
PHASES = ("first", "repeat")
METRICS = (
    "wall_s",
    "logins_per_s",
    "p50_ms",
    "p99_ms",
    "probe_p99_ms",
    "probe_max_ms",
    "synapse_cpu_ms_per_login",
    "fake_cpu_ms_per_login",
    "client_cpu_pct",
    "db_txns_per_login",
    "db_ms_per_login",
    "ma1sd_connections",
    "ma1sd_max_in_flight",
)


def log(message: str = "") -> None:
    """Prints one line of the benchmark's output at once (it runs for minutes)."""
    print(message, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Returns the q-th percentile (0-100), linear between closest ranks; NaN if empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return float(statistics.median(clean)) if clean else float("nan")


def cell_key(provider: str, phase: str, delay_ms: int, concurrency: int) -> str:
    return "%s/%s/D%d/C%d" % (provider, phase, delay_ms, concurrency)


def _fmt(value: Optional[float], digits: int = 1) -> str:
    if value is None or value != value:
        return "-"
    return "%.*f" % (digits, value)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


TABLE_HEADER = (
    "provider",
    "phase",
    "D ms",
    "C",
    "logins",
    "wall s",
    "logins/s",
    "p50 ms",
    "p99 ms",
    "probe p99",
    "probe max",
    "cpu ms/login",
    "fake cpu ms/login",
    "db txns/login",
    "errors",
)


# The figures of TABLE_HEADER after "logins", as (median's key, digits); "errors" ends the row.
TABLE_FIGURES = (
    ("wall_s", 2),
    ("logins_per_s", 1),
    ("p50_ms", 1),
    ("p99_ms", 1),
    ("probe_p99_ms", 1),
    ("probe_max_ms", 1),
    ("synapse_cpu_ms_per_login", 1),
    ("fake_cpu_ms_per_login", 1),
    ("db_txns_per_login", 1),
)


def table_rows(
    cells: Dict[str, Dict[str, Any]], delays: Sequence[int], concurrencies: Sequence[int]
) -> List[List[str]]:
    """Returns a TABLE_HEADER row per cell in ``cells``, by phase, D, C and provider."""
    rows = []
    for phase, delay, conc in itertools.product(PHASES, delays, concurrencies):
        for provider in PROVIDER_ORDER:
            cell = cells.get(cell_key(provider, phase, delay, conc))
            if cell is not None:
                figures = [_fmt(cell["median"].get(key), digits) for key, digits in TABLE_FIGURES]
                where = [provider, phase, str(delay), str(conc), str(cell["logins"])]
                rows.append(where + figures + [str(cell["errors"])])
    return rows


RATIO_HEADER = (
    "phase",
    "D ms",
    "C",
    "backend",
    "wall ours/floor",
    "logins/s ours/floor",
    "p99 ours/floor",
    "probe max ours/floor",
    "cpu ms/login ours-floor",
    "wall blocking/ours",
    "p99 blocking/ours",
    "probe max blocking/ours",
)


# The ratios of RATIO_HEADER, as (median's key, digits): ours / floor, then blocking / ours.
OURS_FLOOR_RATIOS = (("wall_s", 2), ("logins_per_s", 2), ("p99_ms", 2), ("probe_max_ms", 2))
BLOCKING_OURS_RATIOS = (("wall_s", 2), ("p99_ms", 2), ("probe_max_ms", 1))


def ratio_rows(
    cells: Dict[str, Dict[str, Any]], delays: Sequence[int], concurrencies: Sequence[int]
) -> List[List[str]]:
    """Returns, per cell and backend, ours against floor (and blocking against ours)."""
    rows = []
    for phase, delay, conc in itertools.product(PHASES, delays, concurrencies):
        m = {
            p: cells[cell_key(p, phase, delay, conc)]["median"]
            for p in PROVIDER_ORDER
            if cell_key(p, phase, delay, conc) in cells
        }
        floor, blocking = m.get("floor", {}), m.get("blocking", {})
        for backend, name in OURS.items():
            if name not in m:
                continue
            ours = m[name]
            cpu = _diff(ours["synapse_cpu_ms_per_login"], floor.get("synapse_cpu_ms_per_login"))
            rows.append(
                [phase, str(delay), str(conc), backend]
                + [_fmt(_ratio(ours[key], floor.get(key)), digits) for key, digits in OURS_FLOOR_RATIOS]
                + [_signed(cpu)]
                + [_fmt(_ratio(blocking.get(key), ours[key]), digits) for key, digits in BLOCKING_OURS_RATIOS]
            )
    return rows


TRANSACTION_HEADER = ("phase", "D ms", "C", "backend", "transaction", "ours/login", "floor/login", "ours - floor")


def transaction_rows(
    cells: Dict[str, Dict[str, Any]], delays: Sequence[int], concurrencies: Sequence[int]
) -> List[List[str]]:
    """Returns, per phase and backend, the database transactions per login
    (Synapse's names) where ours and floor differ by 0.05 or more, at the
    lowest D and C of the grid, and the total; empty when the run has no
    transaction counts."""
    if not delays or not concurrencies:
        return []
    delay, conc = min(delays), min(concurrencies)
    rows = []
    for phase in PHASES:
        floor = cells.get(cell_key("floor", phase, delay, conc))
        for backend, name in OURS.items():
            ours = cells.get(cell_key(name, phase, delay, conc))
            if ours is None or floor is None or "db_txns_median" not in ours or "db_txns_median" not in floor:
                continue
            mine, base = ours["db_txns_median"], floor["db_txns_median"]
            diffs = {n: mine.get(n, 0.0) - base.get(n, 0.0) for n in set(mine) | set(base)}
            where = [phase, str(delay), str(conc), backend]
            for txn in sorted(diffs, key=lambda n: (-diffs[n], n)):
                if abs(diffs[txn]) >= 0.05:
                    row = where + [txn, _fmt(mine.get(txn, 0.0), 2), _fmt(base.get(txn, 0.0), 2)]
                    rows.append(row + ["%+.2f" % diffs[txn]])
            total_ours, total_floor = ours["median"].get("db_txns_per_login"), floor["median"].get("db_txns_per_login")
            total = [_fmt(total_ours, 2), _fmt(total_floor, 2), _fmt(_diff(total_ours, total_floor), 2)]
            rows.append(where + ["all transactions"] + total)
    return rows


def _diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None:
        return None
    return a - b


def _signed(value: Optional[float], digits: int = 2) -> str:
    if value is None or value != value:
        return "-"
    return "%+.*f" % (digits, value)


def text_table(header: Sequence[str], rows: List[List[str]], group: Optional[slice] = None) -> str:
    """Returns an aligned table; a blank line separates rows whose ``group`` columns differ."""
    group = group or slice(0, 0)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    previous: Optional[List[str]] = None
    for row in rows:
        if previous is not None and row[group] != previous[group]:
            out.append("")
        out.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        previous = row
    return "\n".join(out)


def markdown_table(header: Sequence[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def draw_chart(
    path: Path,
    cells: Dict[str, Dict[str, Any]],
    delays: Sequence[int],
    concurrencies: Sequence[int],
    title: str,
) -> Optional[str]:
    """Writes the PNG; returns None, or why it could not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    colours = {
        OURS["ma1sd"]: "tab:blue",
        OURS["rest"]: "tab:purple",
        HTTP_FLOOR["ma1sd"]: "tab:cyan",
        HTTP_FLOOR["rest"]: "tab:pink",
        "floor": "tab:green",
        "blocking": "tab:red",
    }
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9), sharex=True)
    for row, phase in enumerate(PHASES):
        for col, (metric, label) in enumerate((("p99_ms", "login p99 (ms)"), ("probe_p99_ms", "probe p99 (ms)"))):
            ax = axes[row][col]
            for provider in PROVIDER_ORDER:
                for i, delay in enumerate(delays):
                    xs, ys = [], []
                    for conc in concurrencies:
                        cell = cells.get(cell_key(provider, phase, delay, conc))
                        if cell is None:
                            continue
                        xs.append(conc)
                        ys.append(cell["median"][metric])
                    if not xs:
                        continue
                    ax.plot(
                        xs,
                        ys,
                        color=colours[provider],
                        linestyle=styles[i % len(styles)],
                        marker=markers[i % len(markers)],
                        label="%s, D=%d ms" % (provider, delay),
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(list(concurrencies))
            ax.set_xticklabels([str(c) for c in concurrencies])
            ax.set_title("%s logins: %s" % (phase, label))
            ax.set_xlabel("concurrent logins C")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
    return None
