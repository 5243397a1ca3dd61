"""`audit verify|export`: export as csv, jsonl, parquet or a PDF report."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from core.audit import reports
from core.audit import service as audit
from core.cli._common import CommandError, actor, add_json_flag, print_json, session
from core.orgs import service as orgs


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def register(sub: Any) -> None:
    group = sub.add_parser("audit", help="verify and export the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    p = group.add_parser("verify", help="check the hash chain; exit 1 naming the first bad event")
    p.add_argument("--org", required=True)
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_verify)

    p = group.add_parser("export", help="write the audit log to a file")
    p.add_argument("--org", required=True)
    p.add_argument("--format", required=True, choices=reports.FORMATS)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--since", type=_day, help="first day included (YYYY-MM-DD, UTC)")
    p.add_argument("--until", type=_day, help="last day included (YYYY-MM-DD, UTC)")
    p.add_argument("--actor", metavar="EMAIL")
    p.add_argument("--action", metavar="NAME")
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_export)


def cmd_verify(args: argparse.Namespace) -> int:
    with session() as s:
        org = orgs.org_by_name(s, args.org)
        report = audit.verify_chain(s, org.id, actor(s, args.by))
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "first_bad_seq": report.first_bad_seq,
                "problem": report.problem,
            }
        )
    else:
        print(report.describe())
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    if args.since and args.until and args.until < args.since:
        raise CommandError("--until is before --since")
    filters = audit.AuditFilter(
        since=datetime.combine(args.since, time(0), UTC) if args.since else None,
        until=datetime.combine(args.until, time(0), UTC) + timedelta(days=1)
        if args.until
        else None,
        actor_email=args.actor,
        action=args.action,
    )
    with session() as s:
        org = orgs.org_by_name(s, args.org)
        n = reports.export(s, org.id, actor(s, args.by), args.format, args.out, filters)
    if args.json:
        print_json({"events": n, "path": str(args.out), "format": args.format})
    else:
        print(f"Wrote {n} events to {args.out}")
    return 0
