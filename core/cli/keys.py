"""`keys create|list|revoke|roll|verify`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.auth.contract import Verdict, key_from_text
from core.auth.verifier import Verifier
from core.cli._common import (
    actor,
    add_json_flag,
    engine,
    print_json,
    print_secret_once,
    print_table,
    session,
    settings,
)
from core.keys import service as keys
from core.keys.policy import GRACE_PERIODS, KeyStatus
from core.orgs import service as orgs


def register(sub: Any) -> None:
    group = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    p = group.add_parser("create", help="create an API key (shown once)")
    p.add_argument("--org", required=True)
    p.add_argument("--name", required=True, help="e.g. 'Production Server'")
    p.add_argument("--expires", required=True, metavar="30|60|90|<N>d|YYYY-MM-DD")
    p.add_argument("--by", required=True, metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_create)

    p = group.add_parser("list", help="list keys, masked")
    p.add_argument("--org", required=True)
    p.add_argument("--by", metavar="EMAIL")
    p.add_argument("--status", choices=[str(s) for s in KeyStatus])
    add_json_flag(p)
    p.set_defaults(handler=cmd_list)

    p = group.add_parser("revoke", help="revoke a key at once")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--by", required=True, metavar="EMAIL")
    p.add_argument("--reason")
    add_json_flag(p)
    p.set_defaults(handler=cmd_revoke)

    p = group.add_parser("roll", help="replace a key; the old one works for a grace period")
    p.add_argument("key_id", metavar="KEY_ID")
    p.add_argument("--by", required=True, metavar="EMAIL")
    p.add_argument("--grace", required=True, choices=list(GRACE_PERIODS))
    add_json_flag(p)
    p.set_defaults(handler=cmd_roll)

    p = group.add_parser("verify", help="verify a key or header value read from stdin")
    add_json_flag(p)
    p.set_defaults(handler=cmd_verify)


def cmd_create(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        new = keys.create_key(
            s,
            org.id,
            actor(s, args.by),
            name=args.name,
            expires=args.expires,
            pepper=settings().pepper,
        )
    if args.json:
        print_json(new.to_dict())
    else:
        print(f"Created API key {new.name!r} ({new.id}), expires {new.expires_at.isoformat()}")
        print_secret_once(new.key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with session() as s:
        org = orgs.org_by_name(s, args.org)
        views = keys.list_keys(s, org.id, actor(s, args.by), status=args.status)
    rows = [v.to_dict() for v in views]
    if args.json:
        print_json(rows)
    elif not rows:
        print("No API keys generated.")
    else:
        print_table(
            rows,
            [
                "id",
                "name",
                "masked",
                "status",
                "expires_at",
                "last_used_at",
                "usage_count",
                "created_by",
            ],
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        view = keys.revoke_key(s, actor(s, args.by), args.key_id, reason=args.reason)
    if args.json:
        print_json(view.to_dict())
    else:
        print(f"Revoked {view.name!r} ({view.id}, {view.masked})")
    return 0


def cmd_roll(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        new, old = keys.roll_key(
            s, actor(s, args.by), args.key_id, grace=args.grace, pepper=settings().pepper
        )
    if args.json:
        print_json({**new.to_dict(), "old_key": old.to_dict()})
    else:
        until = old.revoked_at.isoformat() if old.revoked_at else "now"
        print(f"Rolled {old.name!r}: old key {old.masked} works until {until}")
        print(f"New key {new.id}, expires {new.expires_at.isoformat()}:")
        print_secret_once(new.key)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    text = sys.stdin.read(4096)
    found = key_from_text(text)
    if isinstance(found, Verdict):
        verdict = found
    else:
        verdict = Verifier(engine(), settings().pepper).verify_key(found)
    if args.json:
        print_json(verdict.to_dict())
    else:
        line = f"{verdict.code.value}: {verdict.message}"
        if verdict.key_id:
            line += f" (key {verdict.key_id}, org {verdict.org_id})"
        print(line)
    return 0 if verdict.valid else 1
