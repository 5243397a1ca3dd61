"""Which organizations an actor may analyse: the notebooks' and the console's starting point."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.orgs.models import Membership, Organization
from core.orgs.permissions import Actor, Permission, can


def organizations(session: Session, actor: Actor) -> pd.DataFrame:
    """Return the organizations whose usage the actor may read: org_id, name, created_at.

    The system actor (the operator) sees every organization; a user sees those where their
    role holds usage.read. Ordered by name.
    """
    q = select(Organization.id, Organization.name, Organization.created_at)
    if not actor.is_system:
        q = q.join(Membership, Membership.org_id == Organization.id).where(
            Membership.user_id == actor.user_id
        )
        q = q.add_columns(Membership.role)
    rows = [tuple(r) for r in session.execute(q.order_by(Organization.name))]
    if not actor.is_system:
        rows = [r[:3] for r in rows if can(str(r[3]), Permission.USAGE_READ)]
    return pd.DataFrame(rows, columns=pd.Index(["org_id", "name", "created_at"]))
