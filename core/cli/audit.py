"""`audit verify|seal|public-key|export`: the keyed chain, its checkpoints and signed exports."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from core.audit import exports, reports
from core.audit import service as audit
from core.audit.keyring import AuditKeyring, load_public_key, public_key_pem
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
        help="check an organization's chain (--org), or an export offline (--file); "
        "exit 1 naming the first bad event or record",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--org", help="verify the organization's chain and checkpoints")
    target.add_argument(
        "--file", type=Path, metavar="EXPORT", help="verify an export without the database"
    )
    p.add_argument(
        "--manifest", type=Path, help="the export's signed manifest (default: EXPORT.manifest.json)"
    )
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the audit public key (PEM) the manifest must be signed by",
    )
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
    add_json_flag(p)
    p.set_defaults(handler=cmd_public_key)

    p = group.add_parser("export", help="write the audit log to a file")
    p.add_argument("--org", required=True)
    p.add_argument("--format", required=True, choices=reports.FORMATS)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--since", type=_day, help="first day included (YYYY-MM-DD, UTC)")
    p.add_argument("--until", type=_day, help="last day included (YYYY-MM-DD, UTC)")
    p.add_argument("--actor", metavar="EMAIL", help="only events by this actor")
    p.add_argument("--action", metavar="NAME", help="only events with this action")
    p.add_argument(
        "--allow-broken",
        action="store_true",
        help="export even when the chain fails verification (every page says so)",
    )
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_export)


def cmd_verify(args: argparse.Namespace) -> int:
    if args.file is not None:
        return _verify_file(args)
    if args.manifest or args.public_key:
        raise CommandError("--manifest and --public-key go with --file")
    with session() as s:
        org = orgs.org_by_name(s, args.org)
        report = audit.verify_chain(s, org.id, actor(s, args.by))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.describe())
    return 0 if report.ok else 1


def _verify_file(args: argparse.Namespace) -> int:
    trusted = None
    if args.public_key is not None:
        try:
            trusted = load_public_key(args.public_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the public key {args.public_key}: {exc}") from None
    report = exports.verify_file(args.file, manifest=args.manifest, public_key=trusted)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.message)
        if report.ok and not report.trusted_key:
            print(
                f"warning: checked against the key inside the manifest ({report.key_id}); "
                "pass --public-key with the key the organization gave you to know who signed it"
            )
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
    if args.json:
        print_json({"key_id": keyring.current.id, "public_key": pem, "out": args.out})
    elif args.out:
        print(f"Wrote the public key {keyring.current.id} to {args.out}")
    else:
        sys.stdout.write(pem)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.since and args.until and args.until < args.since:
        raise CommandError("--until is before --since")
    today = datetime.now(UTC).date()
    for name in ("since", "until"):
        day = getattr(args, name)
        if day is not None and day > today:
            raise CommandError(f"--{name} {day} is in the future")
    filters = audit.AuditFilter(
        since=datetime.combine(args.since, time(0), UTC) if args.since else None,
        until=datetime.combine(args.until, time(0), UTC) + timedelta(days=1)
        if args.until
        else None,
        actor_email=args.actor,
        action=args.action,
    )
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        result = reports.export(
            s, org.id, actor(s, args.by), args.format, args.out, filters,
            allow_broken=args.allow_broken,
        )  # fmt: skip
    if args.json:
        print_json(
            {
                "events": result.events,
                "path": str(result.path),
                "manifest": str(result.manifest),
                "sha256": result.sha256,
                "format": args.format,
                "chain": result.chain.to_dict(),
            }
        )
    else:
        print(f"Wrote {result.events} events to {result.path}, signed in {result.manifest}")
        if not result.chain.ok:
            print(f"warning: exported a BROKEN chain: {result.chain.describe()}")
    return 0
