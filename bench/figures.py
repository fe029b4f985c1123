"""The figures of one batch, its one-line summary, and the cells they add up to.

Pure: a ``PhaseResult`` (bench/load.py) and a few numbers in, dicts and text out.
"""

from typing import Any, Dict

from bench.load import PhaseResult
from bench.report import METRICS, cell_key, median, percentile


def figures(result: PhaseResult, connections: int, in_flight: int, load_1min: float) -> Dict[str, Any]:
    """Returns the figures of one batch: ``result``, the connections its fake
    accepted, its peak of in-flight requests and the load average at its end.
    A figure that cannot be computed (no logins, no transactions) is NaN."""
    latencies = [x * 1000 for x in result.latencies]
    probes = [x * 1000 for x in result.probes]
    per_login = 1.0 / result.logins if result.logins else float("nan")
    txn_count = sum(count for count, _ in result.transactions.values())
    txn_seconds = sum(seconds for _, seconds in result.transactions.values())
    return {
        "logins": result.logins,
        "wall_s": result.wall,
        "logins_per_s": result.logins / result.wall if result.wall > 0 else float("nan"),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "probe_p99_ms": percentile(probes, 99),
        "probe_max_ms": max(probes) if probes else float("nan"),
        "probes": len(probes),
        "probe_errors": int(result.extra.get("probe_errors", 0)),
        "synapse_cpu_ms_per_login": result.synapse_cpu * 1000 / result.logins if result.logins else float("nan"),
        "fake_cpu_ms_per_login": result.extra.get("fake_cpu", float("nan")) * 1000 * per_login,
        "client_cpu_pct": 100 * result.client_cpu / result.wall if result.wall > 0 else float("nan"),
        "db_txns_per_login": txn_count * per_login if result.transactions else float("nan"),
        "db_ms_per_login": txn_seconds * 1000 * per_login if result.transactions else float("nan"),
        "db_txns": {name: count * per_login for name, (count, _) in sorted(result.transactions.items())},
        "ma1sd_connections": connections,
        "ma1sd_max_in_flight": in_flight,
        "machine_busy_cores": result.extra.get("machine_busy_cores", float("nan")),
        "other_busy_cores": result.extra.get("other_busy_cores", float("nan")),
        "load_1min": load_1min,
        "errors": result.errors,
        "first_error": result.first_error,
    }


def summary(f: Dict[str, Any]) -> str:
    """Returns the one-line summary of a batch's figures ``f`` (from ``figures``)."""
    text = (
        "%5.2f s %6.1f/s p50 %6.1f p99 %7.1f ms | probe p99 %6.1f max %6.1f ms | cpu %4.1f ms/login "
        "(fake %3.1f) | db %4.1f txns/login | other work %.2f cores"
        % (
            f["wall_s"],
            f["logins_per_s"],
            f["p50_ms"],
            f["p99_ms"],
            f["probe_p99_ms"],
            f["probe_max_ms"],
            f["synapse_cpu_ms_per_login"],
            f["fake_cpu_ms_per_login"],
            f["db_txns_per_login"],
            f["other_busy_cores"],
        )
    )
    if f["errors"]:
        text += " | %d ERRORS (%s)" % (f["errors"], f["first_error"])
    return text


def add_run(
    cells: Dict[str, Dict[str, Any]], provider: str, phase: str, delay: int, conc: int, f: Dict[str, Any]
) -> None:
    """Adds the figures ``f`` of one run to its cell in ``cells`` (made if new) and updates the cell's medians."""
    key = cell_key(provider, phase, delay, conc)
    cell = cells.setdefault(
        key,
        {"provider": provider, "phase": phase, "delay_ms": delay, "concurrency": conc, "runs": []},
    )
    cell["runs"].append(f)
    cell["logins"] = f["logins"]
    cell["errors"] = sum(r["errors"] for r in cell["runs"])
    cell["median"] = {m: median([r.get(m, float("nan")) for r in cell["runs"]]) for m in METRICS}
    names = sorted(set().union(*(r["db_txns"] for r in cell["runs"])))
    cell["db_txns_median"] = {n: median([r["db_txns"].get(n, 0.0) for r in cell["runs"]]) for n in names}
    cell["worst"] = {
        "p99_ms": max(r["p99_ms"] for r in cell["runs"]),
        "probe_max_ms": max(r["probe_max_ms"] for r in cell["runs"]),
    }
