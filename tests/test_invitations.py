"""Invitations: a person joins by accepting a one-time link; nobody sets their password."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent
from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.orgs import invitations, tokens, users
from core.orgs import service as orgs
from core.orgs.models import Invitation
from core.orgs.permissions import Actor, Permission, require
from core.sessions import service as sessions
from tests.factories import PASSWORD, make_org

NEW_PASSWORD = "vic-own-passphrase-7"


@contextlib.contextmanager
def _tx(session: Session) -> Iterator[None]:
    """Commit a block, ending first the read transaction an earlier check opened."""
    session.rollback()
    with session.begin():
        yield


def _invite(session: Session, org, email="vic@acme.test", role="member", now=None):
    with _tx(session):
        return invitations.invite(session, org.id, org.admin, email, role, now=now)


def _events(session: Session, org_id: str, action: str) -> list[AuditEvent]:
    return list(
        session.execute(
            select(AuditEvent)
            .where(AuditEvent.org_id == org_id, AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).scalars()
    )


def test_an_invitation_is_audited_and_keeps_only_a_hash_of_its_token(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    issued = _invite(session, org, now=now)
    assert tokens.well_formed(issued.token, tokens.INVITATION)
    assert issued.expires_at == now + timedelta(days=7)
    assert issued.token not in repr(issued)
    assert issued.url("https://console.example/").startswith(
        "https://console.example/accept-invitation?token=inv_"
    )
    row = session.execute(select(Invitation)).scalar_one()
    assert row.token_hash == tokens.token_hash(issued.token) != issued.token
    (event,) = _events(session, org.id, "member.invited")
    assert (event.actor_id, event.target_type, event.target_id) == (
        org.admin.user_id,
        "invitation",
        issued.id,
    )
    assert event.details["email"] == "vic@acme.test" and event.details["role"] == "member"
    assert issued.token not in str(event.details)


def test_a_pending_invitation_grants_nothing(session: Session, now: datetime) -> None:
    org = make_org(session, now=now)
    issued = _invite(session, org, "new@acme.test", "admin", now=now)
    with _tx(session):
        assert users.find_user(session, "new@acme.test") is None
        user = invitations.accept_new_account(session, issued.token, NEW_PASSWORD, now=now)
    with _tx(session):
        assert require(session, org.id, user.id, Permission.MEMBERS_MANAGE).role == "admin"
    other = _invite(session, org, "ex@acme.test", "admin", now=now)
    with _tx(session):
        existing = users.create_user(session, "ex@acme.test", NEW_PASSWORD, now=now)
    with _tx(session), pytest.raises(NotFound):  # invited, not accepted: not a member
        require(session, org.id, existing.id, Permission.KEYS_READ)
    assert other.token


def test_a_new_person_sets_their_own_password_and_the_link_works_once(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    issued = _invite(session, org, now=now)
    with _tx(session):
        offer = invitations.pending(session, issued.token, now=now)
    assert (offer.org_name, offer.email, offer.role, offer.has_account) == (
        "Acme",
        "vic@acme.test",
        "member",
        False,
    )
    with _tx(session), pytest.raises(ValidationError):
        invitations.accept_new_account(session, issued.token, "password1234", now=now)
    with _tx(session):
        user = invitations.accept_new_account(
            session, issued.token, NEW_PASSWORD, display_name="Vic", now=now
        )
    assert users.password_matches(user, NEW_PASSWORD) and user.display_name == "Vic"
    (added,) = [e for e in _events(session, org.id, "member.added") if e.target_id == user.id]
    assert added.actor_id == user.id and added.details["invitation_id"] == issued.id
    for attempt in (
        lambda: invitations.accept_new_account(session, issued.token, NEW_PASSWORD, now=now),
        lambda: invitations.accept_signed_in(session, issued.token, user.id, now=now),
        lambda: invitations.pending(session, issued.token, now=now),
    ):
        with _tx(session), pytest.raises(NotFound, match="not valid"):
            attempt()


def test_an_expired_invitation_cannot_be_accepted_until_resent(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    issued = _invite(session, org, now=now)
    later = now + timedelta(days=7)
    with _tx(session), pytest.raises(Conflict, match="expired"):
        invitations.accept_new_account(session, issued.token, NEW_PASSWORD, now=later)
    with _tx(session):
        views = invitations.list_invitations(session, org.id, org.admin, now=later)
        assert [v.status for v in views] == ["expired"]
        again = invitations.resend(session, org.id, org.admin, issued.id, now=later)
    assert again.token != issued.token and again.expires_at == later + timedelta(days=7)
    with _tx(session), pytest.raises(NotFound):  # the old link died with the resend
        invitations.accept_new_account(session, issued.token, NEW_PASSWORD, now=later)
    with _tx(session):
        invitations.accept_new_account(session, again.token, NEW_PASSWORD, now=later)
    assert [e.action for e in _events(session, org.id, "member.invitation_resent")]


def test_a_revoked_invitation_is_dead(session: Session, now: datetime) -> None:
    org = make_org(session, now=now)
    issued = _invite(session, org, now=now)
    with _tx(session):
        invitations.revoke(session, org.id, org.admin, issued.id, now=now)
    with _tx(session), pytest.raises(NotFound):
        invitations.accept_new_account(session, issued.token, NEW_PASSWORD, now=now)
    with _tx(session), pytest.raises(Conflict, match="revoked"):
        invitations.resend(session, org.id, org.admin, issued.id, now=now)
    with _tx(session), pytest.raises(Conflict, match="already revoked"):
        invitations.revoke(session, org.id, org.admin, issued.id, now=now)
    assert _events(session, org.id, "member.invitation_revoked")
    with _tx(session):  # a new invitation can follow
        invitations.invite(session, org.id, org.admin, "vic@acme.test", "member", now=now)


def test_an_existing_account_accepts_only_when_signed_in_as_itself(
    session: Session, now: datetime
) -> None:
    acme = make_org(session, "Acme", now=now)
    globex = make_org(session, "Globex", now=now)
    issued = _invite(session, acme, globex.member.email or "", "auditor", now=now)
    with _tx(session):
        assert invitations.pending(session, issued.token, now=now).has_account
    with _tx(session), pytest.raises(Conflict, match="already has an account"):
        invitations.accept_new_account(session, issued.token, "attacker-chosen-pw9", now=now)
    with _tx(session), pytest.raises(Conflict, match="sign in with that account"):
        invitations.accept_signed_in(session, issued.token, globex.admin.user_id or "", now=now)
    with _tx(session):  # a session opened before joining: a new privilege ends it
        before, _ = sessions.open_session(session, globex.member.user_id or "", now=now)
    with _tx(session):
        invitations.accept_signed_in(session, issued.token, globex.member.user_id or "", now=now)
    assert sessions.resume(session, before, now=now) is None
    with _tx(session):
        user = users.user_by_email(session, globex.member.email or "")
        assert users.password_matches(user, PASSWORD)  # untouched
        roles = {o.name: r for o, r in orgs.memberships_of(session, user.id)}
    assert roles == {"Acme": "auditor", "Globex": "member"}


def test_only_admins_invite_revoke_and_resend(session: Session, now: datetime) -> None:
    org = make_org(session, now=now)
    issued = _invite(session, org, now=now)
    for who in (org.member, org.auditor):
        with _tx(session), pytest.raises(PermissionDenied):
            invitations.invite(session, org.id, who, "x@acme.test", "admin", now=now)
        with _tx(session), pytest.raises(PermissionDenied):
            invitations.revoke(session, org.id, who, issued.id, now=now)
        with _tx(session), pytest.raises(PermissionDenied):
            invitations.resend(session, org.id, who, issued.id, now=now)
    with _tx(session):
        assert len(invitations.list_invitations(session, org.id, org.auditor)) == 1


@pytest.mark.parametrize(
    ("email", "error", "message"),
    [
        ("member@acme.test", Conflict, "already a member"),
        ("vic@acme.test", Conflict, "pending invitation"),
        ("not an email", ValidationError, "not a valid email"),
    ],
)
def test_inviting_twice_or_a_member_is_refused(
    session: Session, now: datetime, email: str, error: type, message: str
) -> None:
    org = make_org(session, now=now)
    _invite(session, org, now=now)
    with _tx(session), pytest.raises(error, match=message):
        invitations.invite(session, org.id, org.admin, email, "member", now=now)


@pytest.mark.parametrize("token", ["", "inv_short", "pwr_" + "A" * 43, "inv_" + "A" * 43, None])
def test_a_made_up_invitation_token_is_not_valid(session: Session, now: datetime, token) -> None:
    make_org(session, now=now)
    with _tx(session), pytest.raises(NotFound, match="not valid"):
        invitations.pending(session, token, now=now)


def test_no_service_call_lets_an_admin_set_another_persons_password(
    session: Session, now: datetime
) -> None:
    """The reported takeover, at the service level: Beta's admin cannot create or change
    vic's password; vic's own account keeps vic's password; Acme's access needs Acme's
    link accepted by the account holder."""
    acme = make_org(session, "Acme", now=now)
    beta = make_org(session, "Beta", now=now)
    with _tx(session), pytest.raises(PermissionDenied, match="only the operator"):
        orgs.add_member(
            session, beta.id, beta.admin, "vic@acme.example", "member", password="x" * 12
        )
    with _tx(session), pytest.raises(PermissionDenied, match="only the operator"):
        users.set_password(session, beta.admin, "member@beta.test", "attacker-chosen-pw9")
    acme_link = _invite(session, acme, "vic@acme.example", "admin", now=now)
    with _tx(session):
        vic = invitations.accept_new_account(session, acme_link.token, NEW_PASSWORD, now=now)
    beta_link = _invite(session, beta, "vic@acme.example", "member", now=now)
    with (
        _tx(session),
        pytest.raises(Conflict),
    ):  # Beta's admin holds the link, not vic's password
        invitations.accept_new_account(session, beta_link.token, "attacker-chosen-pw9", now=now)
    with _tx(session):
        invitations.accept_signed_in(session, beta_link.token, vic.id, now=now)  # vic's choice
    with _tx(session), pytest.raises(PermissionDenied, match="organizations you do not"):
        users.issue_reset(session, beta.admin, "vic@acme.example", org_id=beta.id, now=now)
    with _tx(session):
        orgs.remove_member(session, beta.id, beta.admin, vic.id)
        assert users.password_matches(
            users.user_by_email(session, "vic@acme.example"), NEW_PASSWORD
        )


def test_an_admin_issues_a_reset_only_for_people_wholly_in_their_organizations(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    with _tx(session):
        issued = users.issue_reset(
            session, org.admin, org.member.email or "", org_id=org.id, now=now
        )
    assert tokens.well_formed(issued.token, tokens.PASSWORD_RESET)
    with _tx(session), pytest.raises(PermissionDenied):
        users.issue_reset(session, org.member, org.admin.email or "", org_id=org.id, now=now)
    with _tx(session), pytest.raises(ValidationError, match="organization"):
        users.issue_reset(session, org.admin, org.member.email or "", now=now)
    with _tx(session):
        users.issue_reset(session, Actor.system("cli"), org.member.email or "", now=now)
