"""Time, passed in: every rule that depends on "now" takes a `now` argument."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def resolve(now: datetime | None) -> datetime:
    """Return `now` as an aware UTC datetime, or the current time when it is None."""
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return now.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """Format an aware time as ISO 8601 with its UTC offset (None stays None)."""
    return None if value is None else value.astimezone(UTC).isoformat()
