"""Expiry alerts: once per key and lead time across runs and concurrent scanners; banner; e-mail."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core import webhooks
from core.alerts import mailer, open_alerts, scan_expiry
from core.alerts.models import Alert
from core.errors import NotFound
from core.keys import service as keys
from core.orgs.permissions import Actor
from core.webhooks.config import SmtpConfig, WebhookConfig
from core.webhooks.models import WebhookMessage
from tests._webhook_receiver import webhook_config
from tests.factories import OrgFixture, make_org

EVENTS = "api_key.expiring,api_key.expired"


@pytest.fixture
def org(session: Session, now: datetime) -> OrgFixture:
    org = make_org(session, now=now)
    cfg = webhook_config()
    assert isinstance(cfg, WebhookConfig)
    with session.begin():
        webhooks.create_endpoint(
            session,
            org.id,
            org.admin,
            url="https://hooks.example.com/in",
            events=EVENTS,
            config=cfg,
            now=now,
        )
    return org


def new_key(
    session: Session, org: OrgFixture, now: datetime, days: int = 90, by: Actor | None = None
) -> str:
    with session.begin():
        return keys.create_key(
            session,
            org.id,
            by or org.member,
            name="Server",
            expires=days,
            pepper=b"p" * 32,
            now=now,
        ).id


def scan(session: Session, at: datetime) -> tuple[int, int]:
    with session.begin():
        result = scan_expiry(session, now=at)
    return result.expiring, result.expired


def sent_events(session: Session) -> list[tuple[str, Any]]:
    with session.begin():
        bodies = session.execute(
            select(WebhookMessage.body).order_by(WebhookMessage.created_at)
        ).scalars()
        events = [json.loads(b) for b in bodies]
    return [(e["type"], e["data"].get("lead_days")) for e in events]


def test_each_lead_time_fires_once_across_scanner_runs(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    key_id = new_key(session, org, now)
    expires = now + timedelta(days=90)
    timeline = [
        (expires - timedelta(days=31), (0, 0)),
        (expires - timedelta(days=30), (1, 0)),
        (expires - timedelta(days=29), (0, 0)),
        (expires - timedelta(days=7), (1, 0)),
        (expires - timedelta(days=6, hours=23), (0, 0)),
        (expires - timedelta(hours=12), (1, 0)),
        (expires - timedelta(hours=11), (0, 0)),
        (expires + timedelta(seconds=1), (0, 1)),
        (expires + timedelta(hours=1), (0, 0)),
    ]
    for at, expected in timeline:
        assert scan(session, at) == expected, at
        assert scan(session, at) == (0, 0), f"second run at {at}"
    assert sent_events(session) == [
        ("api_key.expiring", 30),
        ("api_key.expiring", 7),
        ("api_key.expiring", 1),
        ("api_key.expired", None),
    ]
    with session.begin():
        data = json.loads(session.execute(select(WebhookMessage.body)).scalars().first() or "{}")
    assert data["data"]["key_id"] == key_id and "key" not in data["data"]


def test_a_late_scan_sends_only_the_nearest_lead_time(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    new_key(session, org, now, days=60)
    assert scan(session, now + timedelta(days=59, hours=13)) == (1, 0)
    assert sent_events(session) == [("api_key.expiring", 1)]
    with session.begin():
        rows = {(a.occurrence, a.notified) for a in session.execute(select(Alert)).scalars()}
    assert rows == {(30, False), (7, False), (1, True)}


def test_a_revoked_or_short_lived_key_gets_no_useless_alert(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    revoked = new_key(session, org, now)
    with session.begin():
        keys.revoke_key(session, org.admin, revoked, now=now)
    new_key(session, org, now, days=5)  # shorter than 30 and 7: only the 1-day alert applies
    assert scan(session, now + timedelta(days=3, hours=23)) == (0, 0)
    assert scan(session, now + timedelta(days=4, hours=1)) == (1, 0)
    assert scan(session, now + timedelta(days=95)) == (0, 0)  # the revoked key never expires
    assert sent_events(session) == [("api_key.expiring", 1)]


def test_two_concurrent_scanners_alert_each_key_exactly_once(
    engine: Engine, session: Session, org: OrgFixture, now: datetime
) -> None:
    for _ in range(60):
        new_key(session, org, now, days=30)
    at = now + timedelta(days=24)  # 6 days left: the 7-day alert
    barrier = threading.Barrier(2)
    results: list[tuple[int, int]] = []

    def worker() -> None:
        with Session(engine) as s:
            barrier.wait()
            for _ in range(3):
                results.append(scan(s, at))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r[0] for r in results) == 60
    assert Counter(sent_events(session)) == {("api_key.expiring", 7): 60}


def test_banner_shows_open_alerts_to_members_and_hides_closed_ones(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    key_id = new_key(session, org, now, days=30)
    at = now + timedelta(days=24)
    scan(session, at)
    with session.begin():
        for actor in (org.admin, org.member, org.auditor):
            (alert,) = open_alerts(session, org.id, actor, at)
            assert alert.kind == "api_key.expiring" and alert.subject_id == key_id
            assert "Server" in alert.message
        with pytest.raises(NotFound):
            open_alerts(session, org.id, make_outsider(session), at)
        keys.revoke_key(session, org.admin, key_id, now=at)
        assert open_alerts(session, org.id, org.admin, at) == []


def make_outsider(session: Session) -> Actor:
    from core.orgs import service as orgs

    _other, admin = orgs.create_organization(
        session, "Other", "boss@other.test", "correct-horse-42"
    )
    return Actor.user(admin.id, admin.email)


class SmtpSink:
    """A minimal SMTP server on 127.0.0.1 that keeps (recipients, message) pairs."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rcpts: list[str] = []
        writer.write(b"220 sink ready\r\n")
        while line := await reader.readline():
            cmd = line.decode().strip()
            upper = cmd.upper()
            if upper.startswith(("EHLO", "HELO")):
                writer.write(b"250 sink\r\n")
            elif upper.startswith("RCPT TO:"):
                rcpts.append(cmd[8:].strip(" <>"))
                writer.write(b"250 ok\r\n")
            elif upper == "DATA":
                writer.write(b"354 go\r\n")
                await writer.drain()
                data = []
                while (part := await reader.readline()) != b".\r\n":
                    data.append(part.decode())
                self.messages.append((rcpts, "".join(data)))
                rcpts = []
                writer.write(b"250 queued\r\n")
            elif upper == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    def __enter__(self) -> SmtpSink:
        async def start() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self.server is not None
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_alerts_are_emailed_once_to_the_creator_and_admins(
    engine: Engine, session: Session, org: OrgFixture, now: datetime
) -> None:
    new_key(session, org, now, days=30)
    scan(session, now + timedelta(days=24))
    with SmtpSink() as sink:
        smtp = SmtpConfig(
            host="127.0.0.1", port=sink.port, sender="alerts@acme.test", starttls=False
        )
        assert mailer.send_pending(engine, smtp) == 1
        assert mailer.send_pending(engine, smtp) == 0
    ((to, text),) = sink.messages
    assert sorted(to) == ["admin@acme.test", "member@acme.test"]
    assert "An API key expires soon" in text and "Server" in text


