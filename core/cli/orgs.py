"""`init`, `users add`, `migrate`: organizations, people and the schema."""

from __future__ import annotations

import argparse
from typing import Any

from core import db
from core.cli._common import (
    actor,
    add_json_flag,
    engine,
    print_json,
    read_password,
    session,
    settings,
)
from core.orgs import service as orgs
from core.orgs.models import Role


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create an organization and its first admin")
    p.add_argument("--org", required=True, help="organization name")
    p.add_argument("--admin", required=True, metavar="EMAIL", help="first admin's email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_json_flag(p)
    p.set_defaults(handler=cmd_init)

    users = sub.add_parser("users", help="manage people").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    p = users.add_parser("add", help="add a user to an organization")
    p.add_argument("--org", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--by", metavar="EMAIL", help="the admin adding them (default: operator)")
    p.add_argument("--name", help="display name")
    p.add_argument("--password-stdin", action="store_true")
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_add)

    p = users.add_parser("list", help="list an organization's members")
    p.add_argument("--org", required=True)
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_list)

    p = sub.add_parser("migrate", help="upgrade the database schema to the newest revision")
    add_json_flag(p)
    p.set_defaults(handler=cmd_migrate)


def cmd_init(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        exists = orgs.find_user(s, args.admin) is not None
        password = None if exists else read_password(args)
        org, user = orgs.create_organization(s, args.org, args.admin, password)
    _ = settings().pepper  # the embedded default creates its pepper on first use
    if args.json:
        print_json({"org_id": org.id, "org": org.name, "admin": user.email})
    else:
        print(f"Created organization {org.name!r} ({org.id}) with admin {user.email}")
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        who = actor(s, args.by)
        exists = orgs.find_user(s, args.email) is not None
        password = None if exists else read_password(args)
        m = orgs.add_member(
            s, org.id, who, args.email, args.role, password=password, display_name=args.name
        )
        out = {"user_id": m.user_id, "email": m.user.email, "role": m.role, "org": org.name}
    if args.json:
        print_json(out)
    else:
        print(f"Added {out['email']} to {org.name!r} as {out['role']}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from core.cli._common import print_table

    with session() as s:
        org = orgs.org_by_name(s, args.org)
        members = orgs.list_members(s, org.id, actor(s, args.by))
    rows = [
        {
            "user_id": m.user_id,
            "email": m.email,
            "role": m.role,
            "joined_at": m.joined_at.isoformat(),
        }
        for m in members
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["email", "role", "joined_at", "user_id"])
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    eng = engine()  # connecting migrates
    revisions = sorted(db.current_revisions(eng))
    if args.json:
        print_json({"revisions": revisions})
    else:
        print("schema at revision " + ", ".join(revisions))
    return 0
