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

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from core import outbox
from core.audit import service as audit
from core.clock import iso, resolve
from core.errors import Conflict, NotFound
from core.events import EventType
from core.ids import new_id
from core.orgs.models import Organization
from core.orgs.permissions import Actor, Permission
from core.webhooks import catalog, delivery
from core.webhooks.config import WebhookConfig
from core.webhooks.dispatcher import live_secrets
from core.webhooks.models import MessageStatus, WebhookAttempt, WebhookEndpoint, WebhookMessage
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


def queue_test(
    session: Session, actor: Actor, endpoint_id: str, *, now: datetime | None = None
) -> str:
    """Record a `webhook.test` message for the endpoint in the caller's transaction; return its id.

    The message is never claimed by the workers: `deliver_test` sends it, once, after the
    caller commits. Raise NotFound, PermissionDenied.
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
        next_attempt_at=None,  # not due: only deliver_test sends it
        attempt_count=0,
        schedule_step=0,
    )
    session.add(message)
    session.flush()
    return message.id


def deliver_test(
    engine: Engine, message_id: str, *, config: WebhookConfig, now: datetime | None = None
) -> AttemptView:
    """Send a committed test message once and record the attempt; return it.

    Unlike the services, this opens its own short transactions (read the message, then
    record the attempt) and holds none during the HTTP request, which may take the whole
    timeout: on SQLite an open write transaction would block every other writer meanwhile.
    Raise NotFound if the message (or its endpoint) no longer exists, Conflict if it is
    not an unsent test message.
    """
    now = resolve(now)
    with Session(engine) as s, s.begin():
        message = s.get(WebhookMessage, message_id)
        endpoint = s.get(WebhookEndpoint, message.endpoint_id) if message else None
        if message is None or endpoint is None:
            raise NotFound("webhook message not found")
        if message.event_type != EventType.WEBHOOK_TEST or message.attempt_count:
            raise Conflict("only a test message not yet sent can be delivered this way")
        job = delivery.Job(
            message.id,
            endpoint.id,
            endpoint.url,
            message.body,
            message.schedule_step,
            message.attempt_count,
            live_secrets(endpoint, config.secret_key, now),
            trigger="test",
        )

    async def _send() -> delivery.Outcome:
        async with delivery.make_client(config) as client:
            return await delivery.send(client, job, config, now)

    outcome = _run(_send())
    with Session(engine) as s, s.begin():
        if not delivery.record(s, [(job, outcome)], config, retry=False):
            raise NotFound("webhook message not found")
        attempt = s.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.message_id == message_id)
            .order_by(WebhookAttempt.id.desc())
            .limit(1)
        ).scalar_one()
        return _attempt_view(attempt)


def send_test(
    engine: Engine,
    actor: Actor,
    endpoint_id: str,
    *,
    config: WebhookConfig,
    now: datetime | None = None,
) -> AttemptView:
    """Send a signed `webhook.test` event to the endpoint now; return the attempt.

    Takes the engine, not a session: it commits the message (`queue_test`) in one short
    transaction, sends it with no transaction open, and records the attempt in another
    (`deliver_test`); the message is never retried. Raise NotFound, PermissionDenied.
    """
    with Session(engine) as s, s.begin():
        message_id = queue_test(s, actor, endpoint_id, now=now)
    return deliver_test(engine, message_id, config=config, now=now)


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
    """Delete attempts, and finished messages, older than the retention, and idempotency
    records past their 24 hours; return the attempts deleted."""
    catalog.prune_publications(session, now=now)
    cutoff = resolve(now) - timedelta(days=retention_days)
    result = session.execute(delete(WebhookAttempt).where(WebhookAttempt.attempted_at < cutoff))
    session.execute(
        delete(WebhookMessage).where(
            WebhookMessage.created_at < cutoff, WebhookMessage.status != MessageStatus.PENDING
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
