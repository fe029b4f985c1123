"""The benchmark's pure pieces: a batch's figures, the cells, the grid's plan, the options and the machine notes.

Nothing is started: figures in, figures and text out (bench/figures.py,
bench/grid.py, bench/machine.py, bench/publish.py, bench/run.py).
"""

import argparse
import math
from typing import Any, Dict, List

import pytest

from bench.figures import add_run, figures, summary
from bench.grid import grid_kind, grid_line, logins_per_cell, repeats_for, rotated
from bench.load import PhaseResult
from bench.machine import busy_note, load_during, load_line, machine_line
from bench.run import expand_providers, parse_args


def result(logins: int = 4, errors: int = 0, **kwargs: Any) -> PhaseResult:
    values: Dict[str, Any] = {
        "logins": logins,
        "concurrency": 2,
        "wall": 2.0,
        "latencies": [0.010, 0.020, 0.030, 0.040][:logins],
        "probes": [0.001, 0.003],
        "errors": errors,
        "first_error": "HTTP 403" if errors else None,
        "synapse_cpu": 0.08,
        "client_cpu": 0.5,
        "extra": {"fake_cpu": 0.02, "other_busy_cores": 0.25},
        "transactions": {"get_user": (8.0, 0.004), "add_device": (4.0, 0.002)},
    }
    values.update(kwargs)
    return PhaseResult(**values)


def test_figures_are_per_login_and_in_milliseconds() -> None:
    f = figures(result(), connections=3, in_flight=2, load_1min=0.75)
    assert f["logins_per_s"] == 2.0
    assert f["p50_ms"] == pytest.approx(25.0)
    assert f["max_ms"] == pytest.approx(40.0)
    assert f["probe_max_ms"] == pytest.approx(3.0)
    assert f["synapse_cpu_ms_per_login"] == pytest.approx(20.0)
    assert f["fake_cpu_ms_per_login"] == pytest.approx(5.0)
    assert f["client_cpu_pct"] == pytest.approx(25.0)
    assert f["db_txns_per_login"] == pytest.approx(3.0)
    assert f["db_ms_per_login"] == pytest.approx(1.5)
    assert f["db_txns"] == {"add_device": 1.0, "get_user": 2.0}
    assert (f["ma1sd_connections"], f["ma1sd_max_in_flight"], f["load_1min"]) == (3, 2, 0.75)
    assert f["other_busy_cores"] == 0.25


def test_figures_without_logins_or_transactions_are_nan() -> None:
    f = figures(result(logins=0, wall=0.0, transactions={}), connections=0, in_flight=0, load_1min=0.0)
    for key in ("logins_per_s", "p99_ms", "max_ms", "synapse_cpu_ms_per_login", "db_txns_per_login", "client_cpu_pct"):
        assert math.isnan(f[key]), key


def test_summary_names_the_errors_only_when_there_are_some() -> None:
    clean = summary(figures(result(), 0, 0, 0.0))
    assert "ERRORS" not in clean
    assert clean.startswith(" 2.00 s    2.0/s p50   25.0")
    failed = summary(figures(result(errors=2), 0, 0, 0.0))
    assert failed.endswith("| 2 ERRORS (HTTP 403)")


def test_add_run_keeps_medians_errors_and_worst_of_a_cell() -> None:
    cells: Dict[str, Dict[str, Any]] = {}
    for wall, errors in ((1.0, 0), (4.0, 1), (2.0, 0)):
        add_run(cells, "floor", "first", 200, 50, figures(result(wall=wall, errors=errors), 0, 0, 0.0))
    assert list(cells) == ["floor/first/D200/C50"]
    cell = cells["floor/first/D200/C50"]
    assert (cell["provider"], cell["phase"], cell["delay_ms"], cell["concurrency"]) == ("floor", "first", 200, 50)
    assert len(cell["runs"]) == 3
    assert cell["errors"] == 1
    assert cell["median"]["wall_s"] == 2.0
    assert cell["db_txns_median"] == {"add_device": 1.0, "get_user": 2.0}
    assert cell["worst"]["p99_ms"] == pytest.approx(39.7)


