"""Webhook endpoints: create, list, change, delete, rotate secrets; test, replay, recover, stats.

Every function checks the actor's role (webhooks.manage to change, webhooks.read to look)
and writes an audit row for each change, in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core import validation
from core.audit import service as audit
from core.clock import iso, resolve
from core.errors import Conflict, NotFound, ValidationError
from core.events import EventType
from core.ids import new_id
from core.orgs.permissions import Actor, Permission, check
from core.webhooks import egress, health, signing
from core.webhooks.catalog import subscribable_events
from core.webhooks.config import WebhookConfig
from core.webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

MAX_ENDPOINTS_PER_ORG = 50


@dataclass(frozen=True)
class EndpointView:
    id: str
    org_id: str
    url: str
    description: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_by: str | None
    created_at: datetime
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "events": self.events,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "created_at": iso(self.created_at),
            "failing_since": iso(self.failing_since),
            "last_success_at": iso(self.last_success_at),
            "last_failure_at": iso(self.last_failure_at),
        }


def _view(e: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        e.id,
        e.org_id,
        e.url,
        e.description,
        list((e.event_types or {}).get("types", [])),
        e.enabled,
        e.disabled_reason,
        e.created_by,
        e.created_at,
        e.failing_since,
        e.last_success_at,
        e.last_failure_at,
    )


def parse_events(session: Session, value: str | list[str] | tuple[str, ...]) -> list[str]:
    """Return the distinct event types named (a list or comma-separated text); raise
    ValidationError if one is neither built in nor in the catalog."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    if not names:
        raise ValidationError("subscribe to at least one event type", field="events")
    known = subscribable_events(session)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValidationError(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(known)}",
            field="events",
        )
    return list(dict.fromkeys(names))


def _description(value: str | None) -> str:
    if value is None or not value.strip():
        return ""
    return validation.display_text(value, "description", max_len=300)


def _load(
    session: Session, actor: Actor, endpoint_id: str, permission: Permission, lock: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    endpoint = session.execute(query).scalar()
    if endpoint is None:
        raise NotFound("webhook endpoint not found")
    try:
        check(session, endpoint.org_id, actor, permission)
    except NotFound:
        raise NotFound("webhook endpoint not found") from None
    return endpoint


def _sealed(config: WebhookConfig, endpoint_id: str, secret: str, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id("whs"),
        "ciphertext": signing.encrypt(config.secret_key, secret, endpoint_id),
        "created_at": iso(now),
        "expires_at": None,
    }


def create_endpoint(
    session: Session,
    org_id: str,
    actor: Actor,
    *,
    url: str,
    events: str | list[str],
    config: WebhookConfig,
    description: str | None = None,
    now: datetime | None = None,
) -> tuple[EndpointView, str]:
    """Create an endpoint; return its view and its signing secret (shown only now).

    Raise ValidationError for a bad URL, event list or description, PermissionDenied
    without webhooks.manage, Conflict past the per-organization limit.
    """
    check(session, org_id, actor, Permission.WEBHOOKS_MANAGE)
    now = resolve(now)
    clean_url = egress.validate_url(
        url, allow_http=config.allow_http, allow_private=config.allow_private
    )
    types = parse_events(session, events)
    text = _description(description)
    count = session.execute(
        select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id)
    ).scalar_one()
    if count >= MAX_ENDPOINTS_PER_ORG:
        raise Conflict(f"an organization may have at most {MAX_ENDPOINTS_PER_ORG} endpoints")
    endpoint_id = new_id("whe")
    secret = signing.generate_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        org_id=org_id,
        url=clean_url,
        description=text,
        event_types={"types": types},
        secrets={"secrets": [_sealed(config, endpoint_id, secret, now)]},
        enabled=True,
        created_by=actor.user_id,
        created_at=now,
    )
    session.add(endpoint)
    session.flush()
    audit.record(
        session,
        org_id,
        actor,
        EventType.WEBHOOK_ENDPOINT_CREATED,
        target=("webhook_endpoint", endpoint_id),
        details={"url": clean_url, "events": types, "description": text},
        now=now,
    )
    return _view(endpoint), secret


def list_endpoints(session: Session, org_id: str, actor: Actor) -> list[EndpointView]:
    """Return the organization's endpoints, oldest first; raise PermissionDenied without read."""
    check(session, org_id, actor, Permission.WEBHOOKS_READ)
    rows = session.execute(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.org_id == org_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    ).scalars()
    return [_view(e) for e in rows]


