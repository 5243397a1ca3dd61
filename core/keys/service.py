"""Create, list, roll and revoke API keys, under the organization's expiry policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import outbox, validation
from core.audit import service as audit
from core.clock import iso, resolve
from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.events import EventType
from core.ids import new_id
from core.keys import format as keyformat
from core.keys.models import ApiKey, KeyChange
from core.keys.policy import (
    GRACE_PERIODS,
    KeyStatus,
    key_status,
    may_manage,
    parse_grace,
    resolve_expiry,
)
from core.orgs.models import Organization, User
from core.orgs.permissions import Actor, Permission, check
from core.orgs.service import _lock_org


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: `key` is the only time the full secret exists outside a hash."""

    id: str
    key: str
    name: str
    masked: str
    created_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:
        return f"NewKey(id={self.id!r}, name={self.name!r}, masked={self.masked!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "masked": self.masked,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True)
class KeyView:
    id: str
    name: str
    masked: str
    status: str
    created_by: str | None  # creator's email
    created_by_id: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoke_reason: str | None
    rolled_from: str | None
    last_used_at: datetime | None
    usage_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "masked": self.masked,
            "status": self.status,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "revoke_reason": self.revoke_reason,
            "rolled_from": self.rolled_from,
            "last_used_at": iso(self.last_used_at),
            "usage_count": self.usage_count,
        }


def _insert_key(
    session: Session,
    org: Organization,
    actor: Actor,
    name: str,
    expires_at: datetime,
    now: datetime,
    pepper: bytes,
    rolled_from: str | None,
) -> tuple[ApiKey, str]:
    secret = keyformat.generate()
    prefix, last4 = keyformat.display_parts(secret)
    row = ApiKey(
        id=new_id("key"),
        org_id=org.id,
        name=name,
        key_hash=keyformat.hash_key(secret, pepper),
        prefix=prefix,
        last4=last4,
        created_by=actor.user_id,
        created_at=now,
        expires_at=expires_at,
        rolled_from=rolled_from,
        usage_count=0,
    )
    session.add(row)
    session.flush()
    return row, secret


def create_key(
    session: Session,
    org_id: str,
    actor: Actor,
    *,
    name: str,
    expires: str | int | date | datetime,
    pepper: bytes,
    now: datetime | None = None,
) -> NewKey:
    """Create a key; return it with the full secret, which is never available again.

    Raise ValidationError for a bad name or expiry, PermissionDenied without keys.create.
    """
    check(session, org_id, actor, Permission.KEYS_CREATE)
    now = resolve(now)
    org = session.get(Organization, org_id)
    assert org is not None
    key_name = validation.display_text(name, "key name")
    expires_at = resolve_expiry(expires, now, org.max_key_lifetime_days)
    row, secret = _insert_key(session, org, actor, key_name, expires_at, now, pepper, None)
    details = {"name": key_name, "masked": row.masked, "expires_at": iso(expires_at)}
    audit.record(
        session,
        org_id,
        actor,
        EventType.API_KEY_CREATED,
        target=("api_key", row.id),
        details=details,
        now=now,
    )
    outbox.publish(
        session, org_id, EventType.API_KEY_CREATED, {"key_id": row.id, **details}, now=now
    )
    return NewKey(row.id, secret, key_name, row.masked, now, expires_at)


