"""`audit verify|seal|public-key|export`: the keyed chain, its checkpoints and signed exports."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from core.audit import reports
from core.audit import service as audit
from core.audit.keyring import AuditKeyring, public_key_pem
from core.cli._common import CommandError, actor, add_json_flag, print_json, session, settings
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
    p = group.add_parser(
        "verify",
        help="check the keyed chain and its signed checkpoints; exit 1 naming the first bad event",
    )
    p.add_argument("--org", required=True)
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_verify)

    p = group.add_parser(
        "seal", help="sign a checkpoint of each organization's chain head (run it hourly)"
    )
    p.add_argument("--org", help="one organization (default: every one)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_seal)

    p = group.add_parser(
        "public-key", help="print the public key that verifies checkpoints and exports (PEM)"
    )
    p.add_argument("--out", type=Path, help="write it to a file instead")
    p.set_defaults(handler=cmd_public_key)

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
        print_json(report.to_dict())
    else:
        print(report.describe())
    return 0 if report.ok else 1


def cmd_seal(args: argparse.Namespace) -> int:
    results = []
    with session() as s, s.begin():
        ids = [orgs.org_by_name(s, args.org).id] if args.org else audit.organization_ids(s)
        for org_id in ids:
            cp = audit.seal(s, org_id)
            results.append(
                {
                    "org_id": org_id,
                    "checkpoint": cp.n if cp else None,
                    "seq": cp.seq if cp else None,
                }
            )
    if args.json:
        print_json(results)
    else:
        for r in results:
            state = f"sealed event #{r['seq']} in checkpoint #{r['checkpoint']}"
            print(f"{r['org_id']}: {state if r['checkpoint'] else 'already sealed'}")
    return 0


def cmd_public_key(args: argparse.Namespace) -> int:
    keyring = AuditKeyring.from_settings(settings())
    pem = public_key_pem(keyring.current.public_key)
    if args.out:
        args.out.write_text(pem)
        print(f"Wrote the public key {keyring.current.id} to {args.out}")
    else:
        sys.stdout.write(pem)
    return 0


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
