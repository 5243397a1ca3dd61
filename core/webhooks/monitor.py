"""Monitoring and recovery: test sends, attempt history, success rates, replay, recovery.

Reading needs webhooks.read; sending, replaying and recovering need webhooks.manage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core import outbox
from core.audit import service as audit
from core.clock import iso, resolve
from core.errors import Conflict, NotFound
from core.events import EventType
from core.ids import new_id
from core.orgs.models import Organization
from core.orgs.permissions import Actor, Permission
from core.webhooks import delivery
from core.webhooks.config import WebhookConfig
from core.webhooks.dispatcher import live_secrets
from core.webhooks.models import MessageStatus, WebhookAttempt, WebhookMessage
from core.webhooks.service import _load

T = TypeVar("T")


@dataclass(frozen=True)
class AttemptView:
    message_id: str
    endpoint_id: str
    attempted_at: datetime
    success: bool
    status_code: int | None
    latency_ms: float
    response_excerpt: str | None
    error: str | None
    trigger: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "attempted_at": iso(self.attempted_at)}


@dataclass(frozen=True)
class EndpointStats:
    attempts: int
    successes: int
    success_rate: float | None
    pending: int
    failed: int
    last_success_at: datetime | None
    last_failure_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "last_success_at": iso(self.last_success_at),
            "last_failure_at": iso(self.last_failure_at),
        }


def _attempt_view(a: WebhookAttempt) -> AttemptView:
    return AttemptView(
        a.message_id,
        a.endpoint_id,
        a.attempted_at,
        a.success,
        a.status_code,
        a.latency_ms,
        a.response_excerpt,
        a.error,
        a.trigger,
    )


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code
        return pool.submit(asyncio.run, coro).result()


def send_test(
    session: Session,
    actor: Actor,
    endpoint_id: str,
    *,
    config: WebhookConfig,
    now: datetime | None = None,
) -> AttemptView:
    """Send a signed `webhook.test` event to the endpoint now; return the attempt.

    The message and attempt are recorded (no retry). Raise NotFound, PermissionDenied.
    """
    now = resolve(now)
    endpoint = _load(session, actor, endpoint_id, Permission.WEBHOOKS_MANAGE)
    event_id = new_id("evt")
    org = session.get(Organization, endpoint.org_id)
    assert org is not None
    body = outbox.envelope(
        event_id,
        EventType.WEBHOOK_TEST,
        org,
        {"endpoint_id": endpoint.id, "message": "This is a test event."},
        now,
    )
    message = WebhookMessage(
        id=new_id("msg"),
        event_id=event_id,
        org_id=endpoint.org_id,
        endpoint_id=endpoint.id,
        event_type=str(EventType.WEBHOOK_TEST),
        body=body,
        created_at=now,
        status=MessageStatus.PENDING,
        next_attempt_at=None,
        attempt_count=0,
        schedule_step=0,
    )
    session.add(message)
    session.flush()
    job = delivery.Job(
        message.id,
        endpoint.id,
        endpoint.url,
        body,
        0,
        0,
        live_secrets(endpoint, config.secret_key, now),
        trigger="test",
    )

    async def _send() -> delivery.Outcome:
        async with delivery.make_client(config) as client:
            return await delivery.send(client, job, config, now)

    outcome = _run(_send())
    delivery.record(session, [(job, outcome)], config, retry=False)
    attempt = session.execute(
        select(WebhookAttempt)
        .where(WebhookAttempt.message_id == message.id)
        .order_by(WebhookAttempt.id.desc())
    ).scalar_one()
    return _attempt_view(attempt)


def replay(session: Session, actor: Actor, message_id: str, *, now: datetime | None = None) -> str:
    """Queue one message again, at once and with a fresh retry schedule; return its id.

    Raise NotFound, PermissionDenied, or Conflict if its endpoint is disabled.
    """
    now = resolve(now)
    message = session.get(WebhookMessage, message_id)
    if message is None:
        raise NotFound("webhook message not found")
    endpoint = _load(session, actor, message.endpoint_id, Permission.WEBHOOKS_MANAGE)
    if not endpoint.enabled:
        raise Conflict("the endpoint is disabled: enable it before replaying messages")
    message.status = MessageStatus.PENDING
    message.next_attempt_at = now
    message.schedule_step = 0
    audit.record(
        session,
        endpoint.org_id,
        actor,
        EventType.WEBHOOK_MESSAGE_REPLAYED,
        target=("webhook_message", message.id),
        details={"endpoint_id": endpoint.id, "event_type": message.event_type},
        now=now,
    )
    session.flush()
    return message.id


def recover(
    session: Session,
    actor: Actor,
    endpoint_id: str,
    *,
    since: datetime,
    now: datetime | None = None,
) -> int:
    """Queue again every failed message of the endpoint created since `since`; return how many.

    Raise NotFound, PermissionDenied, or Conflict if the endpoint is disabled.
    """
    now = resolve(now)
    since = resolve(since)
    endpoint = _load(session, actor, endpoint_id, Permission.WEBHOOKS_MANAGE)
    if not endpoint.enabled:
        raise Conflict("the endpoint is disabled: enable it before recovering messages")
    result = session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.endpoint_id == endpoint_id,
            WebhookMessage.status == MessageStatus.FAILED,
            WebhookMessage.created_at >= since,
        )
        .values(status=MessageStatus.PENDING, next_attempt_at=now, schedule_step=0)
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit.record(
        session,
        endpoint.org_id,
        actor,
        EventType.WEBHOOK_MESSAGE_REPLAYED,
        target=("webhook_endpoint", endpoint_id),
        details={"since": iso(since), "messages": count},
        now=now,
    )
    return count


def list_attempts(
    session: Session, actor: Actor, endpoint_id: str, *, limit: int = 50
) -> list[AttemptView]:
    """Return the endpoint's most recent attempts, newest first."""
    _load(session, actor, endpoint_id, Permission.WEBHOOKS_READ)
    rows = session.execute(
        select(WebhookAttempt)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.attempted_at.desc(), WebhookAttempt.id.desc())
        .limit(max(1, min(limit, 1000)))
    ).scalars()
    return [_attempt_view(a) for a in rows]


