"""The benchmark's targets (bench/targets.py): ratios to floor, per backend.

Pure figures in, PASS/MISS/n/a out: nothing is started.
"""

from typing import Any, Dict, List, Optional, Sequence

import pytest

from bench.report import cell_key
from bench.targets import MISS, NOT_MEASURED, PASS, backends_in, evaluate_targets, summary

Cells = Dict[str, Dict[str, Any]]

# Figures in the range the benchmark measures on 2 cores.
FLOOR_FIGURES = {
    "wall_s": 1.0,
    "logins_per_s": 50.0,
    "probe_max_ms": 100.0,
    "synapse_cpu_ms_per_login": 12.0,
}


def cell(provider: str, phase: str, delay: int, conc: int, runs: int = 5, errors: int = 0, **figures: float) -> Any:
    median = dict(FLOOR_FIGURES)
    median.update(figures)
    return {
        "provider": provider,
        "phase": phase,
        "delay_ms": delay,
        "concurrency": conc,
        "runs": [dict(median) for _ in range(runs)],
        "median": median,
        "errors": errors,
        "logins": conc * 4,
    }


def add(cells: Cells, provider: str, phase: str, delay: int, conc: int, **kwargs: Any) -> None:
    cells[cell_key(provider, phase, delay, conc)] = cell(provider, phase, delay, conc, **kwargs)


def grid(
    providers: Optional[List[str]] = None,
    delays: Sequence[int] = (0, 200),
    concs: Sequence[int] = (1, 10, 50),
    runs: int = 5,
) -> Cells:
    """Every provider equal to floor in every cell."""
    cells: Cells = {}
    for provider in providers or ["ours-ma1sd", "ours-rest", "floor"]:
        for phase in ("first", "repeat"):
            for delay in delays:
                for conc in concs:
                    add(cells, provider, phase, delay, conc, runs=runs)
    return cells


def batch(ours: Dict[str, float], floor_wall: float = 1.0, runs: int = 5) -> Cells:
    """The one-batch cell (D = 200 ms, C = 50); ``ours`` maps a provider to its wall."""
    cells: Cells = {}
    for phase in ("first", "repeat"):
        add(cells, "floor", phase, 200, 50, runs=runs, wall_s=floor_wall)
        for provider, wall in ours.items():
            add(cells, provider, phase, 200, 50, runs=runs, wall_s=wall)
    return cells


def find(targets: List[Dict[str, Any]], backend: str, *words: str) -> Dict[str, Any]:
    found = [t for t in targets if t["backend"] == backend and all(w in t["target"] for w in words)]
    assert len(found) == 1, (backend, words, [t["target"] for t in targets])
    return found[0]


def statuses(targets: List[Dict[str, Any]], backend: str, *words: str) -> str:
    return str(find(targets, backend, *words)["status"])


def test_every_target_per_backend_passes_when_ours_equals_floor() -> None:
    rss = {
        p: {
            "logins": 2000,
            "concurrency": 50,
            "rss_before_mb": 140.0,
            "rss_after_mb": 140.5,
            "rss_growth_mb": 0.5,
            "ma1sd_connections": 0,
            "warmup_ma1sd_connections": 50,
        }
        for p in ("ours-ma1sd", "ours-rest", "floor")
    }
    targets = evaluate_targets(grid(), batch({"ours-ma1sd": 1.0, "ours-rest": 1.0}), rss)
    assert {t["backend"] for t in targets} == {"ma1sd", "rest"}
    assert all(t["status"] == PASS for t in targets), [t for t in targets if t["status"] != PASS]
    # Per backend: probe, 3 + 3 rates, 2 CPU (D = 0, 200), 2 batch phases, errors, RSS, connections.
    assert summary(targets) == {
        "ma1sd": {PASS: 14, MISS: 0, NOT_MEASURED: 0},
        "rest": {PASS: 14, MISS: 0, NOT_MEASURED: 0},
    }


