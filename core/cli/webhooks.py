"""`webhooks add|list|test|rotate-secret|deliveries|replay|recover|enable`."""

from __future__ import annotations

import argparse
import functools
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from core import webhooks
from core.cli._common import (
    CommandError,
    actor,
    add_json_flag,
    engine,
    print_json,
    print_secret_once,
    print_table,
    session,
    settings,
)
from core.orgs import service as orgs
from core.webhooks.config import WebhookConfig


@functools.cache
def config() -> WebhookConfig:
    return WebhookConfig.from_env(settings())


def register(sub: Any) -> None:
    group = sub.add_parser("webhooks", help="manage webhook endpoints").add_subparsers(
        dest="webhooks_command", required=True, metavar="ACTION"
    )
    p = group.add_parser("add", help="add an endpoint (its signing secret is shown once)")
    p.add_argument("--org", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--events", required=True, metavar="TYPE[,TYPE…]")
    p.add_argument("--by", required=True, metavar="EMAIL")
    p.add_argument("--description")
    add_json_flag(p)
    p.set_defaults(handler=cmd_add)

    p = group.add_parser("list", help="list the organization's endpoints")
    p.add_argument("--org", required=True)
    add_json_flag(p)
    p.set_defaults(handler=cmd_list)

    p = group.add_parser("test", help="send a signed webhook.test event and show the attempt")
    p.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    p.add_argument("--by", required=True, metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_test)

    p = group.add_parser("rotate-secret", help="new secret; the old one signs 24 h more")
    p.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    p.add_argument("--by", required=True, metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_rotate)

    p = group.add_parser("deliveries", help="recent attempts and success rate of an endpoint")
    p.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    add_json_flag(p)
    p.set_defaults(handler=cmd_deliveries)

    p = group.add_parser("replay", help="send one message again")
    p.add_argument("message_id", metavar="MESSAGE_ID")
    p.add_argument("--by", required=True, metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_replay)

    p = group.add_parser(
        "recover", help="send again every failed message of an endpoint created since a time"
    )
    p.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    p.add_argument(
        "--since",
        required=True,
        metavar="WHEN",
        help="YYYY-MM-DD (start of the day, UTC), an ISO 8601 time, or <N>h / <N>d ago",
    )
    p.add_argument("--by", required=True, metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_recover)

    p = group.add_parser(
        "enable", help="enable a disabled endpoint again (its failure run starts over)"
    )
    p.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    p.add_argument("--by", required=True, metavar="EMAIL")
    add_json_flag(p)
    p.set_defaults(handler=cmd_enable)


def cmd_add(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        org = orgs.org_by_name(s, args.org)
        view, secret = webhooks.create_endpoint(
            s,
            org.id,
            actor(s, args.by),
            url=args.url,
            events=args.events,
            description=args.description,
            config=config(),
        )
    if args.json:
        print_json({"id": view.id, "secret": secret, **view.to_dict()})
    else:
        print(f"Added endpoint {view.id} → {view.url} ({', '.join(view.events)})")
        print("Signing secret:")
        print_secret_once(secret)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with session() as s:
        org = orgs.org_by_name(s, args.org)
        rows = [v.to_dict() for v in webhooks.list_endpoints(s, org.id, actor(s, None))]
    if args.json:
        print_json(rows)
    elif not rows:
        print("No webhook endpoints.")
    else:
        for row in rows:
            row["events"] = ",".join(row["events"])
        print_table(rows, ["id", "url", "enabled", "events", "last_success_at", "failing_since"])
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        message_id = webhooks.queue_test(s, actor(s, args.by), args.endpoint_id)
    attempt = webhooks.deliver_test(engine(), message_id, config=config())
    if args.json:
        print_json(attempt.to_dict())
    else:
        result = "succeeded" if attempt.success else "failed"
        status = attempt.status_code if attempt.status_code is not None else "no response"
        print(f"Test {result}: {status} in {attempt.latency_ms:.0f} ms")
        if attempt.error:
            print(f"Error: {attempt.error}")
        if attempt.response_excerpt:
            print(f"Response: {attempt.response_excerpt[:200]}")
    return 0 if attempt.success else 1


def cmd_rotate(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        secret = webhooks.rotate_secret(s, actor(s, args.by), args.endpoint_id, config=config())
    if args.json:
        print_json({"id": args.endpoint_id, "secret": secret})
    else:
        print(f"New signing secret: {secret}")
        print("The previous secret keeps signing for 24 hours. Copy this one now.")
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    with session() as s:
        who = actor(s, None)
        stats = webhooks.endpoint_stats(s, who, args.endpoint_id)
        attempts = [a.to_dict() for a in webhooks.list_attempts(s, who, args.endpoint_id)]
    if args.json:
        print_json({"stats": stats.to_dict(), "attempts": attempts})
        return 0
    rate = "n/a" if stats.success_rate is None else f"{stats.success_rate:.1%}"
    print(
        f"Last 24 h: {stats.attempts} attempts, success rate {rate}; "
        f"{stats.pending} pending, {stats.failed} failed"
    )
    print(
        f"Last success: {stats.last_success_at or 'never'}; last failure: "
        f"{stats.last_failure_at or 'never'}"
    )
    print_table(
        attempts, ["attempted_at", "message_id", "success", "status_code", "latency_ms", "error"]
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        message_id = webhooks.replay(s, actor(s, args.by), args.message_id)
    if args.json:
        print_json({"message_id": message_id, "status": "pending"})
    else:
        print(f"Message {message_id} queued for delivery again.")
    return 0


_AGO = re.compile(r"(\d{1,5})([hd])")


def parse_since(value: str, now: datetime) -> datetime:
    """Return the time `value` names: a day (its start, UTC), an ISO 8601 time (UTC when it
    has no offset), or `<N>h` / `<N>d` before `now`. Raise CommandError otherwise, or for a
    time in the future."""
    text = value.strip()
    ago = _AGO.fullmatch(text)
    when: datetime
    if ago:
        n = int(ago[1])
        when = now - (timedelta(hours=n) if ago[2] == "h" else timedelta(days=n))
    else:
        try:
            when = (
                datetime.combine(date.fromisoformat(text), time.min, UTC)
                if len(text) == 10
                else datetime.fromisoformat(text)
            )
        except ValueError:
            raise CommandError(
                f"--since {value!r}: give YYYY-MM-DD, an ISO 8601 time, or <N>h / <N>d"
            ) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when > now:
        raise CommandError(f"--since {value!r} is in the future")
    return when


def cmd_recover(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    with session() as s, s.begin():
        count = webhooks.recover(s, actor(s, args.by), args.endpoint_id, since=since, now=now)
    if args.json:
        print_json(
            {"endpoint_id": args.endpoint_id, "since": since.isoformat(), "recovered": count}
        )
    else:
        print(f"{count} failed messages since {since.isoformat()} queued for delivery again.")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    with session() as s, s.begin():
        view = webhooks.update_endpoint(
            s, actor(s, args.by), args.endpoint_id, config=config(), enabled=True
        )
    if args.json:
        print_json(view.to_dict())
    else:
        print(f"Endpoint {view.id} → {view.url} is enabled.")
    return 0
