"""Endpoint management: roles, validation, audit rows, configuration, schema."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import webhooks
from core.audit.models import AuditEvent
from core.config import Settings
from core.db import Base
from core.errors import NotFound, PermissionDenied, ValidationError
from core.webhooks.config import WebhookConfig
from tests._webhook_receiver import webhook_config
from tests.factories import OrgFixture, make_org

URL = "https://hooks.example.com/in"


@pytest.fixture
def cfg() -> WebhookConfig:
    strict = webhook_config(allow_http=False, allow_private=False)
    assert isinstance(strict, WebhookConfig)
    return strict


@pytest.fixture
def org(session: Session, now: datetime) -> OrgFixture:
    return make_org(session, now=now)


def test_only_admins_manage_endpoints_and_auditors_read_them(
    session: Session, org: OrgFixture, cfg: WebhookConfig
) -> None:
    with session.begin():
        for who in (org.member, org.auditor):
            with pytest.raises(PermissionDenied, match=r"webhooks\.manage"):
                webhooks.create_endpoint(
                    session, org.id, who, url=URL, events="api_key.created", config=cfg
                )
        view, _ = webhooks.create_endpoint(
            session, org.id, org.admin, url=URL, events="api_key.created", config=cfg
        )
        assert [e.id for e in webhooks.list_endpoints(session, org.id, org.auditor)] == [view.id]
        with pytest.raises(PermissionDenied, match=r"webhooks\.read"):
            webhooks.list_endpoints(session, org.id, org.member)
        with pytest.raises(PermissionDenied):
            webhooks.rotate_secret(session, org.auditor, view.id, config=cfg)
        with pytest.raises(PermissionDenied):
            webhooks.queue_test(session, org.auditor, view.id)


def test_other_organizations_cannot_see_an_endpoint(
    session: Session, org: OrgFixture, cfg: WebhookConfig, now: datetime
) -> None:
    other = make_org(session, "Globex", now=now)
    with session.begin():
        view, _ = webhooks.create_endpoint(
            session, org.id, org.admin, url=URL, events="api_key.created", config=cfg
        )
        with pytest.raises(NotFound, match="webhook endpoint not found"):
            webhooks.get_endpoint(session, other.admin, view.id)
        with pytest.raises(NotFound):
            webhooks.delete_endpoint(session, other.admin, view.id)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("", "at least one"),
        ("api_key.created,nope.nothing", "unknown event type"),
        ("org.created", "unknown event type"),  # audit-only, not subscribable
    ],
)
def test_bad_event_lists_are_refused_without_a_partial_write(
    session: Session, org: OrgFixture, cfg: WebhookConfig, events: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message), session.begin():
        webhooks.create_endpoint(session, org.id, org.admin, url=URL, events=events, config=cfg)
    with session.begin():
        assert webhooks.list_endpoints(session, org.id, org.admin) == []


def test_every_endpoint_change_writes_an_audit_row(
    session: Session, org: OrgFixture, cfg: WebhookConfig, now: datetime
) -> None:
    with session.begin():
        view, secret = webhooks.create_endpoint(
            session, org.id, org.admin, url=URL, events="api_key.created", config=cfg, now=now
        )
        webhooks.update_endpoint(
            session,
            org.admin,
            view.id,
            config=cfg,
            events=["api_key.revoked"],
            description="Ops",
            now=now,
        )
        webhooks.update_endpoint(session, org.admin, view.id, config=cfg, enabled=False, now=now)
        webhooks.update_endpoint(session, org.admin, view.id, config=cfg, enabled=True, now=now)
        webhooks.rotate_secret(session, org.admin, view.id, config=cfg, now=now)
        webhooks.delete_endpoint(session, org.admin, view.id, now=now + timedelta(seconds=1))
        rows = (
            session.execute(select(AuditEvent).where(AuditEvent.target_type == "webhook_endpoint"))
            .scalars()
            .all()
        )
    assert [r.action for r in rows] == [
        "webhook.endpoint.created",
        "webhook.endpoint.updated",
        "webhook.endpoint.disabled",
        "webhook.endpoint.updated",
        "webhook.endpoint.secret_rotated",
        "webhook.endpoint.deleted",
    ]
    assert all(secret.removeprefix("whsec_") not in str(r.details) for r in rows)


def test_config_keeps_its_encryption_key_owner_readable_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="sqlite://")
    first = WebhookConfig.from_env(settings, {})
    again = WebhookConfig.from_env(settings, {})
    assert first.secret_key == again.secret_key and len(first.secret_key) == 32
    mode = stat.S_IMODE((tmp_path / "webhook_secret_key").stat().st_mode)
    assert mode == 0o600
    assert "secret_key" not in repr(first)
    with pytest.raises(ValidationError, match="INTEGRATION_WEBHOOK_ALLOW_HTTP"):
        WebhookConfig.from_env(settings, {"INTEGRATION_WEBHOOK_ALLOW_HTTP": "maybe"})
    with pytest.raises(ValidationError, match="retry schedule"):
        WebhookConfig.from_env(settings, {"INTEGRATION_WEBHOOK_RETRY_SCHEDULE": "0,-5"})


def test_migrated_schema_matches_the_webhook_and_alert_models(engine: Engine) -> None:
    mine = {"webhook_endpoints", "webhook_messages", "webhook_attempts", "alerts"}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if mine & set(str(d).split("'"))] == []
