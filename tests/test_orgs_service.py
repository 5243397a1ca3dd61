"""Organizations and members: who is recorded, the last admin, and settings validation."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.orm import Session

from core.audit import service as audit
from core.errors import Conflict, ValidationError
from core.orgs import service as orgs
from core.orgs import users
from core.orgs.errors import OperatorOnly
from core.orgs.permissions import Actor
from tests.factories import PASSWORD, make_org


def test_the_operator_or_the_new_admin_is_recorded_as_creator(session: Session) -> None:
    with session.begin():
        cli_org, _ = orgs.create_organization(session, "Ops Made", "ops@x.test", PASSWORD)
        own_org, admin = orgs.create_organization(
            session, "Self Made", "me@x.test", PASSWORD, self_service=True
        )
    system = orgs.Actor.system()
    first = audit.list_events(session, cli_org.id, system)[0]
    assert (first.actor_type, first.actor_email) == ("system", "cli")
    first = audit.list_events(session, own_org.id, system)[0]
    assert (first.actor_type, first.actor_id) == ("user", admin.id)


def test_the_last_admin_can_be_neither_demoted_nor_removed(session: Session, now: datetime) -> None:
    org = make_org(session, now=now)
    admin_id = org.admin.user_id or ""
    with pytest.raises(Conflict, match="last admin"), session.begin():
        orgs.change_role(session, org.id, org.admin, admin_id, "member")
    with pytest.raises(Conflict, match="last admin"), session.begin():
        orgs.remove_member(session, org.id, org.admin, admin_id)
    with session.begin():
        orgs.change_role(session, org.id, org.admin, org.member.user_id or "", "admin")
        orgs.change_role(session, org.id, org.admin, admin_id, "auditor")
    roles = {m.email: m.role for m in orgs.list_members(session, org.id, org.member)}
    assert roles[org.admin.email] == "auditor" and roles[org.member.email] == "admin"


def test_only_the_operator_adds_a_member_directly(session: Session, now: datetime) -> None:
    acme = make_org(session, "Acme", now=now)
    globex = make_org(session, "Globex", now=now)
    with pytest.raises(OperatorOnly, match="only the operator"), session.begin():
        orgs.add_member(
            session, acme.id, acme.admin, "new@x.test", "member", password="another-passw0rd"
        )
    with session.begin():
        assert users.find_user(session, "new@x.test") is None
    operator = Actor.system("cli")
    with pytest.raises(ValidationError, match="password is required"), session.begin():
        orgs.add_member(session, acme.id, operator, "new@x.test", "member")
    with session.begin():
        orgs.add_member(session, acme.id, operator, globex.member.email or "", "auditor")
    with session.begin():
        user = users.user_by_email(session, globex.member.email or "")
        assert users.password_matches(user, PASSWORD)
        names = [org.name for org, _ in orgs.memberships_of(session, user.id)]
    assert names == ["Acme", "Globex"]
    with pytest.raises(Conflict, match="already a member"), session.begin():
        orgs.add_member(session, acme.id, operator, globex.member.email or "", "member")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_key_lifetime_days": 0}, "1–3650 days"),
        ({"max_key_lifetime_days": 5000}, "1–3650 days"),
        ({"alert_lead_days": []}, "1–5 distinct"),
        ({"alert_lead_days": [400]}, "1–5 distinct"),
        ({"api_base_url": "ftp://x"}, r"http\(s\) URL"),
        ({"api_base_url": "https://exa mple.com"}, r"http\(s\) URL"),
        ({"api_base_url": "https://" + "a" * 300}, r"http\(s\) URL"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    session: Session, changes: dict[str, object], message: str
) -> None:
    org = make_org(session)
    with pytest.raises(ValidationError, match=message), session.begin():
        orgs.update_settings(session, org.id, org.admin, **changes)  # type: ignore[arg-type]
    fresh = orgs.get_organization(session, org.id, org.admin)
    assert fresh.max_key_lifetime_days == 365 and fresh.lead_days == [30, 7, 1]
    assert fresh.api_base_url == "https://api.example.com"


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("a@b.co", True),
        ("A.B+tag@Example.COM", True),
        ("no-at", False),
        ("a@", False),
        ("a b@c.d", False),
        ("a@-x.com", False),
        ("x" * 65 + "@b.co", False),
    ],
)
def test_email_validation(email: str, ok: bool) -> None:
    from core import validation

    if ok:
        assert validation.email(email) == email.lower()
    else:
        with pytest.raises(ValidationError, match="not a valid email"):
            validation.email(email)


@pytest.mark.parametrize(
    "password", ["short1!", "a" * 12, "123456789012", "x" * 129, "good-passw0rd\n"]
)
def test_weak_passwords_are_refused_with_the_rules(password: str) -> None:
    from core import validation

    with pytest.raises(ValidationError, match="Passwords need 12–128 characters"):
        validation.password(password)
