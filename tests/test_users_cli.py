"""`python -m core users …`: invitations, acceptance, the operator's controls, and the
reported cross-tenant takeover, end to end through the command line."""

from __future__ import annotations

import email
import io
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.cli import _common, main
from core.orgs import service as orgs
from core.orgs import users
from core.sessions import service as sessions
from core.sessions import signin
from tests.factories import PASSWORD, make_org

ATTACKER_PASSWORD = "beta-admin-chose-this-1"
VIC_PASSWORD = "vic-own-passphrase-7"


@pytest.fixture
def cli(
    database_url: str, data_dir: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    for name in list(__import__("os").environ):
        if name.startswith("INTEGRATION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("INTEGRATION_DATA_DIR", str(data_dir))
    monkeypatch.setenv("INTEGRATION_CONSOLE_URL", "https://console.example")
    _common.settings.cache_clear()
    _common.engine.cache_clear()
    yield
    _common.engine().dispose()
    _common.settings.cache_clear()
    _common.engine.cache_clear()


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def _can_sign_in(engine: Engine, email: str, password: str, address: str = "10.0.0.9") -> bool:
    with Session(engine) as s, s.begin():
        outcome = signin.sign_in(s, email, password, signin.Client.of(address))
    return outcome.error is None


def test_users_add_prints_a_one_time_link_and_json(
    cli: None, engine: Engine, session: Session, capsys, monkeypatch
) -> None:
    make_org(session)
    code, out, err = run(
        capsys,
        monkeypatch,
        "users", "add", "--org", "Acme", "--email", "vic@acme.test", "--role", "member",
        "--by", "admin@acme.test", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["invite_url"].startswith("https://console.example/accept-invitation?token=inv_")
    assert datetime.fromisoformat(data["expires_at"]) > datetime.fromisoformat(
        "2026-01-01T00:00:00+00:00"
    )
    code, out, err = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "amy@acme.test",
        "--role", "auditor", "--by", "admin@acme.test",
    )  # fmt: skip
    assert code == 0, err
    assert "https://console.example/accept-invitation?token=inv_" in out
    code, out, err = run(capsys, monkeypatch, "users", "invitations", "--org", "Acme", "--json")
    assert sorted(r["email"] for r in json.loads(out)) == ["amy@acme.test", "vic@acme.test"]


@pytest.mark.parametrize(
    "extra",
    [["--by", ""], ["--by", "   "]],
)
def test_an_empty_by_is_an_error_not_the_operator(
    cli: None, session: Session, capsys, monkeypatch, extra: list[str]
) -> None:
    make_org(session)
    code, out, err = run(
        capsys,
        monkeypatch,
        "users", "add", "--org", "Acme", "--email", "x@acme.test", "--role", "admin", *extra,
    )  # fmt: skip
    assert code == 1 and "--by must name a person" in err and out == ""


def test_only_the_operator_sets_a_password(
    cli: None, engine: Engine, session: Session, capsys, monkeypatch
) -> None:
    make_org(session)
    code, _, err = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "vic@acme.test",
        "--role", "member", "--by", "admin@acme.test", "--password-stdin",
        stdin=ATTACKER_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1 and "only the operator" in err
    assert not _can_sign_in(engine, "vic@acme.test", ATTACKER_PASSWORD)
    code, _, err = run(
        capsys, monkeypatch, "users", "set-password", "member@acme.test", "--password-stdin",
        stdin=VIC_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    assert _can_sign_in(engine, "member@acme.test", VIC_PASSWORD)
    code, _, err = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "ops@acme.test",
        "--role", "member", "--password-stdin", stdin=VIC_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    assert _can_sign_in(engine, "ops@acme.test", VIC_PASSWORD)


def test_accept_sets_a_new_persons_own_password_once(
    cli: None, engine: Engine, session: Session, capsys, monkeypatch
) -> None:
    make_org(session)
    _, out, _ = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "vic@acme.test",
        "--role", "member", "--json",
    )  # fmt: skip
    token = _token(json.loads(out)["invite_url"])
    code, out, err = run(
        capsys, monkeypatch, "users", "accept", token, "--password-stdin",
        stdin=VIC_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err and "joined 'Acme' as member" in out
    assert _can_sign_in(engine, "vic@acme.test", VIC_PASSWORD)
    code, _, err = run(
        capsys, monkeypatch, "users", "accept", token, "--password-stdin",
        stdin=ATTACKER_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1 and "not valid" in err
    assert not _can_sign_in(engine, "vic@acme.test", ATTACKER_PASSWORD)


def test_the_operator_disables_and_enables_an_account(
    cli: None, engine: Engine, session: Session, capsys, monkeypatch
) -> None:
    make_org(session)
    with Session(engine) as s, s.begin():
        member = users.user_by_email(s, "member@acme.test")
        token, _ = sessions.open_session(s, member.id)
    code, _, err = run(
        capsys, monkeypatch, "users", "disable", "member@acme.test", "--by", "admin@acme.test"
    )
    assert code == 1 and "only the operator" in err
    with Session(engine) as s:
        assert sessions.resume(s, token) is not None
    code, _, err = run(capsys, monkeypatch, "users", "disable", "member@acme.test")
    assert code == 0, err
    with Session(engine) as s:
        assert sessions.resume(s, token) is None
    assert not _can_sign_in(engine, "member@acme.test", PASSWORD)
    code, _, err = run(capsys, monkeypatch, "users", "enable", "member@acme.test", "--json")
    assert code == 0, err
    assert _can_sign_in(engine, "member@acme.test", PASSWORD)


def test_the_reported_takeover_is_impossible_end_to_end(
    cli: None, engine: Engine, session: Session, capsys, monkeypatch
) -> None:
    """Beta's admin tries every step of the reported takeover of vic@acme.example, an
    Acme admin; at no step can they sign in as vic with a password they chose, nor reach
    Acme."""
    make_org(session, "Acme")
    make_org(session, "Beta")
    beta_admin, acme_admin = "admin@beta.test", "admin@acme.test"

    # 1. Beta's admin adds vic with a password of their choosing: refused.
    code, _, err = run(
        capsys, monkeypatch, "users", "add", "--org", "Beta", "--email", "vic@acme.example",
        "--role", "member", "--by", beta_admin, "--password-stdin",
        stdin=ATTACKER_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1 and "only the operator" in err
    # ... or with an empty --by, which used to skip the role check: refused.
    code, _, err = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "vic@acme.example",
        "--role", "admin", "--by", "", "--password-stdin", stdin=ATTACKER_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1
    assert not _can_sign_in(engine, "vic@acme.example", ATTACKER_PASSWORD)

    # 2. Acme's admin invites vic as admin; vic accepts with vic's own password.
    _, out, _ = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "vic@acme.example",
        "--role", "admin", "--by", acme_admin, "--json",
    )  # fmt: skip
    acme_token = _token(json.loads(out)["invite_url"])
    code, _, err = run(
        capsys, monkeypatch, "users", "accept", acme_token, "--password-stdin",
        stdin=VIC_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err

    # 3. Beta's admin invites vic to Beta and holds that link: accepting it needs vic's
    #    own password, and no reset link is theirs to issue.
    _, out, _ = run(
        capsys, monkeypatch, "users", "add", "--org", "Beta", "--email", "vic@acme.example",
        "--role", "member", "--by", beta_admin, "--json",
    )  # fmt: skip
    beta_token = _token(json.loads(out)["invite_url"])
    code, _, err = run(
        capsys, monkeypatch, "users", "accept", beta_token, "--password-stdin",
        stdin=ATTACKER_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1 and "Incorrect email or password" in err
    code, _, err = run(
        capsys, monkeypatch, "users", "reset-link", "vic@acme.example", "--org", "Beta",
        "--by", beta_admin,
    )  # fmt: skip
    assert code == 1
    code, _, err = run(
        capsys, monkeypatch, "users", "set-password", "vic@acme.example", "--by", beta_admin,
    )  # fmt: skip
    assert code == 1 and "only the operator" in err

    # 4. vic accepts Beta's invitation too; Beta's admin removes vic; vic's password holds.
    code, _, err = run(
        capsys, monkeypatch, "users", "accept", beta_token, "--password-stdin",
        stdin=VIC_PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run(
        capsys, monkeypatch, "users", "reset-link", "vic@acme.example", "--org", "Beta",
        "--by", beta_admin,
    )  # fmt: skip
    assert code == 1 and "organizations you do not administer" in err
    with Session(engine) as s, s.begin():
        beta = orgs.org_by_name(s, "Beta")
        vic_id = users.user_by_email(s, "vic@acme.example").id
        orgs.remove_member(s, beta.id, users.actor_for(s, beta_admin), vic_id)
    assert not _can_sign_in(engine, "vic@acme.example", ATTACKER_PASSWORD)
    assert _can_sign_in(engine, "vic@acme.example", VIC_PASSWORD, address="10.1.1.1")
    with Session(engine) as s:
        roles = {o.name: r for o, r in orgs.memberships_of(s, vic_id)}
    assert roles == {"Acme": "admin"}


def test_invitations_and_reset_links_are_emailed_when_smtp_is_configured(
    cli: None, session: Session, capsys, monkeypatch
) -> None:
    from tests.test_alerts import SmtpSink

    make_org(session)
    with SmtpSink() as sink:
        monkeypatch.setenv("INTEGRATION_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("INTEGRATION_SMTP_PORT", str(sink.port))
        monkeypatch.setenv("INTEGRATION_SMTP_STARTTLS", "0")
        monkeypatch.setenv("INTEGRATION_SMTP_FROM", "console@acme.test")
        _, out, err = run(
            capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "vic@acme.test",
            "--role", "member", "--by", "admin@acme.test", "--json",
        )  # fmt: skip
        invite = json.loads(out)
        _, out, err = run(
            capsys, monkeypatch, "users", "reset-link", "member@acme.test", "--json",
        )  # fmt: skip
        reset = json.loads(out)
    assert invite["emailed"] and reset["emailed"], err
    (to_vic, invite_raw), (to_member, reset_raw) = sink.messages
    assert to_vic == ["vic@acme.test"] and to_member == ["member@acme.test"]
    invite_mail, reset_mail = (
        email.message_from_string(raw).get_payload(decode=True).decode()
        for raw in (invite_raw, reset_raw)
    )
    assert invite["invite_url"] in invite_mail and "join Acme" in invite_mail
    assert reset["reset_url"] in reset_mail


def test_a_failing_mail_server_still_prints_the_link(
    cli: None, session: Session, capsys, monkeypatch
) -> None:
    make_org(session)
    monkeypatch.setenv("INTEGRATION_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("INTEGRATION_SMTP_PORT", "9")  # nothing listens
    code, out, err = run(
        capsys, monkeypatch, "users", "add", "--org", "Acme", "--email", "vic@acme.test",
        "--role", "member", "--by", "admin@acme.test", "--json",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["emailed"] is False
    assert "could not be sent" in err
