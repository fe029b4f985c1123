"""The machine the benchmark runs on: what it is, and how busy other work kept it.

``busy_note``, ``load_line`` and ``load_during`` are pure (they read the run's
``meta`` dict or its runs); the others read /proc or sleep.
"""

import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

from bench.load import busy_cores, machine_cpu
from bench.report import median
from support.harness import synapse_version


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def load_average() -> List[float]:
    parts = _read("/proc/loadavg").split()
    return [float(p) for p in parts[:3]] if len(parts) >= 3 else []


def current_load() -> float:
    """Returns the 1-minute load average now; NaN when /proc/loadavg cannot be read."""
    return (load_average() or [float("nan")])[0]


def background_cores(seconds: float = 3.0) -> float:
    """Returns how many cores other work kept busy over ``seconds`` (call when nothing of ours runs)."""
    before = machine_cpu()
    time.sleep(seconds)
    return round(busy_cores(before, machine_cpu()), 2)


def busy_note(meta: Dict[str, Any]) -> str:
    """Returns a warning when other work shared the machine, else an empty string."""
    cores = meta.get("cores") or 1
    others = [
        x
        for x in (
            meta.get("background_cores_before"),
            meta.get("background_cores_after"),
            meta.get("other_busy_cores_median"),
        )
        if x is not None and x == x
    ]
    load = (meta.get("load_average_at_start") or [0.0])[0]  # read before anything of ours started
    during = meta.get("other_busy_cores_median")
    # The load average also remembers the minute before the run (a previous
    # benchmark, say): when the other work during the batches was measured, it decides.
    load_busy = load >= 0.5 * cores and (during is None or during != during)
    if max(others, default=0.0) < 0.25 * cores and not load_busy:
        return ""
    measured = " / ".join("%.2f" % x for x in others) if others else "not measured"
    return (
        "BUSY MACHINE: other work was running (load average %.2f on %s cores before the run; cores busy with "
        "other work before / after%s: %s): treat absolute figures as indicative, compare providers within a cell"
        % (load, cores, " / median during the batches" if len(others) == 3 else "", measured)
    )


def machine_info() -> Dict[str, Any]:
    cpu_model = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu_model": cpu_model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "synapse": ".".join(str(p) for p in synapse_version()),
        "load_average_at_start": load_average(),
    }


def machine_line(meta: Dict[str, Any]) -> str:
    """Returns the first line the benchmark prints: the machine (``machine_info``) and its load before the run."""
    return (
        "Machine: %s, %s cores, %.1f GiB RAM; load average %s; other work busy on %.2f cores; Python %s, Synapse %s"
        % (
            meta["cpu_model"],
            meta["cores"],
            meta["ram_gib"],
            " ".join("%.2f" % x for x in meta["load_average_at_start"]),
            meta["background_cores_before"],
            meta["python"],
            meta["synapse"],
        )
    )


def load_line(meta: Dict[str, Any]) -> str:
    """Returns the machine's load average before, during (1 min, at each batch's end) and after the run."""
    text = "load average %s before the run" % " ".join("%.2f" % x for x in meta.get("load_average_at_start", []))
    if meta.get("load_average_max") == meta.get("load_average_max") and "load_average_max" in meta:
        text += ", 1-min %.2f / %.2f / %.2f (min / median / max) during it" % (
            meta.get("load_average_min", float("nan")),
            meta.get("load_average_median", float("nan")),
            meta["load_average_max"],
        )
    if meta.get("load_average_at_end"):
        text += ", %s at the end" % " ".join("%.2f" % x for x in meta["load_average_at_end"])
    other = meta.get("other_busy_cores_median")
    if other is not None and other == other:
        text += "; cores busy with other work during the batches: median %.2f, max %.2f" % (
            other,
            meta.get("other_busy_cores_max", float("nan")),
        )
    return text


def load_during(runs: Sequence[Dict[str, Any]]) -> Dict[str, float]:
    """Returns the ``meta`` keys that sum up the load the batches ``runs`` saw
    (the 1-min load average and the cores busy with other work at each batch's
    end; NaN ones left out): min / median / max. A key is NaN when no run had it."""
    loads = [x for x in (r.get("load_1min", float("nan")) for r in runs) if x == x]
    others = [x for x in (r.get("other_busy_cores", float("nan")) for r in runs) if x == x]
    return {
        "load_average_max": max(loads, default=float("nan")),
        "load_average_median": median(loads),
        "load_average_min": min(loads, default=float("nan")),
        "other_busy_cores_median": median(others),
        "other_busy_cores_max": max(others, default=float("nan")),
    }
