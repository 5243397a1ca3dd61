"""The rules of a key's life: how long it may live, how long a roll's grace lasts, what
status it has at a moment, and who may end it. Pure functions of their arguments; the
service applies them inside its transactions, pages and the CLI read them to explain.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from core.errors import ValidationError
from core.keys.models import ApiKey
from core.orgs.permissions import Actor, Permission, can

PRESET_DAYS = (30, 60, 90)
GRACE_PERIODS: dict[str, timedelta] = {
    "0": timedelta(0),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}
_DAYS = re.compile(r"^(\d{1,5})d?$")


class KeyStatus(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"


LIVE_STATUSES = frozenset({KeyStatus.ACTIVE, KeyStatus.EXPIRING})


def resolve_expiry(spec: str | int | date | datetime, now: datetime, max_days: int) -> datetime:
    """Return the expiry time for `spec`: 30/60/90, ``<N>d``, a date, or a datetime.

    A date means the end of that day (UTC). Raise ValidationError, saying what is allowed,
    for anything in the past, beyond `max_days` from now, or not understood.
    """
    allowed = (
        f"expiration must be 30, 60 or 90 days, a custom number of days like '45d', "
        f"or a date (YYYY-MM-DD), at most {max_days} days from now"
    )
    if isinstance(spec, bool):
        raise ValidationError(allowed, field="expires")
    if isinstance(spec, int):
        spec = f"{spec}d"
    if isinstance(spec, datetime):
        if spec.tzinfo is None:
            raise ValidationError("an expiry time must carry a time zone", field="expires")
        expires = spec.astimezone(UTC)
    elif isinstance(spec, date):
        expires = datetime.combine(spec, time(23, 59, 59), UTC)
    elif isinstance(spec, str):
        text = spec.strip().lower()
        match = _DAYS.match(text)
        if match:
            days = int(match.group(1))
            if days < 1:
                raise ValidationError(allowed, field="expires")
            expires = now + timedelta(days=days)
        else:
            try:
                day = date.fromisoformat(text)
            except ValueError:
                raise ValidationError(allowed, field="expires") from None
            expires = datetime.combine(day, time(23, 59, 59), UTC)
    else:
        raise ValidationError(allowed, field="expires")
    if expires <= now:
        raise ValidationError(f"the expiry must be in the future; {allowed}", field="expires")
    if expires > now + timedelta(days=max_days):
        raise ValidationError(allowed, field="expires")
    return expires


def parse_grace(value: str) -> timedelta:
    """Return the grace period named by 0, 1h, 24h or 7d; raise ValidationError."""
    key = str(value).strip().lower()
    if key not in GRACE_PERIODS:
        raise ValidationError("grace period must be one of 0, 1h, 24h, 7d", field="grace")
    return GRACE_PERIODS[key]


def alert_leads(lead_days: list[int], created_at: datetime, expires_at: datetime) -> list[int]:
    """Return the lead times (days, largest first) that apply to a key of this lifetime.

    A lead time as long as the key's whole lifetime would fire at creation, so it is
    skipped: a 30-day key under leads (30, 7, 1) is alerted at 7 and 1 days.
    """
    lifetime = expires_at - created_at
    return [d for d in lead_days if timedelta(days=d) < lifetime]


def key_status(key: ApiKey, now: datetime, lead_days: list[int]) -> KeyStatus:
    """Return active, expiring, expired or revoked for `key` at `now`.

    Expiring means within the first lead time that applies to the key (see alert_leads).
    """
    if key.revoked_at is not None and key.revoked_at <= now:
        return KeyStatus.REVOKED
    if key.expires_at <= now:
        return KeyStatus.EXPIRED
    leads = alert_leads(lead_days, key.created_at, key.expires_at)
    if leads and key.expires_at - now <= timedelta(days=leads[0]):
        return KeyStatus.EXPIRING
    return KeyStatus.ACTIVE


def may_manage(role: str | None, actor: Actor, created_by: str | None) -> bool:
    """Return whether `actor`, holding `role` in the key's organization (None for the
    system actor), may roll or revoke a key created by the user id `created_by`."""
    if actor.is_system:
        return True
    if can(role, Permission.KEYS_MANAGE_ANY):
        return True
    return can(role, Permission.KEYS_MANAGE_OWN) and created_by == actor.user_id
