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
from typing import Any

from sqlalchemy import insert, select
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


def envelope(
    event_id: str, event_type: str, org: Organization, data: dict[str, Any], now: datetime
) -> str:
    """Return the JSON body of an event; raise ValidationError if it is too large or unsafe."""
    leaked = FORBIDDEN_DATA_KEYS & {str(k).lower() for k in data}
    if leaked:
        raise ValidationError(f"event data must not carry secrets: {sorted(leaked)}", field="data")
    body = {
        "id": event_id,
        "type": str(event_type),
        "timestamp": iso(now),
        "created_at": iso(now),  # the former name of `timestamp`; removed in the next release
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


def queue(
    session: Session, org_id: str, event_type: str, event_id: str, body: str, *, now: datetime
) -> list[str]:
    """Write one message of the event's `body` (an `envelope`) per enabled endpoint of the
    organization subscribed to `event_type`; return their ids (empty when none subscribes)."""
    from core.webhooks.models import MessageStatus, WebhookEndpoint, WebhookMessage

    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.org_id == org_id, WebhookEndpoint.enabled.is_(True)
        )
    ).all()
    targets = [eid for eid, types in endpoints if event_type in (types or {}).get("types", ())]
    if not targets:
        return []
    rows = [
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
        for endpoint_id in sorted(targets)
    ]
    session.execute(insert(WebhookMessage), rows)
    return [r["id"] for r in rows]
