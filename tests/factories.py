"""Small builders for tests: organizations with people in each role."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from core.orgs import service as orgs
from core.orgs.permissions import Actor
from core.webhooks import catalog

PASSWORD = "correct-horse-42"
PLATFORM_EVENT = "invoice.paid"


@dataclass
class OrgFixture:
    id: str
    name: str
    admin: Actor
    member: Actor
    auditor: Actor
    other_member: Actor


def make_org(session: Session, name: str = "Acme", *, now: datetime | None = None) -> OrgFixture:
    """Create an organization with an admin, two members and an auditor; commit it.

    The operator adds the people directly (admins can only invite).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "org"
    with session.begin():
        org, admin = orgs.create_organization(
            session, name, f"admin@{slug}.test", PASSWORD, now=now
        )
        admin_actor = Actor.user(admin.id, admin.email)
        people = {}
        for role, local in [("member", "member"), ("auditor", "auditor"), ("member", "member2")]:
            m = orgs.add_member(
                session,
                org.id,
                Actor.system("cli"),
                f"{local}@{slug}.test",
                role,
                password=PASSWORD,
                now=now,
            )
            people[local] = Actor.user(m.user_id, m.user.email)
    return OrgFixture(
        org.id, org.name, admin_actor, people["member"], people["auditor"], people["member2"]
    )


def register_platform_event(
    session: Session, name: str = PLATFORM_EVENT, *, schema: dict[str, object] | None = None
) -> str:
    """Register a platform event type in the catalog (no schema unless given); commit it."""
    with session.begin():
        catalog.register_event_type(session, name, "an invoice was paid", schema=schema)
    return name
