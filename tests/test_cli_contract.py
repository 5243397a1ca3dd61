"""The command line keeps its promises: every command takes --json, and with --json every
error is one JSON object on stderr; `webhooks enable` and `webhooks recover` work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import webhooks
from core.cli import _common, build_parser, commands, main
from core.cli import webhooks as webhooks_cli
from core.config import Settings
from core.webhooks.models import MessageStatus, WebhookMessage
from tests._webhook_receiver import Receiver
from tests.factories import PLATFORM_EVENT, OrgFixture, make_org, register_platform_event

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.fixture
def cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[object]:
    """Run `python -m core ARGS` in process against the test's database; return
    (exit code, stdout, stderr)."""
    for name in list(__import__("os").environ):
        if name.startswith("INTEGRATION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("INTEGRATION_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("INTEGRATION_WEBHOOK_ALLOW_HTTP", "1")
    monkeypatch.setenv("INTEGRATION_WEBHOOK_ALLOW_PRIVATE", "1")
    caches = (_common.settings, _common.engine, webhooks_cli.config)
    for cached in caches:
        cached.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    if _common.engine.cache_info().currsize:
        _common.engine().dispose()
    for cached in caches:
        cached.cache_clear()


def test_every_command_takes_json_as_the_readme_says() -> None:
    lacking = [p.prog for p in commands(build_parser()) if "--json" not in p._option_string_actions]
    assert lacking == []
    assert len(list(commands(build_parser()))) >= 25
    assert "Every command takes `--json`" in README


def test_with_json_a_usage_error_is_a_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "list", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    error = json.loads(err)["error"]
    assert error["code"] == "usage_error" and "--org" in error["message"]
    assert main(["keys", "list"]) == 2  # without --json: argparse's usage and one line
    assert "error: the following arguments are required: --org" in capsys.readouterr().err


def test_with_json_every_failure_is_one_json_object_on_stderr(cli, session: Session) -> None:  # type: ignore[no-untyped-def]
    make_org(session)
    cases = [
        (["keys", "list", "--org", "Nope", "--json"], "not_found"),
        (["keys", "revoke", "key_nope", "--by", "admin@acme.test", "--json"], "not_found"),
        (
            [
                "keys",
                "create",
                "--org",
                "Acme",
                "--name",
                "x",
                "--expires",
                "9999",
                "--by",
                "member@acme.test",
                "--json",
            ],
            "invalid_input",
        ),
        (["webhooks", "replay", "msg_nope", "--by", "admin@acme.test", "--json"], "not_found"),
        (["webhooks", "enable", "whe_nope", "--by", "admin@acme.test", "--json"], "not_found"),
        (
            ["webhooks", "recover", "whe_x", "--since", "soon", "--by", "a@a.test", "--json"],
            "invalid_arguments",
        ),
        (
            ["events", "register", "api_key.forged", "--description", "x", "--json"],
            "invalid_input",
        ),
        (
            [
                "events",
                "register",
                "a.b",
                "--description",
                "x",
                "--schema",
                "/nonexistent.json",
                "--json",
            ],
            "invalid_arguments",
        ),
    ]
    for args, code in cases:
        status, out, err = cli(*args)
        assert status == 1 and out == "", (args, out, err)
        (line,) = err.splitlines()
        assert json.loads(line)["error"]["code"] == code, (args, err)
        assert json.loads(line)["error"]["message"]
    status, _out, err = cli("keys", "list", "--org", "Nope")
    assert status == 1 and err == "error: organization 'Nope' not found\n"


def test_migrate_and_worker_answer_json(cli) -> None:  # type: ignore[no-untyped-def]
    status, out, _ = cli("migrate", "--json")
    assert status == 0 and len(json.loads(out)["revisions"]) == 1
    status, out, _ = cli("worker", "--once", "--json")
    assert status == 0 and json.loads(out)["attempts"] == 0


@pytest.fixture
def failed_endpoint(
    session: Session, settings: Settings
) -> Iterator[tuple[OrgFixture, str, Receiver]]:
    """An endpoint disabled after its two messages failed."""
    register_platform_event(session)
    org = make_org(session)
    with Receiver() as receiver:
        with session.begin():
            config = webhooks.WebhookConfig.from_env(
                settings,
                {"INTEGRATION_WEBHOOK_ALLOW_HTTP": "1", "INTEGRATION_WEBHOOK_ALLOW_PRIVATE": "1"},
            )
            view, _ = webhooks.create_endpoint(
                session, org.id, org.admin, url=receiver.url, events=PLATFORM_EVENT, config=config
            )
            for n in range(2):
                webhooks.emit(session, org.id, PLATFORM_EVENT, {"n": n})
            session.execute(
                update(WebhookMessage).values(status=MessageStatus.FAILED, next_attempt_at=None)
            )
            webhooks.update_endpoint(session, org.admin, view.id, config=config, enabled=False)
        yield org, view.id, receiver


def test_enable_then_recover_sends_the_failed_messages_again(cli, failed_endpoint) -> None:  # type: ignore[no-untyped-def]
    org, endpoint_id, receiver = failed_endpoint
    admin = org.admin.email
    status, _, err = cli(
        "webhooks", "recover", endpoint_id, "--since", "1d", "--by", admin, "--json"
    )
    assert status == 1 and json.loads(err)["error"]["code"] == "conflict"  # disabled
    status, out, err = cli("webhooks", "enable", endpoint_id, "--by", "member@acme.test", "--json")
    assert status == 1 and json.loads(err)["error"]["code"] == "permission_denied"
    status, out, err = cli("webhooks", "enable", endpoint_id, "--by", admin, "--json")
    assert status == 0, err
    assert json.loads(out)["enabled"] is True
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    status, _, err = cli("webhooks", "recover", endpoint_id, "--since", tomorrow, "--by", admin)
    assert status == 1 and "in the future" in err
    args = ("webhooks", "recover", endpoint_id, "--since", "1h", "--by", admin, "--json")
    status, out, err = cli(*args)
    assert status == 0, err
    assert json.loads(out)["recovered"] == 2
    status, out, err = cli("worker", "--once", "--json")
    assert status == 0 and json.loads(out)["attempts"] == 2, err
    assert len(receiver.requests) == 2
    status, out, _ = cli("webhooks", "list", "--org", org.name, "--json")
    assert json.loads(out)[0]["enabled"] is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-01", datetime(2026, 6, 1, tzinfo=UTC)),
        ("2026-06-01T10:30:00+02:00", datetime(2026, 6, 1, 8, 30, tzinfo=UTC)),
        ("2026-06-01T10:30:00", datetime(2026, 6, 1, 10, 30, tzinfo=UTC)),
        ("6h", datetime(2026, 6, 1, 6, 0, tzinfo=UTC)),
        ("2d", datetime(2026, 5, 30, 12, 0, tzinfo=UTC)),
    ],
)
def test_recover_since_accepts_days_times_and_durations(
    text: str, expected: datetime, now: datetime
) -> None:
    assert webhooks_cli.parse_since(text, now) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "1w", "-1d", "2026-13-01", "2026-06-02"])
def test_recover_since_refuses_what_it_cannot_read_or_the_future(text: str, now: datetime) -> None:
    with pytest.raises(_common.CommandError):
        webhooks_cli.parse_since(text, now)