def test_backends_are_evaluated_separately() -> None:
    cells = grid()
    add(cells, "ours-rest", "repeat", 0, 10, logins_per_s=40.0)  # 0.80 x floor
    targets = evaluate_targets(cells)
    assert statuses(targets, "rest", "repeat logins C=10") == MISS
    assert statuses(targets, "ma1sd", "repeat logins C=10") == PASS
    assert backends_in(grid(["ours-rest", "floor"])) == ["rest"]
    assert {t["backend"] for t in evaluate_targets(grid(["ours-rest", "floor"]))} == {"rest"}


def test_each_target_says_whether_the_http_floor_meets_it() -> None:
    cells = grid(["ours-ma1sd", "ours-rest", "http-rest", "floor"])
    add(cells, "ours-rest", "repeat", 0, 50, logins_per_s=40.0)  # 0.80 x floor
    add(cells, "http-rest", "repeat", 0, 50, logins_per_s=42.0)  # 0.84 x floor: missed without ours' work
    add(cells, "http-rest", "first", 0, 10, logins_per_s=40.0)  # 0.80 x floor, where ours passes
    targets = evaluate_targets(cells)
    repeat = find(targets, "rest", "repeat logins C=50")
    assert (repeat["status"], repeat["http_floor"]) == (MISS, MISS)
    first = find(targets, "rest", "first logins C=10")
    assert (first["status"], first["http_floor"]) == (PASS, MISS)
    cpu = find(targets, "rest", "CPU", "D=0 ")
    assert (cpu["status"], cpu["http_floor"]) == (PASS, PASS)
    # Only the backend whose HTTP floor ran gets its verdict.
    assert all("http_floor" not in t for t in targets if t["backend"] == "ma1sd")
    # The HTTP floor's verdict is a note on ours': it does not change the counts (no batch, no RSS: 4 n/a).
    assert summary(targets)["rest"] == {PASS: 9, MISS: 1, NOT_MEASURED: 4}


@pytest.mark.parametrize(
    ("floor_ms", "ours_ms", "status"),
    [
        (100.0, 120.0, PASS),  # limit 1.1 x 100 + 10 = 120: at the limit
        (100.0, 120.5, MISS),
        (0.0, 10.0, PASS),  # the 10 ms slack alone
        (300.0, 340.0, PASS),  # 1.1 x 300 + 10 = 340
        (300.0, 341.0, MISS),
    ],
)
def test_probe_max_within_one_point_one_floor_plus_ten_ms(floor_ms: float, ours_ms: float, status: str) -> None:
    cells = grid()
    add(cells, "floor", "first", 200, 50, probe_max_ms=floor_ms)
    add(cells, "ours-ma1sd", "first", 200, 50, probe_max_ms=ours_ms)
    target = find(evaluate_targets(cells), "ma1sd", "probe max")
    assert target["status"] == status
    assert "first D=200 C=50" in target["detail"]


def test_probe_target_covers_every_cell_and_the_one_batch() -> None:
    cells = grid()
    one_batch = batch({"ours-ma1sd": 1.0})
    add(one_batch, "ours-ma1sd", "repeat", 200, 50, probe_max_ms=200.0)  # floor 100: limit 120
    target = find(evaluate_targets(cells, one_batch), "ma1sd", "probe max")
    assert target["status"] == MISS
    assert "1 of 14 cells over" in target["detail"]  # 12 grid cells and the 2 of the one batch
    assert "one batch, repeat D=200 C=50" in target["detail"]


@pytest.mark.parametrize(("rate", "status"), [(46.0, PASS), (45.9, MISS)])  # 0.92 x 50 = 46
def test_repeat_logins_at_d0_at_least_0_92_of_floor(rate: float, status: str) -> None:
    cells = grid()
    add(cells, "ours-ma1sd", "repeat", 0, 50, logins_per_s=rate)
    assert statuses(evaluate_targets(cells), "ma1sd", "D=0 repeat logins C=50") == status


@pytest.mark.parametrize(("rate", "status"), [(42.5, PASS), (42.4, MISS)])  # 0.85 x 50 = 42.5
def test_first_logins_at_d0_at_least_0_85_of_floor(rate: float, status: str) -> None:
    cells = grid()
    add(cells, "ours-rest", "first", 0, 1, logins_per_s=rate)
    target = find(evaluate_targets(cells), "rest", "D=0 first logins C=1:")
    assert target["status"] == status
    assert "median of 5 repeats" in target["detail"]


