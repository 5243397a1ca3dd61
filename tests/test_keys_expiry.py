"""Every expiration choice and every refusal, against an injected clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from core.errors import ValidationError
from core.keys.policy import may_manage, resolve_expiry
from core.orgs.permissions import Actor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (30, NOW + timedelta(days=30)),
        (60, NOW + timedelta(days=60)),
        (90, NOW + timedelta(days=90)),
        ("30", NOW + timedelta(days=30)),
        ("45d", NOW + timedelta(days=45)),
        (" 7D ", NOW + timedelta(days=7)),
        ("365d", NOW + timedelta(days=365)),
        ("2026-12-31", datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (date(2026, 6, 1), datetime(2026, 6, 1, 23, 59, 59, tzinfo=UTC)),
        (NOW + timedelta(hours=5), NOW + timedelta(hours=5)),
    ],
)
def test_accepted_expirations(spec: object, expected: datetime) -> None:
    assert resolve_expiry(spec, NOW, 365) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        0,
        -5,
        "0d",
        "366d",
        "400",
        "2027-06-02",  # beyond 365 days
        "2026-05-31",  # in the past
        "2026-02-30",  # not a date
        "thirty",
        "30 days",
        "",
        "1e3",
        True,
        None,
        3.5,
        NOW - timedelta(seconds=1),
        datetime(2026, 7, 1),  # naive
    ],
)
def test_refused_expirations_say_what_is_allowed(spec: object) -> None:
    with pytest.raises(ValidationError) as info:
        resolve_expiry(spec, NOW, 365)  # type: ignore[arg-type]
    message = info.value.message
    assert "30, 60 or 90 days" in message or "time zone" in message
    assert info.value.field == "expires"


def test_organization_maximum_bounds_custom_durations() -> None:
    assert resolve_expiry("30", NOW, 30) == NOW + timedelta(days=30)
    with pytest.raises(ValidationError, match="at most 30 days"):
        resolve_expiry("31d", NOW, 30)
    with pytest.raises(ValidationError, match="at most 30 days"):
        resolve_expiry(60, NOW, 30)


@pytest.mark.parametrize(
    ("role", "creator", "allowed"),
    [
        ("admin", "someone-else", True),
        ("member", "me", True),
        ("member", "someone-else", False),
        ("member", None, False),
        ("auditor", "me", False),
        (None, "me", False),  # not a member
    ],
)
def test_who_may_roll_or_revoke_a_key(role: str | None, creator: str | None, allowed: bool) -> None:
    actor = Actor.user("me", "me@acme.test")
    assert may_manage(role, actor, creator) is allowed


def test_the_operator_may_manage_every_key() -> None:
    assert may_manage(None, Actor.system(), "anyone") is True
