"""The whole role × action table, through the real service calls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.audit import reports
from core.audit import service as audit
from core.errors import PermissionDenied
from core.keys import service as keys
from core.orgs import invitations
from core.orgs import service as orgs
from core.orgs.models import Role
from core.orgs.permissions import ROLE_PERMISSIONS, Actor, Permission, can
from tests.factories import OrgFixture, make_org

Action = Callable[[Session, OrgFixture, Actor, dict[str, Any]], object]

ACTIONS: dict[str, tuple[Action, set[str]]] = {
    # action: (call, actors allowed among admin / member / other_member / auditor)
    "keys.list": (
        lambda s, o, a, c: keys.list_keys(s, o.id, a),
        {"admin", "member", "other_member", "auditor"},
    ),
    "keys.get": (
        lambda s, o, a, c: keys.get_key(s, a, c["member_key"]),
        {"admin", "member", "other_member", "auditor"},
    ),
    "keys.create": (
        lambda s, o, a, c: keys.create_key(s, o.id, a, name="n", expires=30, pepper=c["pepper"]),
        {"admin", "member", "other_member"},
    ),
    "keys.revoke_members_key": (
        lambda s, o, a, c: keys.revoke_key(s, a, c["member_key"]),
        {"admin", "member"},
    ),
    "keys.revoke_admins_key": (
        lambda s, o, a, c: keys.revoke_key(s, a, c["admin_key"]),
        {"admin"},
    ),
    "keys.roll_members_key": (
        lambda s, o, a, c: keys.roll_key(s, a, c["member_key"], grace="1h", pepper=c["pepper"]),
        {"admin", "member"},
    ),
    "keys.roll_admins_key": (
        lambda s, o, a, c: keys.roll_key(s, a, c["admin_key"], grace="0", pepper=c["pepper"]),
        {"admin"},
    ),
    "members.list": (lambda s, o, a, c: orgs.list_members(s, o.id, a), {"admin", "auditor"}),
    "members.invite": (
        lambda s, o, a, c: invitations.invite(s, o.id, a, "new@x.test", "member"),
        {"admin"},
    ),
    "members.change_role": (
        lambda s, o, a, c: orgs.change_role(s, o.id, a, o.other_member.user_id or "", "auditor"),
        {"admin"},
    ),
    "members.remove": (
        lambda s, o, a, c: orgs.remove_member(s, o.id, a, o.other_member.user_id or ""),
        {"admin"},
    ),
    "settings.update": (
        lambda s, o, a, c: orgs.update_settings(s, o.id, a, max_key_lifetime_days=180),
        {"admin"},
    ),
    "audit.list": (lambda s, o, a, c: audit.list_events(s, o.id, a), {"admin", "auditor"}),
    "audit.verify": (lambda s, o, a, c: audit.verify_chain(s, o.id, a), {"admin", "auditor"}),
    "audit.export": (
        lambda s, o, a, c: reports.export(s, o.id, a, "csv", c["tmp"] / "audit.csv"),
        {"admin", "auditor"},
    ),
}
ACTORS = ["admin", "member", "other_member", "auditor"]


@pytest.mark.parametrize("actor_name", ACTORS)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_role_action_table(
    session: Session, pepper: bytes, now: datetime, tmp_path: Path, action: str, actor_name: str
) -> None:
    org = make_org(session, now=now)
    with session.begin():
        member_key = keys.create_key(
            session, org.id, org.member, name="m", expires=30, pepper=pepper
        ).id
        admin_key = keys.create_key(
            session, org.id, org.admin, name="a", expires=30, pepper=pepper
        ).id
    context = {"pepper": pepper, "member_key": member_key, "admin_key": admin_key, "tmp": tmp_path}
    call, allowed = ACTIONS[action]
    actor: Actor = getattr(org, actor_name)
    if actor_name in allowed:
        with session.begin():
            call(session, org, actor, context)
    else:
        with pytest.raises(PermissionDenied) as info, session.begin():
            call(session, org, actor, context)
        assert info.value.code == "permission_denied"
        assert info.value.permission in info.value.message
        assert not (tmp_path / "audit.csv").exists()


def test_the_table_matches_the_issue() -> None:
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert not any(
        can("auditor", p)
        for p in Permission
        if p.value.endswith((".create", ".manage", ".manage_own", ".manage_any"))
    )
    assert can("auditor", Permission.AUDIT_EXPORT)
    assert can("member", Permission.KEYS_CREATE) and can("member", Permission.USAGE_READ)
    assert not can("member", Permission.KEYS_MANAGE_ANY)
    assert not can(None, Permission.KEYS_READ)
