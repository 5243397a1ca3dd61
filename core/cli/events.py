"""`events register|list`: the catalog of the platform's own event types."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.cli._common import CommandError, add_json_flag, print_json, print_table, session
from core.webhooks import catalog

MAX_SCHEMA_FILE = catalog.MAX_SCHEMA_BYTES


def register(sub: Any) -> None:
    group = sub.add_parser(
        "events", help="the catalog of the platform's event types (publish with POST /v1/events)"
    ).add_subparsers(dest="events_command", required=True, metavar="ACTION")
    p = group.add_parser(
        "register",
        help="register an event type endpoints may subscribe to (again: replace its "
        "description and schema)",
    )
    p.add_argument("type", metavar="TYPE", help="dot-separated lowercase words, e.g. invoice.paid")
    p.add_argument("--description", required=True, metavar="TEXT")
    p.add_argument(
        "--schema",
        type=Path,
        metavar="FILE.json",
        help="a JSON Schema (draft 2020-12 unless it says otherwise) every event's data must match",
    )
    add_json_flag(p)
    p.set_defaults(handler=cmd_register)

    p = group.add_parser("list", help="list the registered event types")
    add_json_flag(p)
    p.set_defaults(handler=cmd_list)


def _read_schema(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SCHEMA_FILE + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_SCHEMA_FILE:
        raise CommandError(f"{path} is larger than {MAX_SCHEMA_FILE} bytes")
    try:
        schema = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CommandError(f"{path} is not JSON: {str(exc)[:200]}") from None
    if not isinstance(schema, dict):
        raise CommandError(f"{path} must hold a JSON object (a JSON Schema)")
    return schema


def cmd_register(args: argparse.Namespace) -> int:
    schema = _read_schema(args.schema) if args.schema else None
    with session() as s, s.begin():
        view, created = catalog.register_event_type(s, args.type, args.description, schema=schema)
    if args.json:
        print_json({**view.to_dict(), "created": created})
    else:
        verb = "Registered" if created else "Updated"
        shape = "with a JSON Schema" if view.schema is not None else "without a schema"
        print(f"{verb} event type {view.name} ({shape})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with session() as s:
        views = catalog.list_event_types(s)
    if args.json:
        print_json([v.to_dict() for v in views])
    elif not views:
        print("No event types registered.")
    else:
        rows = [
            {
                "type": v.name,
                "schema": "yes" if v.schema is not None else "no",
                "description": v.description,
                "updated_at": v.updated_at.isoformat(),
            }
            for v in views
        ]
        print_table(rows, ["type", "schema", "updated_at", "description"])
    return 0
