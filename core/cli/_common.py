"""What every command shares: settings, the engine, sessions, output and password input."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core import db
from core.config import Settings
from core.orgs import users
from core.orgs.permissions import Actor


class CommandError(Exception):
    """A command refused its arguments or input (not a `core` error); `code` for --json."""

    def __init__(self, message: str, *, code: str = "invalid_arguments") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def engine() -> Engine:
    return db.connect(settings())


def session() -> Session:
    return Session(engine(), expire_on_commit=False)


def actor(s: Session, email: str | None) -> Actor:
    """Return the user named by --by, or the operator (system) when --by is not given.

    Raise CommandError for an empty --by (it must name a person, never mean the operator).
    """
    if email is None:
        return Actor.system("cli")
    if not email.strip():
        raise CommandError("--by must name a person's email (leave it out to act as the operator)")
    return users.actor_for(s, email)


def add_json_flag(
    parser: argparse.ArgumentParser,
    text: str = 'print machine-readable JSON (errors: {"error": {"code", "message"}} on stderr)',
) -> None:
    parser.add_argument("--json", action="store_true", help=text)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_secret_once(secret: str) -> None:
    """Print a secret indented on its own line, with the warning that it is shown once."""
    print()
    print(f"    {secret}")
    print()
    print("Copy it now: it will not be shown again.")


def read_password(args: argparse.Namespace, *, confirm: bool = True) -> str:
    """Return a password from stdin (--password-stdin) or a hidden prompt."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        if not line:
            raise CommandError("--password-stdin given but standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to prompt for a password: use --password-stdin")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Repeat password: ") != first:
        raise CommandError("the passwords do not match")
    return first
