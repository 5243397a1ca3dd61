"""Invitations: how a person joins an organization.

An admin (or the operator) invites an email address with a role. The invitation holds
the SHA-256 of a one-time token; the link carrying the token is shown once to copy (and
e-mailed when SMTP is configured), expires after 7 days and works once. It grants
nothing until accepted: a new person accepts by setting their own password; a person
who already has an account accepts by signing in with it (the console signs them in
first and passes the signed-in user). Pending invitations can be revoked or resent
(resending issues a new token; the old link stops working).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import validation
from core.audit import service as audit
from core.clock import resolve
from core.errors import Conflict, NotFound
from core.events import EventType
from core.ids import new_id
from core.orgs import service as orgs
from core.orgs import tokens, users
from core.orgs.models import Invitation, Membership, Organization, Role, User
from core.orgs.permissions import Actor, Permission, check

LIFETIME = timedelta(days=7)
_NOT_VALID = "This invitation link is not valid: it was used, revoked or replaced."
_EXPIRED = "This invitation has expired: ask the organization's admin to resend it."


@dataclass(frozen=True)
class IssuedInvitation:
    """An invitation just created or resent, with its link's secret (shown once)."""

    id: str
    org_id: str
    org_name: str
    email: str
    role: str
    expires_at: datetime
    token: str = field(repr=False)

    def url(self, console_url: str) -> str:
        """Return the link to hand to the person."""
        return f"{console_url.rstrip('/')}/accept-invitation?token={self.token}"


@dataclass(frozen=True)
class InvitationView:
    id: str
    email: str
    role: str
    invited_by: str
    created_at: datetime
    expires_at: datetime
    status: str  # pending | expired | accepted | revoked


@dataclass(frozen=True)
class PendingInvitation:
    """What the person opening a live link may see before accepting."""

    org_name: str
    email: str
    role: str
    expires_at: datetime
    has_account: bool


def invite(
    session: Session,
    org_id: str,
    actor: Actor,
    email: str,
    role: str,
    *,
    now: datetime | None = None,
) -> IssuedInvitation:
    """Invite `email` to the organization with `role`; return the invitation and its secret.

    Raise PermissionDenied without members.manage, ValidationError for a bad email or
    role, Conflict if the person is already a member or has a pending invitation.
    """
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    address = validation.email(email)
    role_value = orgs.parse_role(role)
    now = resolve(now)
    org = orgs.lock_org(session, org_id)
    existing = users.find_user(session, address)
    if existing is not None and session.get(Membership, (org_id, existing.id)) is not None:
        raise Conflict(f"{address} is already a member")
    for other in _invitations_for(session, org_id, address):
        if other.status(now) == "pending":
            raise Conflict(f"{address} already has a pending invitation: resend it instead")
    token = tokens.new_token(tokens.INVITATION)
    invitation = Invitation(
        id=new_id("inv"),
        org_id=org_id,
        email=address,
        role=role_value.value,
        token_hash=tokens.token_hash(token),
        invited_by=actor.user_id,
        invited_by_email=actor.email or "cli",
        created_at=now,
        expires_at=now + LIFETIME,
    )
    session.add(invitation)
    session.flush()
    _record(session, invitation, actor, EventType.MEMBER_INVITED, now)
    return _issued(invitation, org, token)


def _issued(invitation: Invitation, org: Organization, token: str) -> IssuedInvitation:
    return IssuedInvitation(
        invitation.id,
        org.id,
        org.name,
        invitation.email,
        invitation.role,
        invitation.expires_at,
        token,
    )


def _invitations_for(session: Session, org_id: str, email: str) -> list[Invitation]:
    return list(
        session.execute(
            select(Invitation).where(Invitation.org_id == org_id, Invitation.email == email)
        ).scalars()
    )


def _record(
    session: Session, invitation: Invitation, actor: Actor, action: EventType, now: datetime
) -> None:
    audit.record(
        session,
        invitation.org_id,
        actor,
        action,
        target=("invitation", invitation.id),
        details={
            "email": invitation.email,
            "role": invitation.role,
            "expires_at": invitation.expires_at.isoformat(),
        },
        now=now,
    )


def list_invitations(
    session: Session, org_id: str, actor: Actor, *, now: datetime | None = None
) -> list[InvitationView]:
    """Return the organization's invitations, newest first (members.read)."""
    check(session, org_id, actor, Permission.MEMBERS_READ)
    now = resolve(now)
    rows = session.execute(
        select(Invitation)
        .where(Invitation.org_id == org_id)
        .order_by(Invitation.created_at.desc(), Invitation.id.desc())
    ).scalars()
    return [
        InvitationView(
            i.id, i.email, i.role, i.invited_by_email, i.created_at, i.expires_at, i.status(now)
        )
        for i in rows
    ]


