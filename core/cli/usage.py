"""`usage compact|stats`: the Parquet usage log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core.analytics import usage_problems
from core.cli._common import CommandError, add_json_flag, print_json, print_table, settings
from core.usage import compact
from core.usage.schema import usage_root


def register(sub: Any) -> None:
    group = sub.add_parser("usage", help="the usage log (Parquet)").add_subparsers(
        dest="usage_command", required=True, metavar="ACTION"
    )
    p = group.add_parser("compact", help="merge a day's small files into one")
    p.add_argument("--day", metavar="YYYY-MM-DD", help="one day (default: every closed day)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_compact)

    p = group.add_parser("stats", help="files and records per day; overflow from a server")
    p.add_argument(
        "--server",
        metavar="URL",
        help="also show a running service's usage counters (overflow) from its /healthz",
    )
    add_json_flag(p)
    p.set_defaults(handler=cmd_stats)


def cmd_compact(args: argparse.Namespace) -> int:
    data_dir = settings().data_dir
    days = [args.day] if args.day else compact.closed_days(data_dir)
    results = [compact.compact_day(data_dir, day).to_dict() for day in days]
    if args.json:
        print_json(results)
    elif not results:
        print("nothing to compact")
    else:
        print_table(results, ["day", "files_before", "files_after", "records"])
    return 0


def _day_stats(data_dir: Path, unreadable: set[str]) -> list[dict[str, object]]:
    """Files, records and bytes per day, leaving out (but counting) unreadable files."""
    days: dict[str, dict[str, Any]] = {}
    for path in sorted(usage_root(data_dir).glob("date=*/*.parquet")):
        day = days.setdefault(
            path.parent.name.removeprefix("date="),
            {"files": 0, "records": 0, "bytes": 0, "unreadable": 0},
        )
        if str(path) in unreadable:
            day["unreadable"] += 1
            continue
        day["files"] += 1
        day["records"] += pq.read_metadata(path).num_rows
        day["bytes"] += path.stat().st_size
    return [{"day": d, **v} for d, v in days.items()]


def cmd_stats(args: argparse.Namespace) -> int:
    data_dir = settings().data_dir
    problems = usage_problems(data_dir)
    bad = {p["path"] for p in problems}
    out: dict[str, Any] = {"days": _day_stats(data_dir, bad), "unreadable": problems}
    if args.server:
        import httpx

        url = args.server.rstrip("/") + "/healthz"
        try:
            resp = httpx.get(url, timeout=5)
            resp.raise_for_status()
            out["server"] = resp.json().get("usage")
        except (httpx.HTTPError, ValueError) as exc:
            raise CommandError(f"cannot read {url}: {type(exc).__name__}") from None
    if args.json:
        print_json(out)
        return 0
    if out["days"]:
        print_table(out["days"], ["day", "files", "records", "bytes", "unreadable"])
    else:
        print("the usage log is empty")
    for p in problems:
        print(f"unreadable, skipped by every report: {p['path']} ({p['problem']})")
    if out.get("server"):
        s = out["server"]
        print(
            f"server: recorded={s['recorded']} written={s['written']} buffered={s['buffered']} "
            f"overflow={s['overflow']} write_failed={s['write_failed']}"
        )
    return 0
