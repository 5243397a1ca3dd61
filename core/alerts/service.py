"""Alerts: the expiry scan, endpoint-health alerts, the console banner's open alerts, e-mail.

`scan_expiry` emits `api_key.expiring` once per key and lead time and `api_key.expired`
once per key. Exactly-once holds across restarts and concurrent scanners: keys are
taken with ``FOR UPDATE SKIP LOCKED`` and each alert row is unique on (kind, subject,
lead time), inserted with ON CONFLICT DO NOTHING in the same transaction as its event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core import outbox
from core.alerts.models import Alert
from core.clock import iso, resolve
from core.events import EventType
from core.keys.models import ApiKey
from core.keys.policy import alert_leads
from core.orgs.models import Membership, Organization, Role, User
from core.orgs.permissions import Actor, Permission, can, check

# An expired key is alerted only if it expired this recently (no flood on first start).
EXPIRED_LOOKBACK = timedelta(days=7)
SCAN_BATCH = 500


def raise_alert(
    session: Session,
    org_id: str,
    kind: str,
    subject_id: str,
    occurrence: int,
    message: str,
    *,
    now: datetime,
    severity: str = "warning",
    notified: bool = True,
) -> Alert | None:
    """Record an alert unless the same (kind, subject, occurrence) exists; return it or None."""
    values = {
        "org_id": org_id,
        "kind": str(kind),
        "subject_id": subject_id,
        "occurrence": occurrence,
        "severity": severity,
        "message": message[:500],
        "created_at": now,
        "notified": notified,
    }
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert_fn(Alert)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "subject_id", "occurrence"])
        .returning(Alert.id)
    )
    new_id = session.execute(stmt).scalar()
    if new_id is None:
        return None
    return session.get(Alert, new_id)


@dataclass(frozen=True)
class ScanResult:
    expiring: int
    expired: int
    alert_ids: list[int]


def _key_data(key: ApiKey, **extra: Any) -> dict[str, Any]:
    return {
        "key_id": key.id,
        "name": key.name,
        "masked": key.masked,
        "expires_at": iso(key.expires_at),
        **extra,
    }


def scan_expiry(session: Session, *, now: datetime | None = None) -> ScanResult:
    """Emit due expiry alerts for every organization; return what was emitted.

    When several lead times became due at once (the scan was not running), only the
    nearest one is sent; the others are recorded as passed.
    """
    now = resolve(now)
    leads = [
        int(d)
        for v in session.execute(select(Organization.alert_lead_days)).scalars()
        for d in ((v or {}).get("days") or [30])
    ]
    max_lead = timedelta(days=max(leads, default=30))
    keys = (
        session.execute(
            select(ApiKey)
            .where(
                ApiKey.expires_at > now - EXPIRED_LOOKBACK,
                ApiKey.expires_at <= now + max_lead,
                # A revoked key, or one rolled and in its grace period, is not alerted.
                ApiKey.revoked_at.is_(None),
            )
            .order_by(ApiKey.expires_at)
            .limit(SCAN_BATCH * 20)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    orgs: dict[str, Organization] = {}
    expiring = expired = 0
    alert_ids: list[int] = []
    for key in keys:
        org = orgs.get(key.org_id) or session.get(Organization, key.org_id)
        assert org is not None
        orgs[org.id] = org
        if key.expires_at <= now:
            alert = raise_alert(
                session,
                org.id,
                EventType.API_KEY_EXPIRED,
                key.id,
                0,
                f"API key {key.name!r} ({key.masked}) expired at {iso(key.expires_at)}.",
                now=now,
                severity="error",
            )
            if alert is not None:
                outbox.publish(session, org.id, EventType.API_KEY_EXPIRED, _key_data(key), now=now)
                expired += 1
                alert_ids.append(alert.id)
            continue
        leads = alert_leads(org.lead_days, key.created_at, key.expires_at)
        due = [d for d in leads if key.expires_at - now <= timedelta(days=d)]
        if not due:
            continue
        nearest = min(due)
        for lead in sorted(due, reverse=True):
            days_left = (key.expires_at - now).total_seconds() / 86400
            alert = raise_alert(
                session,
                org.id,
                EventType.API_KEY_EXPIRING,
                key.id,
                lead,
                f"API key {key.name!r} ({key.masked}) expires at {iso(key.expires_at)} "
                f"(in {days_left:.1f} days).",
                now=now,
                notified=lead == nearest,
            )
            if alert is None or lead != nearest:
                continue
            data = _key_data(key, lead_days=lead, days_left=round(days_left, 2))
            outbox.publish(session, org.id, EventType.API_KEY_EXPIRING, data, now=now)
            expiring += 1
            alert_ids.append(alert.id)
    return ScanResult(expiring, expired, alert_ids)


def scan_endpoints(
    session: Session,
    *,
    failing_after: timedelta,
    disable_after: timedelta,
    now: datetime | None = None,
) -> int:
    """Warn or disable endpoints failing past the thresholds; return how many were checked."""
    from core.webhooks import health
    from core.webhooks.models import WebhookEndpoint

    now = resolve(now)
    endpoints = (
        session.execute(
            select(WebhookEndpoint)
            .where(
                WebhookEndpoint.enabled.is_(True),
                WebhookEndpoint.failing_since.is_not(None),
                WebhookEndpoint.failing_since <= now - failing_after,
            )
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    for endpoint in endpoints:
        health.check_thresholds(session, endpoint, now, failing_after, disable_after)
    return len(endpoints)


@dataclass(frozen=True)
class AlertView:
    id: int
    kind: str
    severity: str
    subject_id: str
    message: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created_at": iso(self.created_at)}


def open_alerts(
    session: Session, org_id: str, actor: Actor, now: datetime | None = None
) -> list[AlertView]:
    """Return the alerts a console banner shows the actor now, most severe and newest first.

    Expiring alerts stay open until the key expires or is revoked; expired ones for 7 days;
    endpoint alerts while the endpoint is still failing or disabled (only for roles that
    may read webhooks). Raise NotFound for a non-member.
    """
    from core.webhooks.models import WebhookEndpoint

    role = check(session, org_id, actor, Permission.KEYS_READ)
    now = resolve(now)
    see_webhooks = role is None or can(role, Permission.WEBHOOKS_READ)
    rows = session.execute(
        select(Alert, ApiKey)
        .outerjoin(ApiKey, ApiKey.id == Alert.subject_id)
        .where(
            Alert.org_id == org_id,
            Alert.notified.is_(True),
            Alert.created_at > now - timedelta(days=60),
        )
        .order_by(Alert.created_at.desc())
        .limit(500)
    ).all()
    endpoints = {
        e.id: e
        for e in session.execute(
            select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id)
        ).scalars()
    }
    out: list[AlertView] = []
    seen: set[tuple[str, str]] = set()
    for alert, key in rows:
        if (alert.kind, alert.subject_id) in seen:
            continue
        keep = False
        if alert.kind == EventType.API_KEY_EXPIRING and key is not None:
            keep = key.revoked_at is None and key.expires_at > now
        elif alert.kind == EventType.API_KEY_EXPIRED and key is not None:
            keep = key.revoked_at is None and now - key.expires_at < EXPIRED_LOOKBACK
        elif see_webhooks and alert.subject_id in endpoints:
            endpoint = endpoints[alert.subject_id]
            if alert.kind == EventType.WEBHOOK_ENDPOINT_DISABLED:
                keep = not endpoint.enabled
            else:
                keep = endpoint.enabled and endpoint.failing_since is not None
        if keep:
            seen.add((alert.kind, alert.subject_id))
            out.append(
                AlertView(
                    alert.id,
                    alert.kind,
                    alert.severity,
                    alert.subject_id,
                    alert.message,
                    alert.created_at,
                )
            )
    order = {"error": 0, "warning": 1}
    return sorted(out, key=lambda a: (order.get(a.severity, 2), -a.created_at.timestamp()))


def recipients(session: Session, alert: Alert) -> list[str]:
    """Return the e-mail addresses an alert goes to: the key's creator and the org's admins."""
    emails = set(
        session.execute(
            select(User.email)
            .join(Membership, Membership.user_id == User.id)
            .where(
                Membership.org_id == alert.org_id,
                Membership.role == Role.ADMIN,
                User.disabled.is_(False),
            )
        ).scalars()
    )
    creator = session.execute(
        select(User.email)
        .join(ApiKey, ApiKey.created_by == User.id)
        .join(Membership, and_(Membership.user_id == User.id, Membership.org_id == alert.org_id))
        .where(ApiKey.id == alert.subject_id, User.disabled.is_(False))
    ).scalar()
    if creator:
        emails.add(creator)
    return sorted(emails)


def pending_emails(session: Session, *, limit: int = 100) -> list[tuple[Alert, list[str]]]:
    """Return alerts not yet e-mailed, locked so only one worker sends each, with recipients."""
    alerts = (
        session.execute(
            select(Alert)
            .where(Alert.emailed_at.is_(None), Alert.notified.is_(True))
            .order_by(Alert.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    return [(a, recipients(session, a)) for a in alerts]
