"""Console sign-in and sessions at the service level: sessions and their timeouts, the
handoff, first-run setup, throttling that cannot lock the owner out, and the audit of
failed sign-ins in bursts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent
from core.errors import AuthenticationFailed, Conflict, ValidationError
from core.orgs import tokens, users
from core.orgs.permissions import Actor
from core.sessions import service as sessions
from core.sessions import signin
from core.sessions.models import ConsoleSession, SigninBurst
from core.validation import PASSWORD_RULES
from tests.factories import PASSWORD, make_org

HOUR = timedelta(hours=1)
POLICY = sessions.SessionPolicy(lifetime=12 * HOUR, idle=timedelta(minutes=30))
OWNER = signin.Client.of("198.51.100.10", "Owner's browser")
ATTACKER = signin.Client.of("203.0.113.66", "curl/8.0")


@contextlib.contextmanager
def _tx(session: Session) -> Iterator[None]:
    """Commit a block, ending first the read transaction an earlier check opened."""
    session.rollback()
    with session.begin():
        yield


def _attempt(session: Session, email: str, password: str, client: signin.Client, now):
    with _tx(session):
        return signin.sign_in(session, email, password, client, now=now)


def _open(session: Session, email: str, now: datetime) -> str:
    with _tx(session):
        user = users.user_by_email(session, email)
        token, _ = sessions.open_session(session, user.id, policy=POLICY, now=now)
    return token


def _failed_events(session: Session, org_id: str) -> list[AuditEvent]:
    session.rollback()
    return list(
        session.execute(
            select(AuditEvent)
            .where(AuditEvent.org_id == org_id, AuditEvent.action == "auth.signin_failed")
            .order_by(AuditEvent.seq)
        ).scalars()
    )


# --- sessions -------------------------------------------------------------------------


def test_a_session_resumes_until_its_absolute_end_and_keeps_only_a_hash(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    token = _open(session, "admin@acme.test", now)
    assert tokens.well_formed(token, tokens.SESSION)
    stored = session.execute(select(ConsoleSession)).scalar_one()
    assert stored.token_hash == tokens.token_hash(token) != token
    later = now
    while later < now + 12 * HOUR - timedelta(minutes=20):  # used every 20 minutes
        later += timedelta(minutes=20)
        who = sessions.resume(session, token, policy=POLICY, now=later)
        assert who is not None and who.user_id == org.admin.user_id
        with _tx(session):
            sessions.touch(session, token, now=later)
    assert sessions.resume(session, token, policy=POLICY, now=now + 12 * HOUR) is None


def test_an_idle_session_ends_after_the_idle_timeout(session: Session, now: datetime) -> None:
    make_org(session, now=now)
    token = _open(session, "admin@acme.test", now)
    assert sessions.resume(session, token, policy=POLICY, now=now + timedelta(minutes=29))
    assert sessions.resume(session, token, policy=POLICY, now=now + timedelta(minutes=30)) is None


def test_each_sign_in_gets_a_new_token(session: Session, now: datetime) -> None:
    make_org(session, now=now)
    assert _open(session, "admin@acme.test", now) != _open(session, "admin@acme.test", now)


@pytest.mark.parametrize("token", [None, "", "cs_short", "hof_" + "A" * 43, 42, "cs_" + "A" * 43])
def test_a_malformed_or_unknown_token_resumes_nothing(session: Session, now, token) -> None:
    make_org(session, now=now)
    assert sessions.resume(session, token, now=now) is None


def test_sign_out_deletes_the_session_and_everywhere_ends_them_all(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    first, second = (_open(session, "member@acme.test", now) for _ in range(2))
    other = _open(session, "admin@acme.test", now)
    with _tx(session):
        assert sessions.sign_out(session, first, now=now)
    assert sessions.resume(session, first, policy=POLICY, now=now) is None
    assert sessions.resume(session, second, policy=POLICY, now=now) is not None
    with _tx(session):
        assert sessions.sign_out_everywhere(session, org.member.user_id or "", now=now) == 1
    assert sessions.resume(session, second, policy=POLICY, now=now) is None
    assert sessions.resume(session, other, policy=POLICY, now=now) is not None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INTEGRATION_SESSION_HOURS": "abc"}, "HOURS"),
        ({"INTEGRATION_SESSION_IDLE_MINUTES": "0"}, "IDLE"),
    ],
)
def test_bad_session_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        sessions.SessionPolicy.from_env(env)


def test_session_settings_come_from_the_environment() -> None:
    assert sessions.SessionPolicy.from_env({}) == sessions.SessionPolicy(
        timedelta(hours=12), timedelta(minutes=30)
    )
    policy = sessions.SessionPolicy.from_env(
        {"INTEGRATION_SESSION_HOURS": "0.5", "INTEGRATION_SESSION_IDLE_MINUTES": "10"}
    )
    assert policy == sessions.SessionPolicy(timedelta(minutes=30), timedelta(minutes=10))


# --- the handoff ----------------------------------------------------------------------


def test_a_handoff_is_redeemed_once_by_its_browser_within_a_minute(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    uid = org.member.user_id or ""
    with _tx(session):
        handoff = sessions.issue_handoff(
            session, uid, "browser-one-binding", next_path="/account", now=now
        )
        late = sessions.issue_handoff(session, uid, "browser-one-binding", now=now)
        stolen = sessions.issue_handoff(session, uid, "browser-one-binding", now=now)
    with _tx(session):
        token, who, next_path = sessions.redeem_handoff(
            session, handoff, "browser-one-binding", policy=POLICY, now=now
        )
    assert who.user_id == uid and next_path == "/account"
    assert sessions.resume(session, token, policy=POLICY, now=now) is not None
    for value, binding, when in (
        (handoff, "browser-one-binding", now),  # used
        (late, "browser-one-binding", now + timedelta(seconds=60)),  # expired
        (stolen, "browser-two-binding", now),  # another browser
        (stolen, "browser-one-binding", now),  # burnt by the wrong try
    ):
        with _tx(session), pytest.raises(AuthenticationFailed):
            sessions.redeem_handoff(session, value, binding, policy=POLICY, now=when)


@pytest.mark.parametrize("path", ["//evil.example/x", "https://evil.example", "x", "/a b", None])
def test_a_handoff_only_leads_to_a_page_of_the_console(path: object) -> None:
    assert sessions.safe_next(path) == "/"


# --- first-run setup ------------------------------------------------------------------


def test_first_run_setup_needs_the_setup_token_and_happens_once(
    session: Session, now: datetime
) -> None:
    with _tx(session):
        token = sessions.issue_setup_token(session, now=now)
    for wrong in (None, "", "setup_" + "A" * 43):
        with _tx(session), pytest.raises(AuthenticationFailed, match="setup token"):
            sessions.first_run_setup(
                session, "Acme", "ann@acme.test", PASSWORD, setup_token=wrong, now=now
            )
    with _tx(session), pytest.raises(AuthenticationFailed):
        sessions.first_run_setup(
            session, "Acme", "ann@acme.test", PASSWORD, setup_token=token, now=now + 25 * HOUR
        )
    with _tx(session):
        _org, admin = sessions.first_run_setup(
            session,
            "Acme",
            "Ann@Acme.test",
            PASSWORD,
            setup_token=token,
            display_name="Ann",
            now=now,
        )
    assert admin.email == "ann@acme.test" and admin.password_hash.startswith("$argon2id$")
    with _tx(session):
        assert not sessions.needs_setup(session) and not sessions.has_setup_token(session)
        with pytest.raises(Conflict):
            sessions.first_run_setup(
                session, "Other", "b@o.test", PASSWORD, setup_token=token, now=now
            )
        with pytest.raises(Conflict):
            sessions.issue_setup_token(session, now=now)


def test_setup_is_open_only_with_the_flag() -> None:
    assert sessions.setup_is_open({"INTEGRATION_SETUP_OPEN": "1"})
    assert not sessions.setup_is_open({"INTEGRATION_SETUP_OPEN": "true"})
    assert not sessions.setup_is_open({})


@pytest.mark.parametrize(
    "password",
    [
        "short1!",
        "password1234",
        " " * 11 + "a",
        "123456789012",
        "qwertyuiopas",
        "P@ssw0rd2024!",
        "aaaaaaaaaaaaaaaa",
        "iloveyou1234",
        "ann@acme.test-2026",
    ],
)
def test_weak_passwords_are_refused_with_the_rules(session: Session, now, password) -> None:
    with _tx(session), pytest.raises(ValidationError) as info:
        sessions.first_run_setup(
            session, "Acme", "ann@acme.test", password, setup_token=None, open_setup=True, now=now
        )
    assert info.value.message == PASSWORD_RULES


@pytest.mark.parametrize(
    "password", ["correct horse battery staple", "Tr0ub4dor&3xyz!", "東京タワーの夜景がきれい"]
)
def test_long_unusual_passwords_are_accepted_without_composition_rules(
    session: Session, now, password
) -> None:
    with _tx(session):
        sessions.first_run_setup(
            session, "Acme", "ann@acme.test", password, setup_token=None, open_setup=True, now=now
        )


# --- sign-in, throttling and audit ----------------------------------------------------


def test_unknown_wrong_and_disabled_get_the_same_answer(session: Session, now: datetime) -> None:
    make_org(session, now=now)
    with _tx(session):
        users.set_disabled(session, Actor.system("cli"), "auditor@acme.test", True, now=now)
    answers = []
    for email, password in (
        ("admin@acme.test", "wrong-password-1"),
        ("nobody@acme.test", PASSWORD),
        ("auditor@acme.test", PASSWORD),
        ("", ""),
    ):
        outcome = _attempt(session, email, password, OWNER, now)
        with pytest.raises(AuthenticationFailed) as info:
            outcome.result(sleep=lambda s: None)
        answers.append(info.value.message)
    assert set(answers) == {signin.BAD_CREDENTIALS}


def test_an_attacker_at_one_address_cannot_lock_the_owner_out(
    session: Session, now: datetime
) -> None:
    make_org(session, now=now)
    at = now
    for i in range(40):  # the attacker hammers the member's account from one address
        at += timedelta(seconds=1)
        _attempt(session, "member@acme.test", f"guess-{i}-xxxxxx", ATTACKER, at)
    # Throttled: even the right password from the attacker's address is not checked.
    outcome = _attempt(session, "member@acme.test", PASSWORD, ATTACKER, at)
    assert outcome.error is not None and outcome.error.message == signin.BAD_CREDENTIALS
    # The owner, elsewhere, gets in at once with the right password.
    owner = _attempt(session, "member@acme.test", PASSWORD, OWNER, at)
    assert owner.error is None and owner.signed_in is not None
    assert owner.delay == signin.account_delay(signin.ACCOUNT_FREE)  # no delay yet
    # ... and the wait at the attacker's address grows, without a permanent lock.
    _addr, pair, _ = signin.keys_for("member@acme.test", ATTACKER)
    session.rollback()
    from core.sessions.models import SigninThrottle

    row = session.get(SigninThrottle, pair)
    assert row is not None and row.blocked_until is not None
    assert row.blocked_until - at <= signin.MAX_WAIT
    later = row.blocked_until + timedelta(seconds=1)
    assert _attempt(session, "member@acme.test", PASSWORD, ATTACKER, later).error is None


def test_waits_grow_per_failure_and_the_account_delay_is_capped() -> None:
    assert [signin._wait(n, 5).total_seconds() for n in (5, 6, 7, 8)] == [0, 1, 2, 4]
    assert signin._wait(100, 5) == signin.MAX_WAIT
    assert signin.account_delay(signin.ACCOUNT_FREE) == 0
    assert signin.account_delay(signin.ACCOUNT_FREE + 1) == 1
    assert signin.account_delay(10_000) == signin.ACCOUNT_MAX_DELAY


def test_a_distributed_guess_slows_the_account_but_the_owner_still_gets_in(
    session: Session, now: datetime
) -> None:
    make_org(session, now=now)
    for i in range(signin.ACCOUNT_FREE + 4):  # one failure from each of many addresses
        _attempt(
            session, "member@acme.test", "guess-xxxxxxxx", signin.Client.of(f"10.9.0.{i}"), now
        )
    outcome = _attempt(session, "member@acme.test", PASSWORD, OWNER, now)
    slept: list[float] = []
    who = outcome.result(sleep=slept.append)
    assert who.email == "member@acme.test"
    assert slept == [signin.account_delay(signin.ACCOUNT_FREE + 4)] and 0 < slept[0] <= 10


def test_a_thousand_failures_make_a_bounded_number_of_audit_rows(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    at = now
    for i in range(1000):  # 1,000 failures over 50 minutes from one address
        at = now + timedelta(seconds=3 * i)
        with _tx(session):
            signin.sign_in(session, "member@acme.test", "wrong-password-x", ATTACKER, now=at)
    with _tx(session):
        signin.close_bursts(session, now=at + signin.BURST_QUIET)
    events = _failed_events(session, org.id)
    assert 1 <= len(events) <= 4  # one per 15-minute burst
    assert sum(e.details["count"] for e in events) == 1000
    first = events[0]
    assert (first.actor_type, first.actor_id, first.actor_email) == ("anonymous", None, "anonymous")
    assert (first.target_type, first.target_id) == ("user", org.member.user_id)
    assert first.details["client_address"] == ATTACKER.address
    assert first.details["user_agent"] == "curl/8.0"
    assert "wrong-password-x" not in str([e.details for e in events])


def test_a_burst_is_audited_when_the_owner_signs_in(session: Session, now: datetime) -> None:
    org = make_org(session, now=now)
    for _ in range(3):
        _attempt(session, "member@acme.test", "wrong-password-x", OWNER, now)
    assert _failed_events(session, org.id) == []  # still open
    assert (
        _attempt(session, "member@acme.test", PASSWORD, OWNER, now + timedelta(seconds=5)).error
        is None
    )
    (event,) = _failed_events(session, org.id)
    assert event.details["count"] == 3
    assert session.execute(select(func.count()).select_from(SigninBurst)).scalar_one() == 0


def test_failures_on_unknown_accounts_are_counted_but_write_no_audit_row(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    for i in range(30):  # one address sprays many (unknown) accounts
        _attempt(session, f"ghost{i}@acme.test", "wrong-password-x", ATTACKER, now)
    assert _failed_events(session, org.id) == []
    outcome = _attempt(session, "member@acme.test", PASSWORD, ATTACKER, now)
    assert outcome.error is not None  # the address is throttled across accounts


def test_a_password_change_needs_the_current_one_and_ends_every_session(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    uid = org.member.user_id or ""
    tokens_before = [_open(session, "member@acme.test", now) for _ in range(2)]
    with _tx(session), pytest.raises(AuthenticationFailed):
        users.change_password(session, uid, "wrong-password-1", "a-new-passphrase-9", now=now)
    with _tx(session), pytest.raises(ValidationError):
        users.change_password(session, uid, PASSWORD, "password1234", now=now)
    with _tx(session):
        users.change_password(session, uid, PASSWORD, "a-new-passphrase-9", now=now)
    assert all(sessions.resume(session, t, policy=POLICY, now=now) is None for t in tokens_before)
    assert _attempt(session, "member@acme.test", PASSWORD, OWNER, now).error is not None
    assert _attempt(session, "member@acme.test", "a-new-passphrase-9", OWNER, now).error is None


def test_a_reset_link_works_once_ends_every_session_and_the_issuer_never_sees_it_used(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    token = _open(session, "member@acme.test", now)
    with _tx(session):
        issued = users.issue_reset(session, org.admin, "member@acme.test", org_id=org.id, now=now)
        older = users.issue_reset(session, org.admin, "member@acme.test", org_id=org.id, now=now)
    with _tx(session), pytest.raises(Exception, match="not valid"):
        users.reset_password(session, issued.token, "a-new-passphrase-9", now=now)  # replaced
    with _tx(session), pytest.raises(Exception, match="not valid"):
        users.reset_password(session, older.token, "a-new-passphrase-9", now=now + 25 * HOUR)
    with _tx(session):
        users.reset_password(session, older.token, "a-new-passphrase-9", now=now)
    with _tx(session), pytest.raises(Exception, match="not valid"):
        users.reset_password(session, older.token, "attacker-passphrase-9", now=now)
    assert sessions.resume(session, token, policy=POLICY, now=now) is None
    assert _attempt(session, "member@acme.test", "a-new-passphrase-9", OWNER, now).error is None
    session.rollback()
    actions = set(
        session.execute(select(AuditEvent.action).where(AuditEvent.org_id == org.id)).scalars()
    )
    assert {"account.password_reset_issued", "account.password_reset"} <= actions


def test_disabling_ends_sessions_and_refuses_sign_in_until_enabled(
    session: Session, now: datetime
) -> None:
    make_org(session, now=now)
    token = _open(session, "member@acme.test", now)
    with _tx(session):
        users.set_disabled(session, Actor.system("cli"), "member@acme.test", True, now=now)
    assert sessions.resume(session, token, policy=POLICY, now=now) is None
    assert _attempt(session, "member@acme.test", PASSWORD, OWNER, now).error is not None
    with _tx(session):
        users.set_disabled(session, Actor.system("cli"), "member@acme.test", False, now=now)
    assert _attempt(session, "member@acme.test", PASSWORD, OWNER, now).error is None


def test_a_role_change_ends_the_persons_sessions(session: Session, now: datetime) -> None:
    from core.orgs import service as orgs

    org = make_org(session, now=now)
    token = _open(session, "member@acme.test", now)
    with _tx(session):
        orgs.change_role(session, org.id, org.admin, org.member.user_id or "", "auditor", now=now)
    assert sessions.resume(session, token, policy=POLICY, now=now) is None


def test_checking_the_current_password_is_throttled_like_a_sign_in(
    session: Session, now: datetime
) -> None:
    org = make_org(session, now=now)
    uid = org.member.user_id or ""
    for i in range(signin.ACCOUNT_ADDRESS_FREE + 1):  # a stolen session guessing
        with _tx(session):
            outcome = signin.check_password(session, uid, f"guess-{i}-xxxxxx", ATTACKER, now=now)
        assert outcome.error is not None
        assert outcome.error.message == "The current password is not correct."
    with _tx(session):  # now throttled at that address: even the right one is not checked
        assert signin.check_password(session, uid, PASSWORD, ATTACKER, now=now).error
    with _tx(session):
        assert signin.check_password(session, uid, PASSWORD, OWNER, now=now).error is None
        signin.close_bursts(session, now=now + signin.BURST_WINDOW)
    (event,) = _failed_events(session, org.id)
    assert event.details["count"] == signin.ACCOUNT_ADDRESS_FREE + 2
    session.rollback()
    succeeded = session.execute(
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.org_id == org.id, AuditEvent.action == "auth.signin_succeeded")
    ).scalar_one()
    assert succeeded == 0  # a password check is not a sign-in