def _load_for_change(session: Session, actor: Actor, key_id: str) -> ApiKey:
    """Return the key locked for update if the actor may manage it."""
    row = session.execute(
        select(ApiKey)
        .where(ApiKey.id == key_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar()
    if row is None:
        raise NotFound("API key not found")
    try:
        role = check(session, row.org_id, actor, Permission.KEYS_MANAGE_OWN)
    except NotFound:
        raise NotFound("API key not found") from None
    if not may_manage(role, actor, row.created_by):
        raise PermissionDenied(Permission.KEYS_MANAGE_ANY, role)
    return row


def revoke_key(
    session: Session,
    actor: Actor,
    key_id: str,
    *,
    reason: str | None = None,
    now: datetime | None = None,
) -> KeyView:
    """Revoke a key at once; return its new view.

    Members may revoke keys they created, admins any key. Raise NotFound for a key of an
    organization the actor does not belong to, Conflict if it is already revoked.
    """
    now = resolve(now)
    row = _load_for_change(session, actor, key_id)
    if row.revoked_at is not None and row.revoked_at <= now:
        raise Conflict("this API key is already revoked")
    why = (
        validation.display_text(reason, "reason", max_len=500)
        if reason and reason.strip()
        else None
    )
    row.revoked_at = now
    row.revoked_by = actor.user_id
    row.revoke_reason = why
    _record_change(session, row, "revoked", now)
    details = {"name": row.name, "masked": row.masked, "reason": why}
    audit.record(
        session,
        row.org_id,
        actor,
        EventType.API_KEY_REVOKED,
        target=("api_key", row.id),
        details=details,
        now=now,
    )
    outbox.publish(
        session,
        row.org_id,
        EventType.API_KEY_REVOKED,
        {"key_id": row.id, **details, "revoked_at": iso(now)},
        now=now,
    )
    return _view_one(session, row, now)


def roll_key(
    session: Session,
    actor: Actor,
    key_id: str,
    *,
    grace: str | timedelta,
    pepper: bytes,
    now: datetime | None = None,
) -> tuple[NewKey, KeyView]:
    """Issue a new key with the same name; the old one works for the grace period.

    The new key gets the old key's lifetime (same duration, capped by the organization's
    maximum). The old key's grace never outlasts its own expiry. Return (new key, old key
    view). Raise Conflict for a revoked or expired key.
    """
    now = resolve(now)
    period = grace if isinstance(grace, timedelta) else parse_grace(grace)
    if period not in GRACE_PERIODS.values():
        raise ValidationError("grace period must be one of 0, 1h, 24h, 7d", field="grace")
    old = _load_for_change(session, actor, key_id)
    if old.revoked_at is not None:
        raise Conflict("this API key is revoked or already rolled; it cannot be rolled")
    if old.expires_at <= now:
        raise Conflict("this API key has expired; create a new one instead")
    org = _lock_org(session, old.org_id)
    lifetime = min(old.expires_at - old.created_at, timedelta(days=org.max_key_lifetime_days))
    new_row, secret = _insert_key(
        session, org, actor, old.name, now + lifetime, now, pepper, old.id
    )
    old.revoked_at = min(now + period, old.expires_at)
    old.revoked_by = actor.user_id
    old.revoke_reason = f"rolled to {new_row.id}"
    _record_change(session, old, "rolled", now)
    details = {
        "name": old.name,
        "old_key_id": old.id,
        "old_masked": old.masked,
        "new_key_id": new_row.id,
        "new_masked": new_row.masked,
        "old_valid_until": iso(old.revoked_at),
        "expires_at": iso(new_row.expires_at),
    }
    audit.record(
        session,
        old.org_id,
        actor,
        EventType.API_KEY_ROLLED,
        target=("api_key", new_row.id),
        details=details,
        now=now,
    )
    outbox.publish(session, old.org_id, EventType.API_KEY_ROLLED, details, now=now)
    new = NewKey(new_row.id, secret, new_row.name, new_row.masked, now, new_row.expires_at)
    return new, _view_one(session, old, now)


def _record_change(session: Session, row: ApiKey, kind: str, now: datetime) -> None:
    session.add(KeyChange(key_id=row.id, key_hash=row.key_hash, kind=kind, changed_at=now))
    session.flush()
    pending = session.info.setdefault("key_changes", set())
    pending.add(row.key_hash)


def _view(row: ApiKey, now: datetime, lead_days: list[int], creator: str | None) -> KeyView:
    return KeyView(
        id=row.id,
        name=row.name,
        masked=row.masked,
        status=key_status(row, now, lead_days),
        created_by=creator,
        created_by_id=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
        rolled_from=row.rolled_from,
        last_used_at=row.last_used_at,
        usage_count=row.usage_count,
    )


def _view_one(session: Session, row: ApiKey, now: datetime) -> KeyView:
    org = session.get(Organization, row.org_id)
    assert org is not None
    user = session.get(User, row.created_by) if row.created_by else None
    return _view(row, now, org.lead_days, user.email if user else None)


def list_keys(
    session: Session,
    org_id: str,
    actor: Actor,
    *,
    status: str | None = None,
    now: datetime | None = None,
) -> list[KeyView]:
    """Return the organization's keys, newest first, optionally only those with `status`."""
    check(session, org_id, actor, Permission.KEYS_READ)
    if status is not None and status not in set(KeyStatus):
        raise ValidationError(f"status must be one of {', '.join(KeyStatus)}", field="status")
    now = resolve(now)
    rows = session.execute(
        select(ApiKey, User.email)
        .outerjoin(User, User.id == ApiKey.created_by)
        .where(ApiKey.org_id == org_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    ).all()
    org = session.get(Organization, org_id)
    assert org is not None
    lead_days = org.lead_days
    views = [_view(row, now, lead_days, email) for row, email in rows]
    return [v for v in views if status is None or v.status == status]


def get_key(session: Session, actor: Actor, key_id: str, *, now: datetime | None = None) -> KeyView:
    """Return one key's view; raise NotFound unless it belongs to an organization of the actor."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("API key not found")
    try:
        check(session, row.org_id, actor, Permission.KEYS_READ)
    except NotFound:
        raise NotFound("API key not found") from None
    return _view_one(session, row, resolve(now))
