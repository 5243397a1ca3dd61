"""The permission table: one place that says which role may do what.

Every service call that reads or changes an organization's data checks the actor with
`check` (which calls `require` for a person) before it touches anything, so the console
hiding a button is a courtesy, never the guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.orm import Session

from core.errors import NotFound, PermissionDenied
from core.orgs.models import Membership, Organization, Role


class Permission(StrEnum):
    KEYS_READ = "keys.read"
    KEYS_CREATE = "keys.create"
    KEYS_MANAGE_OWN = "keys.manage_own"  # roll and revoke keys you created
    KEYS_MANAGE_ANY = "keys.manage_any"  # roll and revoke any key of the organization
    USAGE_READ = "usage.read"
    MEMBERS_READ = "members.read"
    MEMBERS_MANAGE = "members.manage"
    SETTINGS_READ = "settings.read"
    SETTINGS_MANAGE = "settings.manage"
    WEBHOOKS_READ = "webhooks.read"
    WEBHOOKS_MANAGE = "webhooks.manage"
    AUDIT_READ = "audit.read"
    AUDIT_EXPORT = "audit.export"


@dataclass(frozen=True)
class Actor:
    """Who performs an action: a signed-in user, or the operator/system (no role checks).

    The system actor is the operator at the command line with the database's own
    credentials, and the product's schedulers; it is recorded as such in the audit log.
    The anonymous actor is someone not signed in (a failed sign-in); it holds nothing.
    """

    type: str  # "user" | "system" | "anonymous"
    user_id: str | None = None
    email: str | None = None

    @classmethod
    def user(cls, user_id: str, email: str) -> Actor:
        return cls("user", user_id, email)

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls("system", None, name)

    @classmethod
    def anonymous(cls) -> Actor:
        return cls("anonymous", None, "anonymous")

    @property
    def is_system(self) -> bool:
        return self.type == "system"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.MEMBER: frozenset({P.KEYS_READ, P.KEYS_CREATE, P.KEYS_MANAGE_OWN, P.USAGE_READ}),
    Role.AUDITOR: frozenset(
        {
            P.KEYS_READ,
            P.USAGE_READ,
            P.MEMBERS_READ,
            P.SETTINGS_READ,
            P.WEBHOOKS_READ,
            P.AUDIT_READ,
            P.AUDIT_EXPORT,
        }
    ),
}


def can(role: str | None, permission: Permission) -> bool:
    """Return whether `role` holds `permission` (None, a non-member, holds nothing)."""
    return role is not None and permission in ROLE_PERMISSIONS[Role(role)]


def membership_of(session: Session, org_id: str, user_id: str) -> Membership | None:
    """Return the user's membership in the organization, or None."""
    return session.get(Membership, (org_id, user_id))


def require(session: Session, org_id: str, user_id: str, permission: Permission) -> Membership:
    """Return the actor's membership if it grants `permission`.

    Raise NotFound if the user does not belong to the organization (its existence is not
    revealed), PermissionDenied naming the permission if the role lacks it.
    """
    membership = membership_of(session, org_id, user_id)
    if membership is None or membership.user.disabled:
        raise NotFound("organization not found")
    if not can(membership.role, permission):
        raise PermissionDenied(permission, membership.role)
    return membership


def check(session: Session, org_id: str, actor: Actor, permission: Permission) -> str | None:
    """Return the actor's role in the organization (None for the system actor).

    Raise NotFound if a user actor is not a member, PermissionDenied if the role lacks
    `permission`. The system actor passes; the organization must still exist.
    """
    if actor.is_system:
        if session.get(Organization, org_id) is None:
            raise NotFound("organization not found")
        return None
    if actor.user_id is None:  # anonymous: belongs to no organization
        raise NotFound("organization not found")
    return require(session, org_id, actor.user_id, permission).role
