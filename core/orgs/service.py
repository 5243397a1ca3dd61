"""Organizations, memberships and settings (accounts live in `core.orgs.users`, invitations
in `core.orgs.invitations`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import validation
from core.audit import service as audit
from core.clock import resolve
from core.errors import Conflict, NotFound, ValidationError
from core.events import EventType
from core.ids import new_id
from core.orgs import users
from core.orgs.errors import OperatorOnly
from core.orgs.models import Membership, Organization, Role, User
from core.orgs.permissions import Actor, Permission, check

MAX_KEY_LIFETIME_BOUNDS = (1, 3650)
LEAD_DAY_BOUNDS = (1, 365)


def parse_role(value: str) -> Role:
    """Return the Role named by `value`; raise ValidationError listing the roles."""
    try:
        return Role(value.strip().lower())
    except (ValueError, AttributeError):
        allowed = ", ".join(r.value for r in Role)
        raise ValidationError(f"role must be one of {allowed}", field="role") from None


def org_by_name(session: Session, name: str) -> Organization:
    """Return the organization called `name`; raise NotFound."""
    org = session.execute(select(Organization).where(Organization.name == name.strip())).scalar()
    if org is None:
        raise NotFound(f"organization {name.strip()!r} not found")
    return org


def create_organization(
    session: Session,
    name: str,
    admin_email: str,
    admin_password: str | None,
    *,
    self_service: bool = False,
    now: datetime | None = None,
) -> tuple[Organization, User]:
    """Create an organization with its first admin; return (organization, admin).

    Run by the operator (the audit log records "cli"), or with `self_service` by the
    first admin at the console's first-run setup. A new admin gets `admin_password`; an
    existing account is made admin as it is (its password untouched, and None is
    enough). Raise Conflict if the name is taken, ValidationError for a bad name, email
    or password.
    """
    org_name = validation.display_text(name, "organization name")
    if session.execute(select(Organization.id).where(Organization.name == org_name)).first():
        raise Conflict(f"an organization called {org_name!r} already exists")
    now = resolve(now)
    user = users.find_user(session, admin_email)
    if user is None:
        if admin_password is None:
            raise ValidationError(
                f"{admin_email.strip()} has no account yet: a password is required"
            )
        user = users.create_user(session, admin_email, admin_password, now=now)
    org = Organization(
        id=new_id("org"),
        name=org_name,
        created_at=now,
        max_key_lifetime_days=365,
        alert_lead_days={"days": [30, 7, 1]},
        api_base_url="https://api.example.com",
        audit_seq=0,
        audit_head=audit.GENESIS,
    )
    session.add(org)
    session.flush()
    session.add(Membership(org_id=org.id, user_id=user.id, role=Role.ADMIN, created_at=now))
    session.flush()
    by = Actor.user(user.id, user.email) if self_service else Actor.system("cli")
    audit.record(
        session,
        org.id,
        by,
        EventType.ORG_CREATED,
        target=("org", org.id),
        details={"name": org_name},
        now=now,
    )
    audit.record(
        session,
        org.id,
        by,
        EventType.MEMBER_ADDED,
        target=("user", user.id),
        details={"email": user.email, "role": Role.ADMIN.value},
        now=now,
    )
    return org, user


def add_member(
    session: Session,
    org_id: str,
    actor: Actor,
    email: str,
    role: str,
    *,
    password: str | None = None,
    display_name: str | None = None,
    now: datetime | None = None,
) -> Membership:
    """The operator adds a person directly with `role` (for bootstrapping); return the
    membership. A new account is created with `password`; an existing one is added as it
    is, its password untouched. Admins invite people instead (`core.orgs.invitations`).

    Raise OperatorOnly for anyone but the operator, Conflict if already a member,
    ValidationError for a bad email, role or password.
    """
    if not actor.is_system:
        raise OperatorOnly("add a member directly; admins invite people")
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    role_value = parse_role(role)
    now = resolve(now)
    user = users.find_user(session, email)
    if user is None:
        if password is None:
            raise ValidationError(f"{email.strip()} has no account yet: a password is required")
        user = users.create_user(session, email, password, display_name=display_name, now=now)
    if session.get(Membership, (org_id, user.id)) is not None:
        raise Conflict(f"{user.email} is already a member")
    membership = Membership(org_id=org_id, user_id=user.id, role=role_value, created_at=now)
    session.add(membership)
    session.flush()
    record_member_added(session, org_id, actor, user, role_value, now=now)
    return membership


def record_member_added(
    session: Session,
    org_id: str,
    actor: Actor,
    user: User,
    role: Role,
    *,
    details: dict[str, Any] | None = None,
    now: datetime,
) -> None:
    """Audit and publish `member.added` for a membership just created."""
    audit.record(
        session,
        org_id,
        actor,
        EventType.MEMBER_ADDED,
        target=("user", user.id),
        details={"email": user.email, "role": role.value, **(details or {})},
        now=now,
    )
    emit(
        session,
        org_id,
        EventType.MEMBER_ADDED,
        {"user_id": user.id, "email": user.email, "role": role.value},
        now,
    )


def _member(session: Session, org_id: str, user_id: str) -> Membership:
    membership = session.get(Membership, (org_id, user_id))
    if membership is None:
        raise NotFound("member not found")
    return membership


def _admin_count(session: Session, org_id: str) -> int:
    return session.execute(
        select(func.count())
        .select_from(Membership)
        .where(Membership.org_id == org_id, Membership.role == Role.ADMIN)
    ).scalar_one()


def change_role(
    session: Session,
    org_id: str,
    actor: Actor,
    user_id: str,
    role: str,
    *,
    now: datetime | None = None,
) -> Membership:
    """Change a member's role; return the membership. Their console sessions end, so the
    next sign-in carries a new session token with the new role. Raise Conflict for the
    last admin."""
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    new_role = parse_role(role)
    now = resolve(now)
    lock_org(session, org_id)
    membership = _member(session, org_id, user_id)
    old = membership.role
    if old == new_role:
        return membership
    if old == Role.ADMIN and _admin_count(session, org_id) <= 1:
        raise Conflict("the last admin cannot be demoted: make someone else admin first")
    membership.role = new_role
    users.end_sessions(session, user_id)
    details = {"email": membership.user.email, "from": old, "to": new_role.value}
    audit.record(
        session,
        org_id,
        actor,
        EventType.MEMBER_ROLE_CHANGED,
        target=("user", user_id),
        details=details,
        now=now,
    )
    emit(session, org_id, EventType.MEMBER_ROLE_CHANGED, {"user_id": user_id, **details}, now)
    return membership


def remove_member(
    session: Session, org_id: str, actor: Actor, user_id: str, *, now: datetime | None = None
) -> None:
    """Remove a member. Raise Conflict for the last admin, NotFound for a non-member."""
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    now = resolve(now)
    lock_org(session, org_id)
    membership = _member(session, org_id, user_id)
    if membership.role == Role.ADMIN and _admin_count(session, org_id) <= 1:
        raise Conflict("the last admin cannot be removed")
    email = membership.user.email
    session.delete(membership)
    session.flush()
    audit.record(
        session,
        org_id,
        actor,
        EventType.MEMBER_REMOVED,
        target=("user", user_id),
        details={"email": email, "role": membership.role},
        now=now,
    )
    emit(
        session,
        org_id,
        EventType.MEMBER_REMOVED,
        {"user_id": user_id, "email": email, "role": membership.role},
        now,
    )


@dataclass(frozen=True)
class MemberView:
    user_id: str
    email: str
    display_name: str
    role: str
    joined_at: datetime


def list_members(session: Session, org_id: str, actor: Actor) -> list[MemberView]:
    """Return the organization's members, admins first, then by email."""
    check(session, org_id, actor, Permission.MEMBERS_READ)
    rows = session.execute(
        select(Membership, User).join(User).where(Membership.org_id == org_id)
    ).all()
    order = {Role.ADMIN: 0, Role.MEMBER: 1, Role.AUDITOR: 2}
    views = [MemberView(u.id, u.email, u.display_name, m.role, m.created_at) for m, u in rows]
    return sorted(views, key=lambda v: (order[Role(v.role)], v.email))