def endpoint_stats(
    session: Session,
    actor: Actor,
    endpoint_id: str,
    *,
    since: datetime | None = None,
    now: datetime | None = None,
) -> EndpointStats:
    """Return attempts and success rate since `since` (default 24 h), message counts, last times."""
    now = resolve(now)
    since = since or now - timedelta(days=1)
    endpoint = _load(session, actor, endpoint_id, Permission.WEBHOOKS_READ)
    total, ok = session.execute(
        select(func.count(), func.count().filter(WebhookAttempt.success.is_(True))).where(
            WebhookAttempt.endpoint_id == endpoint_id, WebhookAttempt.attempted_at >= since
        )
    ).one()
    counts = dict(
        session.execute(
            select(WebhookMessage.status, func.count())
            .where(WebhookMessage.endpoint_id == endpoint_id)
            .group_by(WebhookMessage.status)
        ).all()
    )
    return EndpointStats(
        attempts=int(total),
        successes=int(ok),
        success_rate=(ok / total) if total else None,
        pending=int(counts.get(MessageStatus.PENDING, 0)),
        failed=int(counts.get(MessageStatus.FAILED, 0)),
        last_success_at=endpoint.last_success_at,
        last_failure_at=endpoint.last_failure_at,
    )


def prune(session: Session, *, retention_days: int, now: datetime | None = None) -> int:
    """Delete attempts, and finished messages, older than the retention; return attempts deleted."""
    cutoff = resolve(now) - timedelta(days=retention_days)
    result = session.execute(delete(WebhookAttempt).where(WebhookAttempt.attempted_at < cutoff))
    session.execute(
        delete(WebhookMessage).where(
            WebhookMessage.created_at < cutoff, WebhookMessage.status != MessageStatus.PENDING
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
