"""The transactional outbox: events become webhook messages in the caller's transaction.

`publish` is called in the transaction of the change that caused the event, so a
committed change always has its messages and a rolled-back one never does. It writes one
`WebhookMessage` per enabled endpoint of the organization subscribed to the event type,
each carrying the same JSON envelope: ``id``, ``type``, ``timestamp``, ``org``, ``data``
(and ``created_at``, the same time as ``timestamp`` under its former name, kept for one
release so receivers can move to the Standard Webhooks field).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from core.clock import iso, resolve
from core.errors import ValidationError
from core.ids import new_id
from core.orgs.models import Organization

MAX_PAYLOAD_BYTES = 64 * 1024
FORBIDDEN_DATA_KEYS = frozenset({"key", "secret", "password", "token", "pepper", "signing_secret"})
# Delay before the first attempt (the retry schedule's first step); the dispatcher's
# configuration may differ only for retries.
FIRST_ATTEMPT_DELAY = timedelta(0)


class Named(Protocol):
    """An organization as the envelope shows it (`Organization`, or its id and name)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


def envelope(
    event_id: str, event_type: str, org: Named, data: dict[str, Any], now: datetime
) -> str:
    """Return the JSON body of an event; raise ValidationError if it is too large or unsafe."""
    leaked = FORBIDDEN_DATA_KEYS & {str(k).lower() for k in data}
    if leaked:
        raise ValidationError(f"event data must not carry secrets: {sorted(leaked)}", field="data")
    stamp = iso(now)
    body = {
        "id": event_id,
        "type": str(event_type),
        "timestamp": stamp,
        "created_at": stamp,  # the former name of `timestamp`; removed in the next release
        "org": {"id": org.id, "name": org.name},
        "data": data,
    }
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"event data must be JSON: {exc}", field="data") from None
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise ValidationError(
            f"event payload must be at most {MAX_PAYLOAD_BYTES} bytes", field="data"
        )
    return text


def publish(
    session: Session, org_id: str, event_type: str, data: dict[str, Any], *, now: datetime
) -> list[str]:
    """Queue `event_type` with `data` for the organization's subscribed, enabled endpoints.

    Return the ids of the messages written (empty when no endpoint subscribes). Raise
    ValidationError if the data is not JSON, too large, or carries a field named like a
    secret.
    """
    now = resolve(now)
    event_type = str(event_type)
    org = session.get(Organization, org_id)
    if org is None:
        raise ValidationError("organization not found", field="org_id")
    event_id = new_id("evt")
    body = envelope(event_id, event_type, org, data, now)
    return queue(session, org_id, event_type, event_id, body, now=now)


def subscribers(session: Session, org_id: str, event_type: str) -> list[str]:
    """Return the ids of the organization's enabled endpoints subscribed to `event_type`."""
    from core.webhooks.models import WebhookEndpoint

    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.org_id == org_id, WebhookEndpoint.enabled.is_(True)
        )
    ).all()
    return sorted(eid for eid, types in endpoints if event_type in (types or {}).get("types", ()))


def message_rows(
    org_id: str,
    event_type: str,
    event_id: str,
    body: str,
    endpoint_ids: list[str],
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    """Return the outbox rows of one event (its `envelope` body) for these endpoints."""
    from core.webhooks.models import MessageStatus

    return [
        {
            "id": new_id("msg"),
            "event_id": event_id,
            "org_id": org_id,
            "endpoint_id": endpoint_id,
            "event_type": event_type,
            "body": body,
            "created_at": now,
            "status": MessageStatus.PENDING,
            "next_attempt_at": now + FIRST_ATTEMPT_DELAY,
            "attempt_count": 0,
            "schedule_step": 0,
        }
        for endpoint_id in endpoint_ids
    ]


_COLUMNS = (
    "id",
    "event_id",
    "org_id",
    "endpoint_id",
    "event_type",
    "body",
    "created_at",
    "status",
    "next_attempt_at",
    "attempt_count",
    "schedule_step",
)


def write(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert outbox rows (`message_rows`) in the session's transaction, many at a time:
    PostgreSQL takes them in one COPY (a row costs microseconds, not a statement)."""
    from core.webhooks.models import WebhookMessage

    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql" and len(rows) > 1:
        raw: Any = connection.connection.dbapi_connection
        statement = f"COPY webhook_messages ({', '.join(_COLUMNS)}) FROM STDIN"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[c] for c in _COLUMNS])
        return
    table = cast(Table, WebhookMessage.__table__)
    connection.execute(insert(table), rows)


def queue(
    session: Session, org_id: str, event_type: str, event_id: str, body: str, *, now: datetime
) -> list[str]:
    """Write one message of the event's `body` (an `envelope`) per enabled endpoint of the
    organization subscribed to `event_type`; return their ids (empty when none subscribes)."""
    targets = subscribers(session, org_id, event_type)
    rows = message_rows(org_id, event_type, event_id, body, targets, now=now)
    write(session, rows)
    return [r["id"] for r in rows]
