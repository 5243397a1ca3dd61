"""Console sign-in, first-run setup and server-side sessions.

A session is a random token the browser carries (the console keeps it in the page URL's
`session` query parameter, so a refresh stays signed in); the database keeps only its
SHA-256, the user and an absolute expiry. Sign-out deletes the row; an expired row no
longer resumes and is purged at the next sign-in.

Failed sign-ins are counted per account: after MAX_FAILED_SIGNINS in a row the account
is locked for LOCK_BASE, doubling with each further failure up to LOCK_MAX. A success
resets the count. Every attempt on a known account is written to the audit log of each
organization the user belongs to.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.clock import resolve
from core.errors import (
    AuthenticationFailed,
    Conflict,
    CoreError,
    RateLimited,
    ValidationError,
)
from core.events import EventType
from core.orgs import service as orgs
from core.orgs.models import Organization, User
from core.orgs.permissions import Actor
from core.sessions.models import ConsoleSession

MAX_FAILED_SIGNINS = 5
LOCK_BASE = timedelta(minutes=5)
LOCK_MAX = timedelta(hours=1)
DEFAULT_SESSION_HOURS = 12.0
SESSION_HOURS_BOUNDS = (0.05, 24.0 * 30)
SESSION_ENV = "INTEGRATION_SESSION_HOURS"
TOKEN_PREFIX = "cs_"  # noqa: S105
_BAD_CREDENTIALS = "Incorrect email or password."
_DUMMY_HASH: list[str] = []


def session_lifetime(env: Mapping[str, str] | None = None) -> timedelta:
    """Return the session lifetime from INTEGRATION_SESSION_HOURS (default 12 hours).

    Raise ValidationError if the value is not a number of hours within the bounds.
    """
    env = os.environ if env is None else env
    raw = (env.get(SESSION_ENV) or "").strip()
    if not raw:
        return timedelta(hours=DEFAULT_SESSION_HOURS)
    lo, hi = SESSION_HOURS_BOUNDS
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not (lo <= hours <= hi):
        raise ValidationError(f"{SESSION_ENV} must be a number of hours from {lo} to {hi:g}")
    return timedelta(hours=hours)


def token_hash(token: str) -> str:
    """Return the hex SHA-256 under which a session token is stored."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def needs_setup(session: Session) -> bool:
    """Return True while the database has no organization (the console's first run)."""
    return session.execute(select(Organization.id).limit(1)).first() is None


def first_run_setup(
    session: Session,
    org_name: str,
    email: str,
    password: str,
    *,
    display_name: str | None = None,
    now: datetime | None = None,
) -> tuple[Organization, User]:
    """Create the first organization and its Org Admin; return (organization, admin).

    Raise Conflict once any organization exists (setup is for an empty database only),
    ValidationError for a bad name, email or password (the message states the rules).
    """
    if not needs_setup(session):
        raise Conflict("setup is already done: sign in instead")
    org, user = orgs.create_organization(
        session, org_name, email, password, self_service=True, now=now
    )
    if display_name and display_name.strip():
        from core import validation

        user.display_name = validation.display_text(display_name, "display name")
    return org, user


@dataclass(frozen=True)
class SignedIn:
    """Who a session belongs to; `token` is present only right after sign-in."""

    user_id: str
    email: str
    display_name: str
    expires_at: datetime
    token: str | None = None

    def __repr__(self) -> str:
        return f"SignedIn(user_id={self.user_id!r}, email={self.email!r})"

    @property
    def actor(self) -> Actor:
        return Actor.user(self.user_id, self.email)


@dataclass(frozen=True)
class SignInOutcome:
    """The result of a sign-in attempt: `signed_in` on success, else `error`.

    The attempt's bookkeeping (failure count, lock, audit rows) belongs to the caller's
    transaction, so commit first, then call `result()`.
    """

    signed_in: SignedIn | None
    error: CoreError | None

    def result(self) -> SignedIn:
        """Return the signed-in user; raise AuthenticationFailed or RateLimited."""
        if self.error is not None:
            raise self.error
        assert self.signed_in is not None
        return self.signed_in


