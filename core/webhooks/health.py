"""Endpoint health: the failing warning and the switch-off, after the configured spans of
continuous failure (by default 24 hours and 5 days).

Both raise an alert for the organization (console banner, e-mail) and publish an event
(`webhook.endpoint.failing`, `webhook.endpoint.disabled`) to its other endpoints.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from core import outbox
from core.alerts import service as alerts
from core.audit import service as audit
from core.clock import iso
from core.events import EventType
from core.orgs.permissions import Actor
from core.webhooks.models import MessageStatus, WebhookEndpoint, WebhookMessage

SYSTEM = Actor.system("webhooks")


def _episode(endpoint: WebhookEndpoint, now: datetime) -> int:
    start = endpoint.failing_since or now
    return int(start.timestamp())


def warn_failing(
    session: Session, endpoint: WebhookEndpoint, now: datetime, disable_after: timedelta
) -> None:
    """Mark the endpoint warned, publish `webhook.endpoint.failing` and raise an alert
    saying when the endpoint will be switched off (`disable_after` of failures)."""
    endpoint.failing_warned_at = now
    data = {
        "endpoint_id": endpoint.id,
        "url": endpoint.url,
        "failing_since": iso(endpoint.failing_since),
    }
    outbox.publish(session, endpoint.org_id, EventType.WEBHOOK_ENDPOINT_FAILING, data, now=now)
    alerts.raise_alert(
        session,
        endpoint.org_id,
        EventType.WEBHOOK_ENDPOINT_FAILING,
        endpoint.id,
        _episode(endpoint, now),
        f"Webhook endpoint {endpoint.url} has been failing since {iso(endpoint.failing_since)}; "
        f"it will be disabled after {_duration(disable_after)} of failures.",
        now=now,
    )


def disable(
    session: Session,
    endpoint: WebhookEndpoint,
    reason: str,
    now: datetime,
    actor: Actor = SYSTEM,
) -> None:
    """Disable the endpoint for `reason`: fail its pending messages, audit, publish, alert."""
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:300]
    endpoint.disabled_at = now
    session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.endpoint_id == endpoint.id,
            WebhookMessage.status == MessageStatus.PENDING,
        )
        .values(status=MessageStatus.FAILED, next_attempt_at=None, last_error="endpoint disabled")
        .execution_options(synchronize_session=False)
    )
    details = {"endpoint_id": endpoint.id, "url": endpoint.url, "reason": endpoint.disabled_reason}
    audit.record(
        session,
        endpoint.org_id,
        actor,
        EventType.WEBHOOK_ENDPOINT_DISABLED,
        target=("webhook_endpoint", endpoint.id),
        details=details,
        now=now,
    )
    session.flush()
    outbox.publish(session, endpoint.org_id, EventType.WEBHOOK_ENDPOINT_DISABLED, details, now=now)
    alerts.raise_alert(
        session,
        endpoint.org_id,
        EventType.WEBHOOK_ENDPOINT_DISABLED,
        endpoint.id,
        int(now.timestamp()),
        f"Webhook endpoint {endpoint.url} was disabled: {endpoint.disabled_reason}",
        now=now,
        severity="error",
    )


def apply_outcome(
    session: Session,
    endpoint: WebhookEndpoint,
    success: bool,
    at: datetime,
    *,
    failing_after: timedelta,
    disable_after: timedelta,
) -> None:
    """Update the endpoint's health after an attempt at `at`; warn or disable on thresholds."""
    if success:
        endpoint.last_success_at = at
        endpoint.failing_since = None
        endpoint.failing_warned_at = None
        return
    endpoint.last_failure_at = at
    if endpoint.failing_since is None:
        endpoint.failing_since = at
        return
    check_thresholds(session, endpoint, at, failing_after, disable_after)


def check_thresholds(
    session: Session,
    endpoint: WebhookEndpoint,
    now: datetime,
    failing_after: timedelta,
    disable_after: timedelta,
) -> None:
    """Warn an endpoint failing for `failing_after`, disable one failing for `disable_after`."""
    if not endpoint.enabled or endpoint.failing_since is None:
        return
    failing_for = now - endpoint.failing_since
    if failing_for >= disable_after:
        disable(session, endpoint, f"failed continuously for {_duration(disable_after)}", now)
    elif failing_for >= failing_after and endpoint.failing_warned_at is None:
        warn_failing(session, endpoint, now, disable_after)


def _duration(span: timedelta) -> str:
    """Return '5 days', '1 day' or '36 hours' for a threshold."""
    hours = span.total_seconds() / 3600
    if hours >= 24 and hours % 24 == 0:
        days = int(hours // 24)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{hours:g} hour{'s' if hours != 1 else ''}"