def memberships_of(session: Session, user_id: str) -> list[tuple[Organization, str]]:
    """Return (organization, role) for every organization the user belongs to, by name."""
    rows = session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.name)
    ).all()
    return [(org, role) for org, role in rows]


def get_organization(session: Session, org_id: str, actor: Actor) -> Organization:
    """Return the organization if the actor belongs to it; raise NotFound otherwise."""
    check(session, org_id, actor, Permission.KEYS_READ)
    org = session.get(Organization, org_id)
    assert org is not None
    return org


def update_settings(
    session: Session,
    org_id: str,
    actor: Actor,
    *,
    max_key_lifetime_days: int | None = None,
    alert_lead_days: list[int] | None = None,
    api_base_url: str | None = None,
    now: datetime | None = None,
) -> Organization:
    """Change organization settings; return the organization. Raise ValidationError."""
    check(session, org_id, actor, Permission.SETTINGS_MANAGE)
    org = lock_org(session, org_id)
    changes: dict[str, Any] = {}
    if max_key_lifetime_days is not None:
        lo, hi = MAX_KEY_LIFETIME_BOUNDS
        if not isinstance(max_key_lifetime_days, int) or not lo <= max_key_lifetime_days <= hi:
            raise ValidationError(
                f"maximum key lifetime must be {lo}–{hi} days", field="max_key_lifetime_days"
            )
        if max_key_lifetime_days != org.max_key_lifetime_days:
            changes["max_key_lifetime_days"] = [org.max_key_lifetime_days, max_key_lifetime_days]
            org.max_key_lifetime_days = max_key_lifetime_days
    if alert_lead_days is not None:
        lo, hi = LEAD_DAY_BOUNDS
        days = sorted({int(d) for d in alert_lead_days}, reverse=True)
        if not days or len(days) > 5 or any(not lo <= d <= hi for d in days):
            raise ValidationError(
                f"alert lead times must be 1–5 distinct values of {lo}–{hi} days",
                field="alert_lead_days",
            )
        if days != org.lead_days:
            changes["alert_lead_days"] = [org.lead_days, days]
            org.alert_lead_days = {"days": days}
    if api_base_url is not None:
        url = _base_url(api_base_url)
        if url != org.api_base_url:
            changes["api_base_url"] = [org.api_base_url, url]
            org.api_base_url = url
    if changes:
        audit.record(
            session,
            org_id,
            actor,
            EventType.SETTINGS_CHANGED,
            target=("org", org_id),
            details=changes,
            now=now,
        )
    return org


def _base_url(value: str) -> str:
    from urllib.parse import urlsplit

    url = value.strip().rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(url) > 300
        or not url.isprintable()
        or " " in url
    ):
        raise ValidationError(
            "API base URL must be an http(s) URL of at most 300 characters", field="api_base_url"
        )
    return url


def lock_org(session: Session, org_id: str) -> Organization:
    """Return the organization row locked for the rest of the transaction (fresh)."""
    return session.execute(
        select(Organization)
        .where(Organization.id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def emit(
    session: Session, org_id: str, event: EventType, data: dict[str, Any], now: datetime
) -> None:
    """Hand an event to the webhook outbox, in the caller's transaction."""
    from core import outbox

    outbox.publish(session, org_id, event, data, now=now)


_lock_org = lock_org  # the name other domains used before it was public
