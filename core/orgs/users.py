"""People's accounts: passwords, look-ups, a person's own password, reset links, and the
operator's controls (set a password, disable, enable).

No path here lets one person set or learn another's password: a person sets their own
(at an invitation, a change, or through a reset link), and only the operator — the
command line without `--by`, holding the database's credentials — sets one directly.
Every change of password, reset and disable ends all of the person's console sessions.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core import validation
from core.audit import service as audit
from core.clock import resolve
from core.errors import AuthenticationFailed, Conflict, NotFound, ValidationError
from core.events import EventType
from core.ids import new_id
from core.orgs import tokens
from core.orgs.errors import OperatorOnly
from core.orgs.models import Membership, Organization, PasswordReset, User
from core.orgs.permissions import Actor, Permission, check, membership_of
from core.sessions.models import ConsoleSession, Handoff

# argon2id with the library's current recommended parameters. Public so a test suite can
# swap in cheaper parameters (`users.hasher = PasswordHasher.from_parameters(...)`).
hasher = PasswordHasher()

RESET_LIFETIME = timedelta(hours=24)
_dummy: dict[int, str] = {}


def hash_password(password: str, *, email: str | None = None) -> str:
    """Return the argon2id hash of `password`; raise ValidationError if it breaks the rules."""
    return hasher.hash(validation.password(password, email=email))


def password_matches(user: User, password: str) -> bool:
    """Return whether `password` is the user's (constant-time, via argon2)."""
    try:
        return hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def spend_verify_time(password: str) -> None:
    """Verify `password` against a throwaway hash: a refusal that needs no check still
    costs what a real check costs, so timing tells nothing."""
    key = id(hasher)
    if key not in _dummy:
        _dummy[key] = hasher.hash("unused-dummy-password-1")
    with contextlib.suppress(VerificationError, InvalidHashError):
        hasher.verify(_dummy[key], password)


def find_user(session: Session, email: str) -> User | None:
    """Return the user with this email, or None."""
    address = (email or "").strip().lower()
    if not address or len(address) > 254:
        return None
    return session.execute(select(User).where(User.email == address)).scalar()


def user_by_email(session: Session, email: str) -> User:
    """Return the user with this email; raise NotFound."""
    user = find_user(session, email)
    if user is None:
        raise NotFound(f"no user with email {email.strip()!r}")
    return user


def actor_for(session: Session, email: str) -> Actor:
    """Return the Actor for the user with this email; raise NotFound."""
    user = user_by_email(session, email)
    return Actor.user(user.id, user.email)


def lock_user(session: Session, user_id: str) -> User:
    """Return the user row locked for the rest of the transaction (fresh from the
    database); raise NotFound. Changes to one account's credentials go one at a time."""
    user = session.execute(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar()
    if user is None:
        raise NotFound("account not found")
    return user


def create_user(
    session: Session,
    email: str,
    password: str,
    *,
    display_name: str | None = None,
    now: datetime | None = None,
) -> User:
    """Create an account with the person's own password; return it.

    Callers are the person themselves (accepting an invitation, first-run setup) or the
    operator. Raise Conflict if the email has an account, ValidationError for a bad
    email, name or password.
    """
    address = validation.email(email)
    if find_user(session, address) is not None:
        raise Conflict(f"{address} already has an account")
    name = (
        validation.display_text(display_name, "display name")
        if display_name and display_name.strip()
        else address.split("@")[0]
    )
    user = User(
        id=new_id("usr"),
        email=address,
        display_name=name,
        password_hash=hash_password(password, email=address),
        disabled=False,
        created_at=resolve(now),
    )
    session.add(user)
    session.flush()
    return user


def end_sessions(session: Session, user_id: str) -> int:
    """End every console session of the user (and any sign-in in flight); return how many."""
    session.execute(delete(Handoff).where(Handoff.user_id == user_id))
    result = session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))
    return int(getattr(result, "rowcount", 0) or 0)


def _orgs_of(session: Session, user_id: str) -> list[str]:
    return list(
        session.execute(
            select(Membership.org_id)
            .where(Membership.user_id == user_id)
            .order_by(Membership.org_id)
        ).scalars()
    )


def record_for_person(
    session: Session,
    user: User,
    actor: Actor,
    action: EventType,
    details: dict[str, object] | None = None,
    *,
    now: datetime,
) -> None:
    """Write `action` about `user` to the audit log of every organization they belong to."""
    for org_id in _orgs_of(session, user.id):
        audit.record(
            session,
            org_id,
            actor,
            action,
            target=("user", user.id),
            details={"email": user.email, **(details or {})},
            now=now,
        )


def _set_password(session: Session, user: User, password: str, now: datetime) -> None:
    user.password_hash = hash_password(password, email=user.email)
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    end_sessions(session, user.id)


def change_password(
    session: Session,
    user_id: str,
    current: str,
    new: str,
    *,
    now: datetime | None = None,
) -> User:
    """Change the person's own password; every session of theirs ends. Return the user.

    Raise AuthenticationFailed if `current` is wrong, ValidationError if `new` breaks
    the rules or equals the current one.
    """
    now = resolve(now)
    user = lock_user(session, user_id)
    if user.disabled or not password_matches(user, current or ""):
        raise AuthenticationFailed("The current password is not correct.")
    if new == current:
        raise ValidationError("The new password must differ from the current one.")
    _set_password(session, user, new, now)
    record_for_person(
        session, user, Actor.user(user.id, user.email), EventType.PASSWORD_CHANGED, now=now
    )
    return user