def test_an_endpoint_failing_for_5_days_is_disabled_by_the_scan_and_shown_to_admins(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    from core.alerts import scan_endpoints
    from core.audit.models import AuditEvent
    from core.webhooks.models import WebhookEndpoint

    with session.begin():
        endpoint = session.execute(select(WebhookEndpoint)).scalar_one()
        endpoint.failing_since = now - timedelta(days=2)
    windows = {"failing_after": timedelta(hours=24), "disable_after": timedelta(days=5)}
    with session.begin():
        assert scan_endpoints(session, now=now, **windows) == 1
        assert [a.kind for a in open_alerts(session, org.id, org.admin, now)] == [
            "webhook.endpoint.failing"
        ]
    with session.begin():
        scan_endpoints(session, now=now + timedelta(days=3), **windows)
        admin_view = open_alerts(session, org.id, org.admin, now + timedelta(days=3))
        member_view = open_alerts(session, org.id, org.member, now + timedelta(days=3))
        actions = session.execute(select(AuditEvent.action)).scalars().all()
    assert [(a.kind, a.severity) for a in admin_view] == [("webhook.endpoint.disabled", "error")]
    assert member_view == []  # members may not read webhooks
    assert actions.count("webhook.endpoint.disabled") == 1
    with session.begin():
        assert scan_endpoints(session, now=now + timedelta(days=4), **windows) == 0


def test_a_rolled_key_in_its_grace_period_is_not_alerted_but_its_successor_is(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    old = new_key(session, org, now, days=30)
    with session.begin():
        new, _ = keys.roll_key(
            session, org.admin, old, grace="7d", pepper=b"p" * 32, now=now + timedelta(days=25)
        )
    assert scan(session, now + timedelta(days=26)) == (0, 0)  # the old key: 4 days left
    assert scan(session, now + timedelta(days=25 + 24)) == (1, 0)  # the new key: 6 days left
    with session.begin():
        (alert,) = session.execute(select(Alert)).scalars().all()
    assert alert.subject_id == new.id and alert.occurrence == 7
