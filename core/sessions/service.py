"""Console sessions, the handoff that delivers one to a browser, and first-run setup.

A session is a random token (`cs_…`) that only ever travels in an HttpOnly cookie; the
database keeps its SHA-256, the user, an absolute end (INTEGRATION_SESSION_HOURS, 12 h)
and when it was last seen (the idle timeout, INTEGRATION_SESSION_IDLE_MINUTES, 30 min).

The page that checks a password runs over Streamlit's websocket and cannot set a cookie,
so it issues a **handoff**: a one-time secret valid for 60 seconds, bound to the
browser's binding cookie, which the browser posts (in a form body, never a URL) to the
console's session route; the route redeems it for a brand-new session token and sets
the cookie. Sign-out deletes the session row; "sign out everywhere", a password change
or reset, a role change and disabling the account delete every row of the person.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.clock import resolve
from core.errors import AuthenticationFailed, Conflict, ValidationError
from core.events import EventType
from core.orgs import service as orgs
from core.orgs import tokens, users
from core.orgs.models import Organization, User
from core.orgs.permissions import Actor
from core.sessions.models import ConsoleSession, Handoff, SetupToken

log = logging.getLogger("console")

SESSION_ENV = "INTEGRATION_SESSION_HOURS"
IDLE_ENV = "INTEGRATION_SESSION_IDLE_MINUTES"
SETUP_OPEN_ENV = "INTEGRATION_SETUP_OPEN"
DEFAULT_SESSION_HOURS = 12.0
DEFAULT_IDLE_MINUTES = 30.0
SESSION_HOURS_BOUNDS = (0.05, 24.0 * 30)
IDLE_MINUTES_BOUNDS = (1.0, 24.0 * 60)
HANDOFF_LIFETIME = timedelta(seconds=60)
SETUP_TOKEN_LIFETIME = timedelta(hours=24)
TOUCH_EVERY = timedelta(minutes=1)  # how stale last_seen_at may get before it is written


def _number(
    env: Mapping[str, str], name: str, default: float, bounds: tuple[float, float]
) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    lo, hi = bounds
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (lo <= value <= hi):
        raise ValidationError(f"{name} must be a number from {lo:g} to {hi:g}")
    return value


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session lasts: `lifetime` from sign-in at most, `idle` without use."""

    lifetime: timedelta = timedelta(hours=DEFAULT_SESSION_HOURS)
    idle: timedelta = timedelta(minutes=DEFAULT_IDLE_MINUTES)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SessionPolicy:
        """Read INTEGRATION_SESSION_HOURS and INTEGRATION_SESSION_IDLE_MINUTES.

        Raise ValidationError naming the variable whose value is out of bounds.
        """
        env = os.environ if env is None else env
        hours = _number(env, SESSION_ENV, DEFAULT_SESSION_HOURS, SESSION_HOURS_BOUNDS)
        minutes = _number(env, IDLE_ENV, DEFAULT_IDLE_MINUTES, IDLE_MINUTES_BOUNDS)
        return cls(timedelta(hours=hours), timedelta(minutes=minutes))


def session_lifetime(env: Mapping[str, str] | None = None) -> timedelta:
    """Return the absolute session lifetime (INTEGRATION_SESSION_HOURS, default 12 h)."""
    return SessionPolicy.from_env(env).lifetime


@dataclass(frozen=True)
class SignedIn:
    """Who a session (or a successful sign-in) belongs to."""

    user_id: str
    email: str
    display_name: str
    expires_at: datetime | None = None
    stale: bool = False  # last seen over TOUCH_EVERY ago: `touch` it in a write session

    @property
    def actor(self) -> Actor:
        return Actor.user(self.user_id, self.email)


def _signed_in(user: User, row: ConsoleSession | None = None, stale: bool = False) -> SignedIn:
    return SignedIn(user.id, user.email, user.display_name, row.expires_at if row else None, stale)


