"""The run's report: printed to the terminal and written to latest.json, latest.md and latest.png.

``markdown_report`` is pure; ``publish`` prints and writes the files.
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

from bench.grid import grid_kind, logins_per_cell
from bench.machine import busy_note, load_line
from bench.report import (
    RATIO_HEADER,
    TABLE_HEADER,
    TRANSACTION_HEADER,
    draw_chart,
    log,
    markdown_table,
    ratio_rows,
    table_rows,
    text_table,
    transaction_rows,
)
from bench.targets import BATCH_CONCURRENCY, BATCH_DELAY_MS


def publish(
    args: argparse.Namespace,
    meta: Dict[str, Any],
    cells: Dict[str, Dict[str, Any]],
    one_batch: Dict[str, Dict[str, Any]],
    rss: Dict[str, Dict[str, Any]],
    targets: List[Dict[str, Any]],
) -> None:
    """Prints the tables and targets of a run and writes latest.{json,md,png} to ``args.output``."""
    delays, concs = args.delays_ms, args.concurrencies
    rows = table_rows(cells, delays, concs)
    ratios = ratio_rows(cells, delays, concs)
    transactions = transaction_rows(cells, delays, concs)
    batch_rows = table_rows(one_batch, (BATCH_DELAY_MS,), (BATCH_CONCURRENCY,))
    batch_ratios = ratio_rows(one_batch, (BATCH_DELAY_MS,), (BATCH_CONCURRENCY,))
    kind = grid_kind(args)
    log()
    log(
        "Results (%s; medians: %d repeat(s) at D > 0, %d at D = 0; latencies in ms; database: %s; %s)"
        % (kind, args.repeats, args.d0_repeats, meta["database_detail"], load_line(meta))
    )
    if meta.get("command"):
        log("Command: %s" % meta["command"])
    note = busy_note(meta)
    if note:
        log(note)
    log(text_table(TABLE_HEADER, rows, group=slice(1, 4)))
    log()
    log("Ratios (medians)")
    log(text_table(RATIO_HEADER, ratios, group=slice(0, 3)))
    log()
    if batch_rows:
        log(
            "One batch: %d logins at C = %d, D = %d ms (medians of %d)"
            % (BATCH_CONCURRENCY, BATCH_CONCURRENCY, BATCH_DELAY_MS, args.batch_repeats)
        )
        log(text_table(TABLE_HEADER, batch_rows, group=slice(1, 4)))
        log(text_table(RATIO_HEADER, batch_ratios, group=slice(0, 3)))
        log()
    if transactions:
        log("Database transactions per login where ours and floor differ (Synapse's names; medians)")
        log(text_table(TRANSACTION_HEADER, transactions, group=slice(0, 4)))
        log()
    log("Targets (ratios to floor in this run, per backend)")
    for t in targets:
        http = " (HTTP floor: %s)" % t["http_floor"] if "http_floor" in t else ""
        log("  %-4s  [%s] %s: %s%s" % (t["status"], t["backend"], t["target"], t["detail"], http))

    out_dir: Path = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "options": {
            "quick": args.quick,
            "backend": args.backend,
            "repeats": args.repeats,
            "d0_repeats": args.d0_repeats,
            "blocking_repeats": args.blocking_repeats,
            "batch_repeats": args.batch_repeats,
            "delays_ms": list(delays),
            "concurrency": list(concs),
            "providers": args.provider_list,
            "logins_per_cell": {str(c): logins_per_cell(c, args.logins) for c in concs},
            "rss_logins": args.rss_logins,
            "threepids": args.threepids,
            "synapse_log_level": args.log_level,
            "ours_config": args.ours_config,
        },
        "cells": cells,
        "one_batch": one_batch,
        "ratios": [dict(zip(RATIO_HEADER, r)) for r in ratios],
        "transactions": [dict(zip(TRANSACTION_HEADER, r)) for r in transactions],
        "rss": rss,
        "targets": targets,
    }
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    title = "rest_auth_provider login benchmark (%s): Synapse %s, %s, %s cores, medians%s" % (
        kind,
        meta["synapse"],
        meta["database"],
        meta["cores"],
        ", BUSY MACHINE (load average %.1f before the run)" % meta["load_average_at_start"][0]
        if busy_note(meta)
        else "",
    )
    png_path = out_dir / "latest.png"
    problem = draw_chart(png_path, cells, delays, concs, title)
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_report(args, meta, rows, ratios, batch_rows, batch_ratios, transactions, rss, targets))
    log()
    log("Wrote %s, %s%s" % (json_path, md_path, "" if problem else ", " + str(png_path)))
    if problem:
        log("No chart: %s" % problem)


def markdown_report(
    args: argparse.Namespace,
    meta: Dict[str, Any],
    rows: List[List[str]],
    ratios: List[List[str]],
    batch_rows: List[List[str]],
    batch_ratios: List[List[str]],
    transactions: List[List[str]],
    rss: Dict[str, Dict[str, Any]],
    targets: List[Dict[str, Any]],
) -> str:
    """Returns the Markdown report of a run (docs/performance.md quotes it)."""
    lines = [
        "Run of %s: %s; %s cores (%s), %.1f GiB RAM; Python %s, Synapse %s; %s; %s; medians of %d repeat(s) "
        "per cell at D > 0, %d at D = 0; %.0f s in all."
        % (
            meta["finished"],
            grid_kind(args),
            meta["cores"],
            meta["cpu_model"],
            meta["ram_gib"],
            meta["python"],
            meta["synapse"],
            meta["database_detail"],
            load_line(meta),
            args.repeats,
            args.d0_repeats,
            meta["duration_s"],
        ),
        "",
    ]
    if meta.get("command"):
        lines += ["Command: `%s`" % meta["command"], ""]
    lines += [
        ("**%s.**" % busy_note(meta)) if busy_note(meta) else "The machine was otherwise idle.",
        "",
        markdown_table(TABLE_HEADER, rows),
        "",
        markdown_table(RATIO_HEADER, ratios),
        "",
    ]
    if batch_rows:
        lines += [
            "One batch: %d logins at C = %d, D = %d ms, medians of %d:"
            % (BATCH_CONCURRENCY, BATCH_CONCURRENCY, BATCH_DELAY_MS, args.batch_repeats),
            "",
            markdown_table(TABLE_HEADER, batch_rows),
            "",
            markdown_table(RATIO_HEADER, batch_ratios),
            "",
        ]
    if transactions:
        lines += [markdown_table(TRANSACTION_HEADER, transactions), ""]
    for provider, r in rss.items():
        lines.append(
            "* RSS, %s, %d logins at C=50, D=0 after %d warm-up logins: %.1f → %.1f MB (%+.1f MB); "
            "its fake accepted %d connections during them."
            % (
                provider,
                r["logins"],
                r["warmup_logins"],
                r["rss_before_mb"],
                r["rss_after_mb"],
                r["rss_growth_mb"],
                r["ma1sd_connections"],
            )
        )
    lines += ["", "| backend | target | result | HTTP floor | figures |", "|---|---|---|---|---|"]
    lines += [
        "| %s | %s | %s | %s | %s |" % (t["backend"], t["target"], t["status"], t.get("http_floor", "-"), t["detail"])
        for t in targets
    ]
    return "\n".join(lines) + "\n"