def options(**kwargs: Any) -> argparse.Namespace:
    values: Dict[str, Any] = {"quick": False, "repeats": 3, "d0_repeats": 5, "blocking_repeats": 1}
    values.update(delays_ms=(0, 200), concurrencies=(1, 10, 50))
    values.update(kwargs)
    return argparse.Namespace(**values)


def test_repeats_for_d0_blocking_and_the_rest() -> None:
    args = options()
    assert repeats_for(args, "floor", 0) == 5
    assert repeats_for(args, "blocking", 0) == 5
    assert repeats_for(args, "blocking", 200) == 1
    assert repeats_for(args, "ours-ma1sd", 200) == 3
    assert repeats_for(options(blocking_repeats=9), "blocking", 200) == 3


def test_rotated_moves_each_provider_to_the_front_in_turn() -> None:
    providers = ["a", "b", "c"]
    assert [rotated(providers, rep) for rep in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert rotated([], 3) == []


def test_logins_per_cell_is_four_c_at_least_twenty_unless_overridden() -> None:
    assert [logins_per_cell(c) for c in (1, 5, 6, 50)] == [20, 20, 24, 200]
    assert logins_per_cell(50, 7) == 7


def test_grid_kind_names_the_grid() -> None:
    assert grid_kind(options()) == "default grid"
    assert grid_kind(options(delays_ms=(0, 50, 200))) == "full grid"
    assert grid_kind(options(concurrencies=(1, 2))) == "custom grid"
    assert grid_kind(options(quick=True)) == "--quick run"


def test_expand_providers_follows_the_backend_and_provider_order() -> None:
    assert expand_providers(["blocking", "ours", "floor"], "both") == ["ours-ma1sd", "ours-rest", "floor", "blocking"]
    assert expand_providers(["http", "ours"], "rest") == ["ours-rest", "http-rest"]
    assert expand_providers(["floor", "ours-ma1sd", "http-ma1sd"], "rest") == ["ours-ma1sd", "http-ma1sd", "floor"]
    with pytest.raises(ValueError, match="^nobody$"):
        expand_providers(["ours", "nobody"], "both")


def test_the_http_floor_is_chosen_per_backend_like_ours() -> None:
    assert expand_providers(["ours", "http", "floor"], "rest") == ["ours-rest", "http-rest", "floor"]
    assert expand_providers(["http"], "both") == ["http-ma1sd", "http-rest"]
    assert expand_providers(["http-ma1sd", "blocking"], "rest") == ["http-ma1sd", "blocking"]
    with pytest.raises(ValueError, match="http-floor"):
        expand_providers(["http-floor"], "ma1sd")


def test_parse_args_fills_the_defaults() -> None:
    args = parse_args([])
    assert args.delays_ms == (0, 200)
    assert args.concurrencies == (1, 10, 50)
    assert (args.repeats, args.d0_repeats, args.batch_repeats, args.rss_logins) == (3, 5, 5, 2000)
    assert args.provider_list == ["ours-ma1sd", "ours-rest", "floor", "blocking"]
    quick = parse_args(["--quick", "--backend", "rest", "--providers", "ours,http,floor"])
    assert (quick.delays_ms, quick.concurrencies) == ((0, 200), (1, 50))
    assert (quick.repeats, quick.d0_repeats, quick.batch_repeats, quick.rss_logins) == (1, 1, 1, 500)
    assert quick.provider_list == ["ours-rest", "http-rest", "floor"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--providers", "ours,nobody"], "unknown provider: nobody (expected one of ours, http, ours-ma1sd,"),
        (["--providers", " , "], "--providers: none to run"),
        (["--concurrency", "1,0"], "--concurrency: C must be at least 1"),
        (["--delays", "0,x"], "--delays and --concurrency take comma-separated whole numbers"),
        (["--delays", "-1"], "--delays and --concurrency need values, none negative"),
        (["--repeats", "0"], "--repeats, --d0-repeats and --blocking-repeats must be at least 1"),
        (["--rss-logins", "-1"], "--logins, --rss-logins and --batch-repeats must not be negative"),
        (["--ours-config", "[1]"], "--ours-config: expected a JSON object"),
    ],
)
def test_parse_args_refuses_bad_options(argv: List[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "python -m bench.run: error: " + message in capsys.readouterr().err


def test_busy_note_is_empty_on_an_idle_machine() -> None:
    idle = {"cores": 2, "load_average_at_start": [0.3], "background_cores_before": 0.1, "background_cores_after": 0.2}
    assert busy_note(idle) == ""


def test_busy_note_warns_when_other_work_shared_the_machine() -> None:
    meta = {"cores": 2, "load_average_at_start": [0.3], "background_cores_before": 0.9, "background_cores_after": 0.1}
    note = busy_note(meta)
    assert note.startswith("BUSY MACHINE: other work was running (load average 0.30 on 2 cores")
    assert "before / after: 0.90 / 0.10)" in note


def test_a_high_load_average_before_the_run_counts_only_when_nothing_was_measured_during_it() -> None:
    meta: Dict[str, Any] = {"cores": 2, "load_average_at_start": [1.5], "background_cores_before": 0.1}
    assert busy_note(meta).startswith("BUSY MACHINE")
    meta.update(background_cores_after=0.1, other_busy_cores_median=0.2)
    assert busy_note(meta) == ""


def test_load_during_sums_up_the_batches_and_skips_nan() -> None:
    runs = [
        {"load_1min": 1.0, "other_busy_cores": 0.1},
        {"load_1min": float("nan"), "other_busy_cores": 0.3},
        {"load_1min": 3.0},
        {"load_1min": 2.0, "other_busy_cores": 0.2},
    ]
    assert load_during(runs) == {
        "load_average_max": 3.0,
        "load_average_median": 2.0,
        "load_average_min": 1.0,
        "other_busy_cores_median": 0.2,
        "other_busy_cores_max": 0.3,
    }
    nothing = load_during([])
    assert all(math.isnan(v) for v in nothing.values())


def test_load_line_reports_before_during_and_after() -> None:
    meta: Dict[str, Any] = {"load_average_at_start": [0.5, 0.25, 0.125], "load_average_at_end": [1.0, 0.5, 0.25]}
    meta.update(load_during([{"load_1min": 1.0, "other_busy_cores": 0.1}, {"load_1min": 2.0, "other_busy_cores": 0.3}]))
    assert load_line(meta) == (
        "load average 0.50 0.25 0.12 before the run, 1-min 1.00 / 1.50 / 2.00 (min / median / max) during it, "
        "1.00 0.50 0.25 at the end; cores busy with other work during the batches: median 0.20, max 0.30"
    )


def test_machine_line_says_what_ran_the_benchmark() -> None:
    meta = {
        "cpu_model": "Xeon",
        "cores": 2,
        "ram_gib": 3.8,
        "load_average_at_start": [0.5, 0.25, 0.125],
        "background_cores_before": 0.04,
        "python": "3.12.3",
        "synapse": "1.163.2",
    }
    assert machine_line(meta) == (
        "Machine: Xeon, 2 cores, 3.8 GiB RAM; load average 0.50 0.25 0.12; other work busy on 0.04 cores; "
        "Python 3.12.3, Synapse 1.163.2"
    )


def test_grid_line_says_what_the_run_measures() -> None:
    args = parse_args(["--quick", "--backend", "rest", "--ours-config", '{"timeout": 2}'])
    assert grid_line(args) == (
        "Grid: D = 0, 200 ms, C = 1, 50, 1 repeat(s) (1 at D = 0, blocking 1 at D > 0), one batch 1 time(s), "
        'providers ours-rest, floor, blocking (--quick); ours\' config adds {"timeout": 2}'
    )