def open_session(
    session: Session,
    user_id: str,
    *,
    policy: SessionPolicy | None = None,
    now: datetime | None = None,
) -> tuple[str, SignedIn]:
    """Open a new session for the user; return (token, who). The token is new every time.

    Raise AuthenticationFailed if the account is gone or disabled.
    """
    now = resolve(now)
    policy = policy or SessionPolicy.from_env()
    user = session.get(User, user_id)
    if user is None or user.disabled:
        raise AuthenticationFailed("This account cannot sign in.")
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = tokens.new_token(tokens.SESSION)
    row = ConsoleSession(
        token_hash=tokens.token_hash(token),
        user_id=user.id,
        created_at=now,
        expires_at=now + policy.lifetime,
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    return token, _signed_in(user, row)


def resume(
    session: Session,
    token: object,
    *,
    policy: SessionPolicy | None = None,
    now: datetime | None = None,
) -> SignedIn | None:
    """Return who the session token belongs to; None if it is malformed, unknown, past
    its absolute end, idle for longer than the idle timeout, or its account is disabled.
    Reads only: a result with `stale` asks the caller to `touch` the session."""
    if not tokens.well_formed(token, tokens.SESSION):
        return None
    assert isinstance(token, str)
    now = resolve(now)
    policy = policy or SessionPolicy.from_env()
    row = session.get(ConsoleSession, tokens.token_hash(token))
    if row is None or row.expires_at <= now or row.last_seen_at + policy.idle <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return _signed_in(user, row, stale=now - row.last_seen_at >= TOUCH_EVERY)


def touch(session: Session, token: str, *, now: datetime | None = None) -> None:
    """Note that the session was used now (the idle timeout counts from here)."""
    row = session.get(ConsoleSession, tokens.token_hash(token))
    if row is not None:
        row.last_seen_at = max(row.last_seen_at, resolve(now))


def sign_out(session: Session, token: object, *, now: datetime | None = None) -> bool:
    """End the session carrying `token` (the row is deleted); return whether one was open."""
    if not tokens.well_formed(token, tokens.SESSION):
        return False
    assert isinstance(token, str)
    row = session.get(ConsoleSession, tokens.token_hash(token))
    if row is None:
        return False
    user = session.get(User, row.user_id)
    session.delete(row)
    session.flush()
    if user is not None:
        users.record_for_person(
            session, user, Actor.user(user.id, user.email), EventType.SIGNED_OUT, now=resolve(now)
        )
    return True


def sign_out_everywhere(session: Session, user_id: str, *, now: datetime | None = None) -> int:
    """End every session of the person (this browser's too); return how many ended."""
    user = users.lock_user(session, user_id)
    ended = users.end_sessions(session, user.id)
    users.record_for_person(
        session,
        user,
        Actor.user(user.id, user.email),
        EventType.SIGNED_OUT_EVERYWHERE,
        {"sessions": ended},
        now=resolve(now),
    )
    return ended


# --- handoff: from the page that checked the password to the route that sets the cookie


def binding_hash(binding: str) -> str:
    """Return the stored form of a browser binding value."""
    return tokens.token_hash("binding:" + binding)


def safe_next(path: object) -> str:
    """Return `path` if it is a path on this site ("/…", not "//…"), else "/"."""
    if (
        isinstance(path, str)
        and path.startswith("/")
        and not path.startswith("//")
        and len(path) <= 200
        and path.isprintable()
        and "\\" not in path
        and " " not in path
    ):
        return path
    return "/"


def issue_handoff(
    session: Session,
    user_id: str,
    binding: str,
    *,
    next_path: str = "/",
    now: datetime | None = None,
) -> str:
    """Return a one-time handoff for the user, redeemable within 60 seconds by the browser
    whose binding cookie is `binding`. Raise ValidationError without a binding."""
    if not isinstance(binding, str) or not 16 <= len(binding) <= 100:
        raise ValidationError("this browser has no console cookie yet: reload the page")
    now = resolve(now)
    session.execute(delete(Handoff).where(Handoff.expires_at <= now))
    handoff = tokens.new_token(tokens.HANDOFF)
    session.add(
        Handoff(
            token_hash=tokens.token_hash(handoff),
            user_id=user_id,
            binding_hash=binding_hash(binding),
            next_path=safe_next(next_path),
            created_at=now,
            expires_at=now + HANDOFF_LIFETIME,
        )
    )
    session.flush()
    return handoff


_STALE_HANDOFF = "This sign-in has expired or was already used: sign in again."


def redeem_handoff(
    session: Session,
    handoff: object,
    binding: object,
    *,
    policy: SessionPolicy | None = None,
    now: datetime | None = None,
) -> tuple[str, SignedIn, str]:
    """Redeem a handoff (once) for a new session; return (token, who, next path).

    Raise AuthenticationFailed if the handoff is malformed, unknown, used, expired,
    issued to another browser, or its account was disabled meanwhile.
    """
    if not tokens.well_formed(handoff, tokens.HANDOFF) or not isinstance(binding, str):
        raise AuthenticationFailed(_STALE_HANDOFF)
    assert isinstance(handoff, str)
    now = resolve(now)
    row = session.execute(
        select(Handoff)
        .where(Handoff.token_hash == tokens.token_hash(handoff))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar()
    if row is None:
        raise AuthenticationFailed(_STALE_HANDOFF)
    user_id, expires_at, next_path, bound = (
        row.user_id,
        row.expires_at,
        row.next_path,
        row.binding_hash,
    )
    session.delete(row)  # used or not, a handoff works at most once
    session.flush()
    if expires_at <= now or not hmac.compare_digest(bound, binding_hash(binding)):
        raise AuthenticationFailed(_STALE_HANDOFF)
    token, who = open_session(session, user_id, policy=policy, now=now)
    return token, who, next_path


# --- first-run setup -------------------------------------------------------------------


def needs_setup(session: Session) -> bool:
    """Return True while the database has no organization (the console's first run)."""
    return session.execute(select(Organization.id).limit(1)).first() is None


def setup_is_open(env: Mapping[str, str] | None = None) -> bool:
    """Return whether first-run setup needs no setup token (INTEGRATION_SETUP_OPEN=1)."""
    env = os.environ if env is None else env
    return (env.get(SETUP_OPEN_ENV) or "").strip() == "1"


def has_setup_token(session: Session, *, now: datetime | None = None) -> bool:
    """Return whether a setup token that has not expired exists."""
    return (
        session.execute(
            select(SetupToken.token_hash).where(SetupToken.expires_at > resolve(now)).limit(1)
        ).first()
        is not None
    )


def issue_setup_token(session: Session, *, now: datetime | None = None) -> str:
    """Return a new first-run setup token (valid 24 hours) for the operator to read in
    the console's log. Raise Conflict once setup is done."""
    if not needs_setup(session):
        raise Conflict("setup is already done")
    now = resolve(now)
    session.execute(delete(SetupToken).where(SetupToken.expires_at <= now))
    token = tokens.new_token(tokens.SETUP)
    session.add(
        SetupToken(
            token_hash=tokens.token_hash(token),
            created_at=now,
            expires_at=now + SETUP_TOKEN_LIFETIME,
        )
    )
    session.flush()
    return token


def announce_setup_token(token: str, console_url: str | None = None) -> None:
    """Print the setup token to the console's log, as a notebook server prints its token."""
    where = f" at {console_url}" if console_url else ""
    log.warning(
        "First-run setup: open the console%s and enter this setup token (valid 24 hours, once): %s",
        where,
        token,
    )


def first_run_setup(
    session: Session,
    org_name: str,
    email: str,
    password: str,
    *,
    setup_token: str | None,
    display_name: str | None = None,
    open_setup: bool = False,
    now: datetime | None = None,
) -> tuple[Organization, User]:
    """Create the first organization and its Org Admin; return (organization, admin).

    Needs a live setup token unless `open_setup`. Raise Conflict once any organization
    exists, AuthenticationFailed for a wrong or expired setup token, ValidationError for
    a bad name, email or password (the message states the rules).
    """
    now = resolve(now)
    if not needs_setup(session):
        raise Conflict("setup is already done: sign in instead")
    if not open_setup:
        row = (
            session.get(SetupToken, tokens.token_hash(setup_token))
            if tokens.well_formed(setup_token, tokens.SETUP) and setup_token
            else None
        )
        if row is None or row.expires_at <= now:
            raise AuthenticationFailed(
                "The setup token is not correct. It is printed in the console's log."
            )
    if users.find_user(session, email) is not None:
        raise Conflict("an account with this email exists: sign in instead")
    user = users.create_user(session, email, password, display_name=display_name, now=now)
    org, _ = orgs.create_organization(
        session, org_name, user.email, None, self_service=True, now=now
    )
    session.execute(delete(SetupToken))
    return org, user
