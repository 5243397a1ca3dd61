"""`init`, `users …`, `migrate`: organizations, people and the schema.

People join by invitation: `users add` prints a one-time link for the person, who sets
their own password (`users accept` or the console). Only the operator — a command
without `--by`, run with the database's own credentials — may set a password directly
(`init`, `users add --password-stdin`, `users set-password`) or disable an account.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core import db
from core.cli._common import (
    CommandError,
    actor,
    add_json_flag,
    engine,
    print_json,
    print_table,
    read_password,
    session,
    settings,
)
from core.clock import iso
from core.errors import CoreError
from core.orgs import invitations, mail, users
from core.orgs import service as orgs
from core.orgs.models import Role
from core.orgs.permissions import Actor
from core.sessions import signin

OPERATOR_ONLY = "only the operator (without --by) may {}"


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create an organization and its first admin")
    p.add_argument("--org", required=True, help="organization name")
    p.add_argument("--admin", required=True, metavar="EMAIL", help="first admin's email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_json_flag(p)
    p.set_defaults(handler=cmd_init)

    users_cmd = sub.add_parser("users", help="manage people").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    p = users_cmd.add_parser(
        "add", help="invite a person to an organization (prints their one-time link)"
    )
    p.add_argument("--org", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--by", metavar="EMAIL", help="the admin inviting them (default: operator)")
    p.add_argument("--name", help="display name (operator with --password-stdin only)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="operator only: create the account with this password and add it directly",
    )
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_add)

    p = users_cmd.add_parser("accept", help="accept an invitation with its token")
    p.add_argument("token", help="the token from the invitation link (inv_…)")
    p.add_argument("--name", help="display name, for a new account")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_accept)

    p = users_cmd.add_parser("list", help="list an organization's members")
    p.add_argument("--org", required=True)
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_list)

    p = users_cmd.add_parser("invitations", help="list an organization's invitations")
    p.add_argument("--org", required=True)
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_invitations)

    for name, text, handler in (
        ("revoke-invite", "revoke a pending invitation", cmd_users_revoke_invite),
        ("resend-invite", "issue a new link for an invitation", cmd_users_resend_invite),
    ):
        p = users_cmd.add_parser(name, help=text)
        p.add_argument("invitation_id", metavar="INVITATION_ID")
        p.add_argument("--org", required=True)
        p.add_argument("--by", metavar="EMAIL")
        add_json_flag(p)
        p.set_defaults(handler=handler)

    p = users_cmd.add_parser("reset-link", help="issue a one-time password-reset link for a person")
    p.add_argument("email")
    p.add_argument("--org", help="the organization in which --by is an admin")
    p.add_argument("--by", metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_reset_link)

    p = users_cmd.add_parser(
        "set-password", help="operator only: set an account's password (its sessions end)"
    )
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--by", metavar="EMAIL", help=argparse.SUPPRESS)  # refused: operator only
    add_json_flag(p)
    p.set_defaults(handler=cmd_users_set_password)

    for name, text in (
        ("disable", "disable an account (its sessions end)"),
        ("enable", "re-enable an account"),
    ):
        p = users_cmd.add_parser(name, help=f"operator only: {text}")
        p.add_argument("email")
        p.add_argument("--by", metavar="EMAIL", help=argparse.SUPPRESS)  # refused: operator only
        add_json_flag(p)
        p.set_defaults(handler=cmd_users_disable, disable=name == "disable")

    p = sub.add_parser("migrate", help="upgrade the database schema to the newest revision")
    add_json_flag(p)
    p.set_defaults(handler=cmd_migrate)


def cmd_init(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        exists = users.find_user(s, args.admin) is not None
        password = None if exists else read_password(args)
        org, user = orgs.create_organization(s, args.org, args.admin, password)
    _ = settings().pepper  # the embedded default creates its pepper on first use
    if args.json:
        print_json({"org_id": org.id, "org": org.name, "admin": user.email})
    else:
        print(f"Created organization {org.name!r} ({org.id}) with admin {user.email}")
    return 0


def _send(what: str, send: Any) -> bool:
    """Send an e-mail when SMTP is configured; return whether one was sent."""
    smtp = mail.smtp_from_env()
    if smtp is None:
        return False
    try:
        send(smtp)
    except (OSError, CoreError) as exc:
        print(
            f"warning: the {what} e-mail could not be sent ({type(exc).__name__})", file=sys.stderr
        )
        return False
    return True


def cmd_users_add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        return _operator_add(args)
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        issued = invitations.invite(s, org.id, actor(s, args.by), args.email, args.role)
    url = issued.url(mail.console_url())
    emailed = _send(
        "invitation",
        lambda smtp: mail.send_invitation(
            smtp, issued.email, issued.org_name, issued.role, url, issued.expires_at
        ),
    )
    if args.json:
        print_json(
            {
                "invitation_id": issued.id,
                "email": issued.email,
                "role": issued.role,
                "org": issued.org_name,
                "invite_url": url,
                "expires_at": iso(issued.expires_at),
                "emailed": emailed,
            }
        )
    else:
        print(f"Invited {issued.email} to {issued.org_name!r} as {issued.role}.")
        print(f"Send them this link (it works once, until {iso(issued.expires_at)}):")
        print()
        print(f"    {url}")
        print()
        if emailed:
            print(f"It was also e-mailed to {issued.email}.")
    return 0


def _operator_add(args: argparse.Namespace) -> int:
    if args.by is not None:
        raise CommandError(OPERATOR_ONLY.format("set a password; admins invite people"))
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        if users.find_user(s, args.email) is not None:
            raise CommandError(
                f"{args.email.strip()} already has an account and keeps its password: "
                "invite them (without --password-stdin)"
            )
        password = read_password(args)
        m = orgs.add_member(
            s,
            org.id,
            Actor.system("cli"),
            args.email,
            args.role,
            password=password,
            display_name=args.name,
        )
        out = {"user_id": m.user_id, "email": m.user.email, "role": m.role, "org": org.name}
    if args.json:
        print_json(out)
    else:
        print(f"Added {out['email']} to {org.name!r} as {out['role']}")
    return 0


def cmd_users_accept(args: argparse.Namespace) -> int:
    with session() as s:
        offer = invitations.pending(s, args.token)
    password = read_password(args, confirm=not offer.has_account)
    with session() as s, s.begin():
        if offer.has_account:
            outcome = signin.sign_in(
                s, offer.email, password, signin.Client.of("cli", "python -m core")
            )
            if outcome.error is None:
                who = outcome.signed_in
                assert who is not None
                invitations.accept_signed_in(s, args.token, who.user_id)
        else:
            invitations.accept_new_account(s, args.token, password, display_name=args.name)
    if offer.has_account:
        outcome.result()
    out = {"email": offer.email, "org": offer.org_name, "role": offer.role}
    if args.json:
        print_json(out)
    else:
        print(f"{offer.email} joined {offer.org_name!r} as {offer.role}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
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


def cmd_users_invitations(args: argparse.Namespace) -> int:
    with session() as s:
        org = orgs.org_by_name(s, args.org)
        views = invitations.list_invitations(s, org.id, actor(s, args.by))
    rows = [
        {
            "invitation_id": v.id,
            "email": v.email,
            "role": v.role,
            "status": v.status,
            "invited_by": v.invited_by,
            "expires_at": iso(v.expires_at),
        }
        for v in views
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["email", "role", "status", "expires_at", "invited_by", "invitation_id"])
    return 0


def cmd_users_revoke_invite(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        invitations.revoke(s, org.id, actor(s, args.by), args.invitation_id)
    if args.json:
        print_json({"invitation_id": args.invitation_id, "status": "revoked"})
    else:
        print(f"Revoked invitation {args.invitation_id}: its link no longer works")
    return 0


def cmd_users_resend_invite(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        issued = invitations.resend(s, org.id, actor(s, args.by), args.invitation_id)
    url = issued.url(mail.console_url())
    emailed = _send(
        "invitation",
        lambda smtp: mail.send_invitation(
            smtp, issued.email, issued.org_name, issued.role, url, issued.expires_at
        ),
    )
    if args.json:
        print_json(
            {
                "invitation_id": issued.id,
                "email": issued.email,
                "invite_url": url,
                "expires_at": iso(issued.expires_at),
                "emailed": emailed,
            }
        )
    else:
        print(f"New link for {issued.email} (the previous one no longer works):")
        print()
        print(f"    {url}")
        print()
    return 0


def cmd_users_reset_link(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        who = actor(s, args.by)
        org_id = orgs.org_by_name(s, args.org).id if args.org else None
        issued = users.issue_reset(s, who, args.email, org_id=org_id)
    url = issued.url(mail.console_url())
    emailed = _send(
        "reset", lambda smtp: mail.send_reset(smtp, issued.email, url, issued.expires_at)
    )
    if args.json:
        print_json(
            {
                "email": issued.email,
                "reset_url": url,
                "expires_at": iso(issued.expires_at),
                "emailed": emailed,
            }
        )
    else:
        print(f"Reset link for {issued.email} (works once, until {iso(issued.expires_at)}):")
        print()
        print(f"    {url}")
        print()
    return 0


def _operator(args: argparse.Namespace, what: str) -> Actor:
    if getattr(args, "by", None) is not None:
        raise CommandError(OPERATOR_ONLY.format(what))
    return Actor.system("cli")


def cmd_users_set_password(args: argparse.Namespace) -> int:
    operator = _operator(args, "set a password")
    password = read_password(args)
    with session() as s, s.begin():
        user = users.set_password(s, operator, args.email, password)
    if args.json:
        print_json({"email": user.email, "password_set": True, "sessions_ended": True})
    else:
        print(f"Password set for {user.email}; their sessions have ended")
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    operator = _operator(args, "disable or enable an account")
    with session() as s, s.begin():
        user = users.set_disabled(s, operator, args.email, args.disable)
    state = "disabled" if user.disabled else "enabled"
    if args.json:
        print_json({"email": user.email, "disabled": user.disabled})
    else:
        suffix = "; their sessions have ended" if user.disabled else ""
        print(f"{user.email} is {state}{suffix}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    eng = engine()  # connecting migrates
    revisions = sorted(db.current_revisions(eng))
    if args.json:
        print_json({"revisions": revisions})
    else:
        print("schema at revision " + ", ".join(revisions))
    return 0
