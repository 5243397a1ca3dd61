"""Delivery against real receivers on 127.0.0.1: signatures, retries, failures, health."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core import webhooks
from core.audit.models import AuditEvent
from core.clock import utcnow
from core.errors import Conflict, NotFound
from core.events import EventType
from core.keys import service as keys
from core.webhooks import deliver_due, emit
from core.webhooks.config import WebhookConfig
from core.webhooks.models import MessageStatus, WebhookAttempt, WebhookEndpoint, WebhookMessage
from tests._webhook_receiver import Received, Receiver, Reply, webhook_config
from tests.factories import PLATFORM_EVENT, OrgFixture, make_org, register_platform_event


@pytest.fixture
def cfg() -> WebhookConfig:
    return webhook_config()  # type: ignore[return-value]


@pytest.fixture
def org(session: Session, now: datetime) -> OrgFixture:
    register_platform_event(session)
    return make_org(session, now=now - timedelta(days=1))


@pytest.fixture
def receiver() -> Any:
    with Receiver() as r:
        yield r


def add_endpoint(
    session: Session, org: OrgFixture, url: str, cfg: WebhookConfig, events: str = PLATFORM_EVENT
) -> tuple[str, str]:
    with session.begin():
        view, secret = webhooks.create_endpoint(
            session, org.id, org.admin, url=url, events=events, config=cfg
        )
    return view.id, secret


def publish(session: Session, org: OrgFixture, n: int = 1, now: datetime | None = None) -> None:
    with session.begin():
        for i in range(n):
            emit(session, org.id, PLATFORM_EVENT, {"invoice_id": f"inv_{i}"}, now=now)


def message(session: Session) -> WebhookMessage:
    session.expire_all()
    with session.begin():  # reads end their transaction: SQLite's BEGIN IMMEDIATE would block
        return session.execute(select(WebhookMessage)).scalar_one()


def attempts(session: Session) -> list[WebhookAttempt]:
    session.expire_all()
    with session.begin():
        return list(session.execute(select(WebhookAttempt).order_by(WebhookAttempt.id)).scalars())


def endpoint_row(session: Session, endpoint_id: str) -> WebhookEndpoint:
    session.expire_all()
    with session.begin():
        row = session.get(WebhookEndpoint, endpoint_id)
    assert row is not None
    return row


def test_standardwebhooks_library_verifies_our_signature(
    session: Session, engine: Engine, org: OrgFixture, receiver: Receiver, cfg: WebhookConfig
) -> None:
    _, secret = add_endpoint(session, org, receiver.url, cfg)
    publish(session, org)
    assert deliver_due(engine, cfg) == 1
    got = receiver.requests[0]
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == PLATFORM_EVENT
    assert set(payload) == {"id", "type", "timestamp", "created_at", "org", "data"}
    assert payload["timestamp"] == payload["created_at"]  # the former name, kept one release
    assert payload["data"] == {"invoice_id": "inv_0"}
    assert got.headers["webhook-id"].startswith("msg_")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(got.body + b" ", got.headers)


def test_rotation_signs_with_both_secrets_then_only_the_new_one(
    session: Session, engine: Engine, org: OrgFixture, receiver: Receiver, cfg: WebhookConfig
) -> None:
    endpoint_id, old = add_endpoint(session, org, receiver.url, cfg)
    with session.begin():
        new = webhooks.rotate_secret(session, org.admin, endpoint_id, config=cfg)
    assert new != old and new.startswith("whsec_")
    publish(session, org)
    deliver_due(engine, cfg)
    got = receiver.requests[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(got.body, got.headers)
    Webhook(new).verify(got.body, got.headers)

    # A rotation 25 hours ago: the previous secret no longer signs.
    with session.begin():
        newest = webhooks.rotate_secret(
            session, org.admin, endpoint_id, config=cfg, now=utcnow() - timedelta(hours=25)
        )
    publish(session, org)
    deliver_due(engine, cfg)
    got = receiver.requests[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(got.body, got.headers)


def test_secrets_are_encrypted_at_rest_and_never_in_payload_or_audit(
    session: Session, engine: Engine, org: OrgFixture, receiver: Receiver, cfg: WebhookConfig
) -> None:
    endpoint_id, secret = add_endpoint(session, org, receiver.url, cfg)
    publish(session, org)
    deliver_due(engine, cfg)
    raw = secret.removeprefix("whsec_")
    row = endpoint_row(session, endpoint_id)
    assert raw not in json.dumps(row.secrets)
    with session.begin():
        audit_rows = session.execute(select(AuditEvent.details)).scalars().all()
        view = webhooks.get_endpoint(session, org.admin, endpoint_id)
    assert all(raw not in json.dumps(d) for d in audit_rows)
    assert raw.encode() not in receiver.requests[0].body
    assert raw not in repr(view) and raw not in json.dumps(view.to_dict())


def test_retries_follow_the_schedule_with_jitter_under_an_injected_clock(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, now: datetime
) -> None:
    with Receiver(lambda _r, _i: Reply(500, b"down")) as receiver:
        add_endpoint(session, org, receiver.url, cfg)
        publish(session, org, now=now)
        clock = now
        rng = random.Random(7)
        for step, delay in enumerate(cfg.retry_schedule[1:], start=1):
            assert deliver_due(engine, cfg, now=clock, rng=rng) == 1
            m = message(session)
            assert m.status == MessageStatus.PENDING and m.attempt_count == step
            assert m.next_attempt_at is not None
            gap = (m.next_attempt_at - clock).total_seconds()
            assert delay * 0.8 <= gap <= delay * 1.2, (step, gap, delay)
            # Not due a moment before the scheduled time.
            assert deliver_due(engine, cfg, now=m.next_attempt_at - timedelta(seconds=0.5)) == 0
            clock = m.next_attempt_at
        assert deliver_due(engine, cfg, now=clock) == 1
        m = message(session)
        assert m.status == MessageStatus.FAILED and m.next_attempt_at is None
        assert m.attempt_count == len(cfg.retry_schedule) == len(receiver.requests)
        assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1


def test_a_receiver_that_fails_then_recovers_gets_the_message(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, now: datetime
) -> None:
    with Receiver(lambda _r, i: Reply(503) if i < 2 else Reply(200)) as receiver:
        endpoint_id = add_endpoint(session, org, receiver.url, cfg)[0]
        publish(session, org, now=now)
        clock = now
        for _ in range(3):
            deliver_due(engine, cfg, now=clock)
            m = message(session)
            clock = m.next_attempt_at or clock
        assert m.status == MessageStatus.DELIVERED and m.attempt_count == 3
        assert [a.success for a in attempts(session)] == [False, False, True]
        endpoint = endpoint_row(session, endpoint_id)
        assert endpoint.failing_since is None and endpoint.last_success_at is not None


@pytest.mark.parametrize(
    ("reply", "expect_error", "status"),
    [
        (Reply(301, headers={"Location": "https://elsewhere.test/"}), "redirect (301)", 301),
        (Reply(200, body=b"\xff\xfe\xfa not utf-8"), None, 200),
        (Reply(200, body=b"x" * 200_000), None, 200),
        (Reply(reset=True), "connection", None),
        (Reply(delay=5), "timed out after 1s", None),
        (Reply(500, body=b"\x80\x81 broken"), "HTTP 500", 500),
    ],
    ids=["3xx", "non-utf8", "oversized", "reset", "timeout", "500-binary"],
)
def test_each_receiver_misbehaviour_is_recorded_clearly(
    session: Session,
    engine: Engine,
    org: OrgFixture,
    reply: Reply,
    expect_error: str | None,
    status: int | None,
) -> None:
    cfg = webhook_config(total_timeout=1.0, max_response_bytes=4096, excerpt_chars=100)
    assert isinstance(cfg, WebhookConfig)
    with Receiver(lambda _r, _i: reply) as receiver:
        add_endpoint(session, org, receiver.url, cfg)
        publish(session, org)
        assert deliver_due(engine, cfg) == 1
    (attempt,) = attempts(session)
    assert attempt.status_code == status
    if expect_error is None:
        assert attempt.success and attempt.error is None
        assert attempt.response_excerpt is not None and len(attempt.response_excerpt) <= 120
        assert message(session).status == MessageStatus.DELIVERED
    else:
        assert not attempt.success
        assert attempt.error is not None and expect_error in attempt.error
        assert message(session).status == MessageStatus.PENDING  # retried later
    if reply.body.startswith(b"\xff"):
        assert "\ufffd" in (attempt.response_excerpt or "")
    if len(reply.body) > 4096:
        assert (attempt.response_excerpt or "").endswith("[truncated]")


def test_429_with_retry_after_sets_the_next_attempt_within_bounds(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, now: datetime
) -> None:
    answers = iter(["120", str(10**9)])
    with Receiver(lambda _r, _i: Reply(429, headers={"Retry-After": next(answers)})) as rcv:
        add_endpoint(session, org, rcv.url, cfg)
        publish(session, org, now=now)
        deliver_due(engine, cfg, now=now)
        first = message(session).next_attempt_at
        assert first == now + timedelta(seconds=120)
        deliver_due(engine, cfg, now=first)
        second = message(session).next_attempt_at
        assert second == first + timedelta(seconds=cfg.retry_after_max)


def test_410_gone_disables_the_endpoint_at_once_with_audit_and_event(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, receiver: Receiver
) -> None:
    with Receiver(lambda _r, _i: Reply(410)) as gone:
        endpoint_id = add_endpoint(session, org, gone.url, cfg)[0]
        watcher = add_endpoint(session, org, receiver.url, cfg, "webhook.endpoint.disabled")[0]
        publish(session, org)
        deliver_due(engine, cfg)
        publish(session, org)  # a disabled endpoint gets no new messages
        deliver_due(engine, cfg)
        assert len(gone.requests) == 1
    with session.begin():
        view = webhooks.get_endpoint(session, org.admin, endpoint_id)
        actions = session.execute(select(AuditEvent.action)).scalars().all()
        statuses = set(
            session.execute(
                select(WebhookMessage.status).where(WebhookMessage.endpoint_id == endpoint_id)
            ).scalars()
        )
    assert not view.enabled and view.disabled_reason and "410" in view.disabled_reason
    assert EventType.WEBHOOK_ENDPOINT_DISABLED in actions
    assert statuses == {MessageStatus.FAILED}
    deliver_due(engine, cfg)
    disabled_events = [json.loads(r.body) for r in receiver.requests]
    assert [e["type"] for e in disabled_events] == ["webhook.endpoint.disabled"]
    assert disabled_events[0]["data"]["endpoint_id"] == endpoint_id
    with session.begin():
        notice = session.execute(
            select(WebhookMessage).where(
                WebhookMessage.event_type == EventType.WEBHOOK_ENDPOINT_DISABLED
            )
        ).scalar_one()
    # the notice went to the subscribed watcher (never to the endpoint that answered 410)
    assert (notice.endpoint_id, notice.status) == (watcher, MessageStatus.DELIVERED)
    assert receiver.requests[0].headers["webhook-id"] == notice.id


def test_endpoint_failing_24h_warns_and_5_days_disables(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, now: datetime
) -> None:
    with Receiver(lambda _r, _i: Reply(500)) as receiver:
        endpoint_id = add_endpoint(session, org, receiver.url, cfg)[0]
        for day in (0, 1, 2, 4, 5):
            at = now + timedelta(days=day, seconds=1 if day else 0)
            publish(session, org, now=at)
            deliver_due(engine, cfg, now=at)
            endpoint = endpoint_row(session, endpoint_id)
            if day == 0:
                assert endpoint.failing_since == now and endpoint.failing_warned_at is None
            elif day < 5:
                assert endpoint.enabled and endpoint.failing_warned_at is not None
        assert not endpoint.enabled
        assert endpoint.disabled_reason == "failed continuously for 5 days"
    with session.begin():
        events = session.execute(select(AuditEvent.action)).scalars().all()
    assert events.count(EventType.WEBHOOK_ENDPOINT_DISABLED) == 1


def test_replay_and_recover_send_failed_messages_again_with_the_same_id(
    session: Session, engine: Engine, org: OrgFixture, now: datetime
) -> None:
    cfg = webhook_config(retry_schedule=(0,))
    assert isinstance(cfg, WebhookConfig)
    healthy = {"ok": False}

    def behaviour(_r: Received, _i: int) -> Reply:
        return Reply(200) if healthy["ok"] else Reply(500)

    with Receiver(behaviour) as receiver:
        endpoint_id = add_endpoint(session, org, receiver.url, cfg)[0]
        publish(session, org, n=3, now=now)
        deliver_due(engine, cfg, now=now)
        with session.begin():
            failed = list(
                session.execute(select(WebhookMessage.id).order_by(WebhookMessage.id)).scalars()
            )
            n_failed = session.execute(
                select(func.count()).where(WebhookMessage.status == MessageStatus.FAILED)
            ).scalar_one()
        assert n_failed == 3
        healthy["ok"] = True
        later = now + timedelta(hours=1)
        with session.begin():
            webhooks.replay(session, org.admin, failed[0], now=later)
        deliver_due(engine, cfg, now=later)
        assert receiver.ids()[-1] == failed[0]
        with session.begin():
            count = webhooks.recover(
                session, org.admin, endpoint_id, since=now - timedelta(minutes=1), now=later
            )
        assert count == 2
        deliver_due(engine, cfg, now=later)
        assert sorted(receiver.ids()[-2:]) == failed[1:]
        with session.begin():
            stats = webhooks.endpoint_stats(session, org.admin, endpoint_id, now=later)
        assert (stats.attempts, stats.successes, stats.failed, stats.pending) == (6, 3, 0, 0)
        assert stats.success_rate == 0.5


def test_outbox_honours_rollbacks(
    session: Session,
    engine: Engine,
    org: OrgFixture,
    cfg: WebhookConfig,
    receiver: Receiver,
    pepper: bytes,
) -> None:
    add_endpoint(session, org, receiver.url, cfg, "api_key.created,invoice.paid")
    with pytest.raises(RuntimeError), session.begin():
        keys.create_key(session, org.id, org.admin, name="Doomed", expires=30, pepper=pepper)
        emit(session, org.id, PLATFORM_EVENT, {"invoice_id": "x"})
        raise RuntimeError("the change fails after its event was written")
    with session.begin():
        assert session.execute(select(func.count()).select_from(WebhookMessage)).scalar_one() == 0
    with session.begin():
        keys.create_key(session, org.id, org.admin, name="Kept", expires=30, pepper=pepper)
    deliver_due(engine, cfg)
    (got,) = receiver.requests
    body = json.loads(got.body)
    assert body["type"] == "api_key.created" and body["data"]["name"] == "Kept"
    assert "key" not in body["data"]


def test_send_test_returns_the_attempt_synchronously(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, receiver: Receiver
) -> None:
    endpoint_id, secret = add_endpoint(session, org, receiver.url, cfg)
    attempt = webhooks.send_test(engine, org.admin, endpoint_id, config=cfg)
    assert attempt.success and attempt.status_code == 200 and attempt.trigger == "test"
    got = receiver.requests[0]
    assert Webhook(secret).verify(got.body, got.headers)["type"] == "webhook.test"
    with session.begin():
        history = webhooks.list_attempts(session, org.admin, endpoint_id)
        assert [a.message_id for a in history] == [attempt.message_id]
        assert session.get(WebhookMessage, attempt.message_id).status == MessageStatus.DELIVERED
    assert deliver_due(engine, cfg) == 0  # the workers never send a test message again
    with pytest.raises(Conflict, match="not yet sent"):
        webhooks.deliver_test(engine, attempt.message_id, config=cfg)
    with pytest.raises(NotFound):
        webhooks.deliver_test(engine, "msg_missing", config=cfg)


def test_a_slow_test_send_does_not_block_other_writers(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig
) -> None:
    with Receiver(lambda _r, _i: Reply(delay=2.0)) as slow:
        endpoint_id, _ = add_endpoint(session, org, slow.url, cfg)
        session.close()
        result: list[webhooks.AttemptView] = []
        sender = threading.Thread(
            target=lambda: result.append(
                webhooks.send_test(engine, org.admin, endpoint_id, config=cfg)
            )
        )
        started = time.monotonic()
        sender.start()
        while not slow.requests and time.monotonic() - started < 5:
            time.sleep(0.01)
        assert slow.requests, "the test event never reached the receiver"
        write_started = time.monotonic()
        with Session(engine) as other, other.begin():  # BEGIN IMMEDIATE on SQLite
            webhooks.update_endpoint(other, org.admin, endpoint_id, config=cfg, description="x")
        write_took = time.monotonic() - write_started
        sender.join(10)
    assert write_took < 0.5, f"a concurrent write waited {write_took:.2f}s for the test send"
    assert result and result[0].success and time.monotonic() - started >= 2.0


def test_deliveries_are_bounded_per_endpoint_so_a_slow_one_does_not_starve_others(
    session: Session, engine: Engine, org: OrgFixture
) -> None:
    cfg = webhook_config(endpoint_concurrency=2, total_timeout=5.0)
    assert isinstance(cfg, WebhookConfig)
    with Receiver(lambda _r, _i: Reply(delay=0.3)) as slow, Receiver() as fast:
        add_endpoint(session, org, slow.url, cfg)
        add_endpoint(session, org, fast.url, cfg)
        publish(session, org, n=6)
        started = utcnow()
        assert deliver_due(engine, cfg) == 12
        assert len(fast.requests) == 6 and len(slow.requests) == 6
        first_fast = min(r.at for r in fast.requests)
        assert first_fast - started.timestamp() < 0.3  # not queued behind the slow one
        assert (utcnow() - started).total_seconds() >= 0.9  # 6 slow / 2 at a time


def test_emit_refuses_unregistered_types_and_secret_fields(
    session: Session, org: OrgFixture
) -> None:
    from core.errors import ValidationError

    with pytest.raises(ValidationError, match="not registered"), session.begin():
        emit(session, org.id, "invoice.unknown", {})
    with pytest.raises(ValidationError, match="secrets"), session.begin():
        emit(session, org.id, PLATFORM_EVENT, {"secret": "x"})
    with pytest.raises(ValidationError, match="at most"), session.begin():
        emit(session, org.id, PLATFORM_EVENT, {"blob": "x" * 70_000})
    with pytest.raises(ValidationError, match="JSON"), session.begin():
        emit(session, org.id, PLATFORM_EVENT, {"when": datetime.now(UTC)})


def test_the_embedded_worker_delivers_in_the_background_and_stops(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, receiver: Receiver
) -> None:
    import time

    from core.webhooks import EmbeddedWorker

    add_endpoint(session, org, receiver.url, cfg)
    worker = EmbeddedWorker(engine, cfg, scan_every=3600).start()
    try:
        publish(session, org, n=3)
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert len(set(receiver.ids())) == 3
    assert not worker._thread.is_alive()


def test_attempt_history_is_pruned_after_the_retention(
    session: Session,
    engine: Engine,
    org: OrgFixture,
    cfg: WebhookConfig,
    receiver: Receiver,
    now: datetime,
) -> None:
    add_endpoint(session, org, receiver.url, cfg)
    publish(session, org, now=now)
    deliver_due(engine, cfg, now=now)
    publish(session, org, now=now + timedelta(days=20))
    deliver_due(engine, cfg, now=now + timedelta(days=20))
    with session.begin():
        pruned = webhooks.prune(session, retention_days=30, now=now + timedelta(days=31))
    assert pruned == 1
    assert len(attempts(session)) == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("Mon, 01 Jun 2026 12:02:00 GMT", 120.0),
        ("Mon, 01 Jun 2026 11:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        ("-5", None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str, seconds: float | None, now: datetime
) -> None:
    from core.webhooks.delivery import parse_retry_after

    assert parse_retry_after(header, now) == seconds


def test_a_late_failure_does_not_undo_a_delivery_by_another_worker(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, receiver: Receiver
) -> None:
    from core.webhooks import delivery

    endpoint_id = add_endpoint(session, org, receiver.url, cfg)[0]
    publish(session, org)
    deliver_due(engine, cfg)
    m = message(session)
    stale = delivery.Job(m.id, endpoint_id, receiver.url, m.body, 0, 0, ())
    late = delivery.Outcome(utcnow(), False, 15000.0, error="timed out after 15s")
    with session.begin():
        delivery.record(session, [(stale, late)], cfg)
    assert message(session).status == MessageStatus.DELIVERED
    assert [a.success for a in attempts(session)] == [True, False]


def test_the_lease_must_outlast_a_delivery(tmp_path: Any) -> None:
    from core.config import Settings
    from core.errors import ValidationError

    settings = Settings(data_dir=tmp_path, database_url="sqlite://")
    with pytest.raises(ValidationError, match="LEASE_SECONDS must exceed twice"):
        WebhookConfig.from_env(settings, {"INTEGRATION_WEBHOOK_LEASE_SECONDS": "30"})


def test_a_changed_encryption_key_fails_that_endpoints_messages_with_the_reason(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, receiver: Receiver
) -> None:
    import dataclasses
    import os

    add_endpoint(session, org, receiver.url, cfg)
    publish(session, org)
    other_key = dataclasses.replace(cfg, secret_key=os.urandom(32))
    assert deliver_due(engine, other_key) == 0
    m = message(session)
    assert m.status == MessageStatus.FAILED and receiver.requests == []
    assert m.last_error is not None and "webhook secret key has changed" in m.last_error


def test_a_cookie_set_by_a_receiver_is_never_sent_back(
    session: Session, engine: Engine, org: OrgFixture
) -> None:
    cfg = webhook_config(endpoint_concurrency=1)  # one message per claim: two rounds
    assert isinstance(cfg, WebhookConfig)
    cookie = Reply(headers={"Set-Cookie": "session=from-the-receiver; Path=/"})
    with Receiver(lambda _r, _i: cookie) as receiver:
        # A host name: clients keep no cookies of bare IP addresses anyway.
        add_endpoint(session, org, f"http://localhost:{receiver.port}/hook", cfg)
        publish(session, org, n=2)
        assert deliver_due(engine, cfg) == 2  # both rounds share one HTTP client
        assert len(receiver.requests) == 2
        sent = [{k.lower() for k in r.headers} for r in receiver.requests]
    assert all("cookie" not in names for names in sent), sent


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_worker_reconnects_when_its_database_connection_is_cut(
    session: Session, engine: Engine, org: OrgFixture, cfg: WebhookConfig, receiver: Receiver
) -> None:
    from sqlalchemy import text

    from core.webhooks import EmbeddedWorker

    def delivered(n: int) -> bool:
        deadline = time.monotonic() + 15
        while len(set(receiver.ids())) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(set(receiver.ids())) == n

    add_endpoint(session, org, receiver.url, cfg)
    worker = EmbeddedWorker(engine, cfg, scan_every=3600).start()
    try:
        publish(session, org, n=2)
        assert delivered(2)
        with engine.connect() as admin:  # cut every other session, the worker's included
            cut = admin.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert cut >= 1
        publish(session, org, n=3)
        assert delivered(5), "the worker did not come back after losing its connection"
    finally:
        worker.stop()
    with session.begin():
        statuses = session.execute(select(WebhookMessage.status)).scalars().all()
    assert sorted(statuses) == [MessageStatus.DELIVERED] * 5


def test_the_failing_warning_and_switch_off_name_the_configured_spans(
    session: Session, engine: Engine, org: OrgFixture, now: datetime
) -> None:
    from core.alerts.models import Alert

    cfg = webhook_config(failing_after=timedelta(hours=2), disable_after=timedelta(hours=36))
    with Receiver(lambda _r, _i: Reply(500)) as receiver:
        endpoint_id = add_endpoint(session, org, receiver.url, cfg)[0]
        for hours in (0, 3, 37):
            at = now + timedelta(hours=hours)
            publish(session, org, now=at)
            deliver_due(engine, cfg, now=at)
    with session.begin():
        warning = session.execute(
            select(Alert.message).where(Alert.kind == EventType.WEBHOOK_ENDPOINT_FAILING)
        ).scalar_one()
    assert warning.endswith("it will be disabled after 36 hours of failures.")
    assert endpoint_row(session, endpoint_id).disabled_reason == "failed continuously for 36 hours"