def test_first_logins_need_five_interleaved_repeats() -> None:
    cells = grid()
    add(cells, "floor", "first", 0, 10, runs=4)
    target = find(evaluate_targets(cells), "ma1sd", "D=0 first logins C=10")
    assert target["status"] == NOT_MEASURED
    assert "median of 4 repeats" in target["detail"]
    # The repeat-login target has no such floor.
    assert statuses(evaluate_targets(grid(runs=3)), "ma1sd", "D=0 repeat logins C=10") == PASS


@pytest.mark.parametrize(("cpu", "status"), [(13.0, PASS), (13.01, MISS)])  # floor 12 + 1.0
def test_synapse_cpu_per_repeat_login_at_c50_within_floor_plus_one_ms(cpu: float, status: str) -> None:
    cells = grid()
    add(cells, "ours-rest", "repeat", 200, 50, synapse_cpu_ms_per_login=cpu)
    targets = evaluate_targets(cells)
    assert statuses(targets, "rest", "CPU", "D=200 C=50") == status
    assert statuses(targets, "rest", "CPU", "D=0 C=50") == PASS


@pytest.mark.parametrize(("wall", "status"), [(1.32, PASS), (1.33, MISS)])  # 1.10 x (1.0 + 0.2) = 1.32
def test_one_batch_at_d200_c50_within_1_10_of_floor_plus_d(wall: float, status: str) -> None:
    one_batch = batch({"ours-ma1sd": 1.0})
    add(one_batch, "ours-ma1sd", "repeat", 200, 50, wall_s=wall)
    targets = evaluate_targets(grid(), one_batch)
    assert statuses(targets, "ma1sd", "one batch", "repeat logins") == status
    assert statuses(targets, "ma1sd", "one batch", "first logins") == PASS


def test_the_grids_four_round_cell_is_not_the_one_batch() -> None:
    # The grid's D = 200 ms, C = 50 cell sends 4 C logins; without the one-batch cell the target is n/a.
    targets = evaluate_targets(grid())
    assert statuses(targets, "ma1sd", "one batch", "repeat logins") == NOT_MEASURED


def test_cells_missing_from_the_grid_are_not_measured_never_passed() -> None:
    targets = evaluate_targets(grid(delays=(200,), concs=(1, 50)))
    assert statuses(targets, "ma1sd", "D=0 repeat logins C=1:") == NOT_MEASURED
    assert statuses(targets, "ma1sd", "D=0 first logins C=50") == NOT_MEASURED
    assert statuses(targets, "ma1sd", "CPU", "D=200 C=50") == PASS
    assert statuses(targets, "ma1sd", "RSS") == NOT_MEASURED
    # Without floor nothing compares.
    only_ours = evaluate_targets(grid(["ours-ma1sd"]))
    assert {t["status"] for t in only_ours if "failed" not in t["target"]} == {NOT_MEASURED}


def test_failed_logins_rss_growth_and_connections() -> None:
    cells = grid()
    add(cells, "ours-rest", "first", 0, 50, errors=2)
    rss = {
        "ours-rest": {
            "logins": 2000,
            "concurrency": 50,
            "rss_before_mb": 140.0,
            "rss_after_mb": 161.0,
            "rss_growth_mb": 21.0,
            "ma1sd_connections": 51,
            "warmup_ma1sd_connections": 50,
        }
    }
    targets = evaluate_targets(cells, rss=rss)
    assert statuses(targets, "rest", "no failed login") == MISS
    assert statuses(targets, "ma1sd", "no failed login") == PASS
    assert statuses(targets, "rest", "RSS") == MISS
    assert statuses(targets, "rest", "connections") == MISS
    assert statuses(targets, "ma1sd", "RSS") == NOT_MEASURED


def test_nan_figures_are_not_measured() -> None:
    cells = grid()
    add(cells, "ours-ma1sd", "repeat", 0, 1, logins_per_s=float("nan"))
    assert statuses(evaluate_targets(cells), "ma1sd", "D=0 repeat logins C=1:") == NOT_MEASURED