def set_password(
    session: Session, actor: Actor, email: str, password: str, *, now: datetime | None = None
) -> User:
    """The operator sets an account's password (bootstrap, recovery); its sessions end.

    Return the user. Raise OperatorOnly for anyone else, NotFound, ValidationError.
    """
    if not actor.is_system:
        raise OperatorOnly("set a password")
    now = resolve(now)
    user = lock_user(session, user_by_email(session, email).id)
    _set_password(session, user, password, now)
    record_for_person(session, user, actor, EventType.PASSWORD_SET, now=now)
    return user


def set_disabled(
    session: Session, actor: Actor, email: str, disabled: bool, *, now: datetime | None = None
) -> User:
    """The operator disables (every session ends) or re-enables an account; return it.

    Raise OperatorOnly for anyone else, NotFound for an unknown email.
    """
    if not actor.is_system:
        raise OperatorOnly("disable or enable an account")
    now = resolve(now)
    user = lock_user(session, user_by_email(session, email).id)
    if user.disabled == disabled:
        return user
    user.disabled = disabled
    if disabled:
        end_sessions(session, user.id)
    action = EventType.ACCOUNT_DISABLED if disabled else EventType.ACCOUNT_ENABLED
    record_for_person(session, user, actor, action, now=now)
    return user


@dataclass(frozen=True)
class IssuedReset:
    """A reset link's secret, to hand to the person (shown once, never stored)."""

    email: str
    expires_at: datetime
    token: str = field(repr=False)

    def url(self, console_url: str) -> str:
        return f"{console_url.rstrip('/')}/reset-password?token={self.token}"


def _may_reset(session: Session, actor: Actor, org_id: str | None, user: User) -> None:
    """An admin may issue a reset only for a person whose every organization they
    administer: otherwise the link would open organizations they do not control."""
    if actor.is_system:
        return
    if org_id is None:
        raise ValidationError("name the organization in which you are an admin")
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    if membership_of(session, org_id, user.id) is None:
        raise NotFound("member not found")
    assert actor.user_id is not None
    for other in _orgs_of(session, user.id):
        mine = membership_of(session, other, actor.user_id)
        if mine is None or mine.role != "admin":
            raise OperatorOnly(
                f"issue a reset link for {user.email}: they belong to organizations "
                "you do not administer"
            )


def issue_reset(
    session: Session,
    actor: Actor,
    email: str,
    *,
    org_id: str | None = None,
    now: datetime | None = None,
) -> IssuedReset:
    """Issue a one-time reset link for an account (earlier unused links stop working).

    The issuer never sees the new password: the person sets it at the link. The operator
    may issue one for anyone; an admin (of `org_id`) only for a person whose every
    organization they administer. Raise OperatorOnly, PermissionDenied, NotFound.
    """
    now = resolve(now)
    user = lock_user(session, user_by_email(session, email).id)
    _may_reset(session, actor, org_id, user)
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    token = tokens.new_token(tokens.PASSWORD_RESET)
    expires_at = now + RESET_LIFETIME
    session.add(
        PasswordReset(
            token_hash=tokens.token_hash(token),
            user_id=user.id,
            issued_by_email=actor.email or "cli",
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    record_for_person(
        session,
        user,
        actor,
        EventType.PASSWORD_RESET_ISSUED,
        {"expires_at": expires_at.isoformat()},
        now=now,
    )
    return IssuedReset(user.email, expires_at, token)


_BAD_RESET = "This reset link is not valid or has expired: ask for a new one."


def reset_target(session: Session, token: str, *, now: datetime | None = None) -> str:
    """Return the email a live reset link is for; raise NotFound when it is not live."""
    row = _live_reset(session, token, resolve(now))
    user = session.get(User, row.user_id)
    if user is None:
        raise NotFound(_BAD_RESET)
    return user.email


def _live_reset(
    session: Session, token: str, now: datetime, *, lock: bool = False
) -> PasswordReset:
    if not tokens.well_formed(token, tokens.PASSWORD_RESET):
        raise NotFound(_BAD_RESET)
    query = select(PasswordReset).where(PasswordReset.token_hash == tokens.token_hash(token))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = session.execute(query).scalar()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise NotFound(_BAD_RESET)
    return row


def reset_password(
    session: Session, token: str, password: str, *, now: datetime | None = None
) -> User:
    """Set a new password through a reset link (once); every session of the person ends.

    Return the user. Raise NotFound for a used, expired or unknown link, ValidationError
    for a password that breaks the rules.
    """
    now = resolve(now)
    row = _live_reset(session, token, now, lock=True)
    user = lock_user(session, row.user_id)
    row.used_at = now
    _set_password(session, user, password, now)
    record_for_person(
        session, user, Actor.user(user.id, user.email), EventType.PASSWORD_RESET, now=now
    )
    return user


def active_sessions(session: Session, user_id: str, *, now: datetime | None = None) -> int:
    """Return how many console sessions of the user have not reached their absolute end."""
    return int(
        session.execute(
            select(func.count())
            .select_from(ConsoleSession)
            .where(ConsoleSession.user_id == user_id, ConsoleSession.expires_at > resolve(now))
        ).scalar_one()
    )


def organizations_of(session: Session, user_id: str) -> list[Organization]:
    """Return the organizations the user belongs to, by name."""
    return list(
        session.execute(
            select(Organization)
            .join(Membership, Membership.org_id == Organization.id)
            .where(Membership.user_id == user_id)
            .order_by(Organization.name)
        ).scalars()
    )