def _lock_period(failures: int) -> timedelta:
    extra = max(0, failures - MAX_FAILED_SIGNINS)
    return min(LOCK_BASE * (2 ** min(extra, 16)), LOCK_MAX)


def _rate_limited(until: datetime, now: datetime) -> RateLimited:
    seconds = max(1.0, (until - now).total_seconds())
    minutes = math.ceil(seconds / 60)
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
    return RateLimited(
        f"Too many failed sign-ins for this account. Try again in {wait}.",
        retry_after=seconds,
    )


def _record(
    session: Session, user: User, action: EventType, details: dict[str, str], now: datetime
) -> None:
    actor = Actor.user(user.id, user.email)
    for org, _role in orgs.memberships_of(session, user.id):
        audit.record(
            session, org.id, actor, action, target=("user", user.id), details=details, now=now
        )


def _burn_time(password: str) -> None:
    """Verify against a throwaway hash so an unknown email costs what a known one does."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(orgs._hasher.hash("unused-dummy-password-1"))
    probe = User(password_hash=_DUMMY_HASH[0])
    orgs.password_matches(probe, password)


def sign_in(
    session: Session,
    email: str,
    password: str,
    *,
    lifetime: timedelta | None = None,
    now: datetime | None = None,
) -> SignInOutcome:
    """Check the password and open a session; return the outcome (see SignInOutcome).

    The error is AuthenticationFailed for an unknown email, a wrong password or a
    disabled account (one message for all), RateLimited while the account is locked.
    """
    now = resolve(now)
    lifetime = lifetime or session_lifetime()
    address = (email or "").strip().lower()
    user = (
        session.execute(select(User).where(User.email == address).with_for_update()).scalar()
        if address and len(address) <= 254
        else None
    )
    if user is None:
        _burn_time(password or "")
        return SignInOutcome(None, AuthenticationFailed(_BAD_CREDENTIALS))
    if user.locked_until is not None and user.locked_until > now:
        _record(session, user, EventType.SIGNIN_FAILED, {"reason": "locked"}, now)
        return SignInOutcome(None, _rate_limited(user.locked_until, now))
    if not orgs.password_matches(user, password or "") or user.disabled:
        user.failed_signins = (user.failed_signins or 0) + 1
        reason = "disabled" if user.disabled else "bad_password"
        error: CoreError = AuthenticationFailed(_BAD_CREDENTIALS)
        if user.failed_signins >= MAX_FAILED_SIGNINS:
            user.locked_until = now + _lock_period(user.failed_signins)
            error = _rate_limited(user.locked_until, now)
            reason += "_locked"
        session.flush()
        _record(
            session,
            user,
            EventType.SIGNIN_FAILED,
            {"reason": reason, "failures": str(user.failed_signins)},
            now,
        )
        return SignInOutcome(None, error)
    user.failed_signins = 0
    user.locked_until = None
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + lifetime
    session.add(
        ConsoleSession(
            token_hash=token_hash(token),
            user_id=user.id,
            created_at=now,
            expires_at=expires_at,
            last_seen_at=now,
        )
    )
    session.flush()
    _record(session, user, EventType.SIGNIN_SUCCEEDED, {}, now)
    return SignInOutcome(SignedIn(user.id, user.email, user.display_name, expires_at, token), None)


def resume(session: Session, token: str | None, *, now: datetime | None = None) -> SignedIn | None:
    """Return who the session token belongs to, or None if unknown, expired or disabled."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    now = resolve(now)
    row = session.get(ConsoleSession, token_hash(token))
    if row is None or row.expires_at <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return SignedIn(user.id, user.email, user.display_name, row.expires_at)


def sign_out(session: Session, token: str | None) -> bool:
    """End the session carrying `token`; return whether one was open."""
    if not token:
        return False
    result = session.execute(
        delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token))
    )
    return bool(getattr(result, "rowcount", 0))
