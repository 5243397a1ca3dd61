"""No one reads or changes anything of an organization they do not belong to."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.audit import reports
from core.audit import service as audit
from core.errors import NotFound
from core.keys import service as keys
from core.orgs import invitations
from core.orgs import service as orgs
from core.orgs.permissions import Actor
from tests.factories import make_org

Call = Callable[[Session, dict[str, Any], Actor], object]

CALLS: dict[str, Call] = {
    "keys.list": lambda s, c, a: keys.list_keys(s, c["org"], a),
    "keys.get": lambda s, c, a: keys.get_key(s, a, c["key"]),
    "keys.create": lambda s, c, a: keys.create_key(
        s, c["org"], a, name="x", expires=30, pepper=c["pepper"]
    ),
    "keys.revoke": lambda s, c, a: keys.revoke_key(s, a, c["key"]),
    "keys.roll": lambda s, c, a: keys.roll_key(s, a, c["key"], grace="0", pepper=c["pepper"]),
    "members.list": lambda s, c, a: orgs.list_members(s, c["org"], a),
    "members.invite": lambda s, c, a: invitations.invite(s, c["org"], a, "x@y.test", "member"),
    "members.change_role": lambda s, c, a: orgs.change_role(s, c["org"], a, c["user"], "member"),
    "members.remove": lambda s, c, a: orgs.remove_member(s, c["org"], a, c["user"]),
    "settings.update": lambda s, c, a: orgs.update_settings(
        s, c["org"], a, max_key_lifetime_days=10
    ),
    "org.get": lambda s, c, a: orgs.get_organization(s, c["org"], a),
    "audit.list": lambda s, c, a: audit.list_events(s, c["org"], a),
    "audit.verify": lambda s, c, a: audit.verify_chain(s, c["org"], a),
    "audit.export": lambda s, c, a: reports.export(s, c["org"], a, "csv", c["out"]),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_admin_of_another_organization_is_refused(
    session: Session, pepper: bytes, now: datetime, tmp_path: Path, call: str
) -> None:
    acme = make_org(session, "Acme", now=now)
    globex = make_org(session, "Globex", now=now)
    with session.begin():
        key = keys.create_key(session, acme.id, acme.admin, name="k", expires=30, pepper=pepper)
    context = {
        "org": acme.id,
        "key": key.id,
        "user": acme.member.user_id,
        "pepper": pepper,
        "out": tmp_path / "out.csv",
    }
    with pytest.raises(NotFound), session.begin():
        CALLS[call](session, context, globex.admin)
    assert not (tmp_path / "out.csv").exists()
    # Acme's data is untouched.
    (view,) = keys.list_keys(session, acme.id, acme.admin)
    assert view.status != "revoked" and view.id == key.id
    assert len(orgs.list_members(session, acme.id, acme.admin)) == 4


def test_not_found_does_not_reveal_whether_a_key_exists(
    session: Session, pepper: bytes, now: datetime
) -> None:
    acme = make_org(session, "Acme", now=now)
    globex = make_org(session, "Globex", now=now)
    with session.begin():
        key = keys.create_key(session, acme.id, acme.admin, name="k", expires=30, pepper=pepper)
    with pytest.raises(NotFound) as theirs:
        keys.revoke_key(session, globex.admin, key.id)
    session.rollback()
    with pytest.raises(NotFound) as missing:
        keys.revoke_key(session, globex.admin, "key_doesnotexist")
    session.rollback()
    assert theirs.value.message == missing.value.message
