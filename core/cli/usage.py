"""`usage compact|stats`: the Parquet usage log."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli._common import CommandError, add_json_flag, print_json, print_table, settings
from core.usage import compact


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


def cmd_stats(args: argparse.Namespace) -> int:
    out: dict[str, Any] = {"days": compact.day_stats(settings().data_dir)}
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
        print_table(out["days"], ["day", "files", "records", "bytes"])
    else:
        print("the usage log is empty")
    if out.get("server"):
        s = out["server"]
        print(
            f"server: recorded={s['recorded']} written={s['written']} buffered={s['buffered']} "
            f"overflow={s['overflow']} write_failed={s['write_failed']}"
        )
    return 0