def _locked(session: Session, org_id: str, invitation_id: str) -> Invitation:
    invitation = session.execute(
        select(Invitation)
        .where(Invitation.id == invitation_id, Invitation.org_id == org_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar()
    if invitation is None:
        raise NotFound("invitation not found")
    return invitation


def revoke(
    session: Session,
    org_id: str,
    actor: Actor,
    invitation_id: str,
    *,
    now: datetime | None = None,
) -> None:
    """Revoke a pending (or expired) invitation: its link stops working.

    Raise PermissionDenied without members.manage, NotFound, Conflict once accepted or
    already revoked.
    """
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    now = resolve(now)
    invitation = _locked(session, org_id, invitation_id)
    if invitation.status(now) in ("accepted", "revoked"):
        raise Conflict(f"this invitation was already {invitation.status(now)}")
    invitation.revoked_at = now
    _record(session, invitation, actor, EventType.MEMBER_INVITATION_REVOKED, now)


def resend(
    session: Session,
    org_id: str,
    actor: Actor,
    invitation_id: str,
    *,
    now: datetime | None = None,
) -> IssuedInvitation:
    """Issue a new link (and a new 7-day expiry) for a pending or expired invitation; the
    old link stops working. Return it. Raise PermissionDenied, NotFound, Conflict once
    accepted or revoked.
    """
    check(session, org_id, actor, Permission.MEMBERS_MANAGE)
    now = resolve(now)
    invitation = _locked(session, org_id, invitation_id)
    if invitation.status(now) in ("accepted", "revoked"):
        raise Conflict(f"this invitation was {invitation.status(now)}: invite again instead")
    token = tokens.new_token(tokens.INVITATION)
    invitation.token_hash = tokens.token_hash(token)
    invitation.expires_at = now + LIFETIME
    session.flush()
    _record(session, invitation, actor, EventType.MEMBER_INVITATION_RESENT, now)
    org = session.get(Organization, org_id)
    assert org is not None
    return _issued(invitation, org, token)


def _live(session: Session, token: str, now: datetime, *, lock: bool = False) -> Invitation:
    if not tokens.well_formed(token, tokens.INVITATION):
        raise NotFound(_NOT_VALID)
    query = select(Invitation).where(Invitation.token_hash == tokens.token_hash(token))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    invitation = session.execute(query).scalar()
    if invitation is None or invitation.status(now) in ("accepted", "revoked"):
        raise NotFound(_NOT_VALID)
    if invitation.status(now) == "expired":
        raise Conflict(_EXPIRED)
    return invitation


def pending(session: Session, token: str, *, now: datetime | None = None) -> PendingInvitation:
    """Return what a live invitation offers; raise NotFound or Conflict (expired)."""
    invitation = _live(session, token, resolve(now))
    return PendingInvitation(
        invitation.org.name,
        invitation.email,
        invitation.role,
        invitation.expires_at,
        users.find_user(session, invitation.email) is not None,
    )


def accept_new_account(
    session: Session,
    token: str,
    password: str,
    *,
    display_name: str | None = None,
    now: datetime | None = None,
) -> User:
    """Accept an invitation as a new person with their own password; return the account.

    Raise NotFound / Conflict for a link that is not live, Conflict if the email has an
    account already (sign in to accept instead), ValidationError for a bad password.
    """
    now = resolve(now)
    invitation = _live(session, token, now, lock=True)
    if users.find_user(session, invitation.email) is not None:
        raise Conflict(f"{invitation.email} already has an account: sign in to accept")
    user = users.create_user(
        session, invitation.email, password, display_name=display_name, now=now
    )
    _join(session, invitation, user, now)
    return user


def accept_signed_in(
    session: Session, token: str, user_id: str, *, now: datetime | None = None
) -> Membership:
    """Accept an invitation for the person signed in as `user_id` (their account's email
    must be the invited one); return the membership. Raise NotFound / Conflict for a link
    that is not live or is for another email, Conflict if already a member.
    """
    now = resolve(now)
    invitation = _live(session, token, now, lock=True)
    user = users.lock_user(session, user_id)
    if user.disabled or user.email != invitation.email:
        raise Conflict(
            f"This invitation is for {invitation.email}: sign in with that account to accept."
        )
    return _join(session, invitation, user, now)


def _join(session: Session, invitation: Invitation, user: User, now: datetime) -> Membership:
    if session.get(Membership, (invitation.org_id, user.id)) is not None:
        raise Conflict(f"{user.email} is already a member")
    orgs.lock_org(session, invitation.org_id)
    invitation.accepted_at = now
    invitation.accepted_by = user.id
    membership = Membership(
        org_id=invitation.org_id, user_id=user.id, role=invitation.role, created_at=now
    )
    session.add(membership)
    session.flush()
    orgs.record_member_added(
        session,
        invitation.org_id,
        Actor.user(user.id, user.email),
        user,
        Role(invitation.role),
        details={"invitation_id": invitation.id, "invited_by": invitation.invited_by_email},
        now=now,
    )
    # Joining is a change of privilege: the sessions opened before it end.
    users.end_sessions(session, user.id)
    return membership