def get_endpoint(session: Session, actor: Actor, endpoint_id: str) -> EndpointView:
    """Return one endpoint; raise NotFound unless it is in an organization of the actor."""
    return _view(_load(session, actor, endpoint_id, Permission.WEBHOOKS_READ))


def update_endpoint(
    session: Session,
    actor: Actor,
    endpoint_id: str,
    *,
    config: WebhookConfig,
    url: str | None = None,
    events: str | list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    now: datetime | None = None,
) -> EndpointView:
    """Change an endpoint's URL, events, description or enabled state; return its view.

    Enabling clears the failure run. Raise ValidationError or PermissionDenied.
    """
    now = resolve(now)
    endpoint = _load(session, actor, endpoint_id, Permission.WEBHOOKS_MANAGE, lock=True)
    changes: dict[str, Any] = {}
    if url is not None:
        clean = egress.validate_url(
            url, allow_http=config.allow_http, allow_private=config.allow_private
        )
        if clean != endpoint.url:
            changes["url"] = [endpoint.url, clean]
            endpoint.url = clean
    if events is not None:
        types = parse_events(session, events)
        old = (endpoint.event_types or {}).get("types", [])
        if types != old:
            changes["events"] = [old, types]
            endpoint.event_types = {"types": types}
    if description is not None:
        text = _description(description)
        if text != endpoint.description:
            changes["description"] = [endpoint.description, text]
            endpoint.description = text
    if enabled is not None and enabled != endpoint.enabled:
        changes["enabled"] = [endpoint.enabled, enabled]
        if enabled:
            endpoint.enabled = True
            endpoint.disabled_reason = None
            endpoint.disabled_at = None
            endpoint.failing_since = None
            endpoint.failing_warned_at = None
        else:
            health.disable(session, endpoint, f"disabled by {actor.email}", now, actor)
            return _view(endpoint)
    if changes:
        audit.record(
            session,
            endpoint.org_id,
            actor,
            EventType.WEBHOOK_ENDPOINT_UPDATED,
            target=("webhook_endpoint", endpoint.id),
            details=changes,
            now=now,
        )
    session.flush()
    return _view(endpoint)


def delete_endpoint(
    session: Session, actor: Actor, endpoint_id: str, *, now: datetime | None = None
) -> None:
    """Delete an endpoint with its messages and attempts. Raise NotFound or PermissionDenied."""
    now = resolve(now)
    endpoint = _load(session, actor, endpoint_id, Permission.WEBHOOKS_MANAGE, lock=True)
    org_id, url = endpoint.org_id, endpoint.url
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id))
    session.execute(delete(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint_id))
    session.delete(endpoint)
    session.flush()
    audit.record(
        session,
        org_id,
        actor,
        EventType.WEBHOOK_ENDPOINT_DELETED,
        target=("webhook_endpoint", endpoint_id),
        details={"url": url},
        now=now,
    )


def rotate_secret(
    session: Session,
    actor: Actor,
    endpoint_id: str,
    *,
    config: WebhookConfig,
    overlap: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """Give the endpoint a new secret; the previous ones keep signing for `overlap` (24 h).

    Return the new secret (shown only now). Raise NotFound or PermissionDenied.
    """
    now = resolve(now)
    overlap = config.rotation_overlap if overlap is None else overlap
    if overlap < timedelta(0) or overlap > timedelta(days=7):
        raise ValidationError("the overlap must be between 0 and 7 days", field="overlap")
    endpoint = _load(session, actor, endpoint_id, Permission.WEBHOOKS_MANAGE, lock=True)
    old_until = now + overlap
    kept = []
    for item in (endpoint.secrets or {}).get("secrets", []):
        expires = item.get("expires_at")
        if expires is not None and datetime.fromisoformat(expires) <= now:
            continue  # already retired: dropped for good
        if overlap > timedelta(0):
            until = (
                old_until if expires is None else min(datetime.fromisoformat(expires), old_until)
            )
            kept.append({**item, "expires_at": iso(until)})
    secret = signing.generate_secret()
    endpoint.secrets = {"secrets": [_sealed(config, endpoint.id, secret, now), *kept]}
    audit.record(
        session,
        endpoint.org_id,
        actor,
        EventType.WEBHOOK_SECRET_ROTATED,
        target=("webhook_endpoint", endpoint.id),
        details={"old_valid_until": iso(old_until) if kept else None},
        now=now,
    )
    session.flush()
    return secret
