"""The catalog of platform event types and publishing them: schemas, errors, idempotency."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from core import webhooks
from core.errors import (
    IdempotencyConflict,
    InvalidEventData,
    UnknownEventType,
    UnknownOrganization,
    ValidationError,
)
from core.webhooks import catalog
from core.webhooks.catalog import Published, publish_event, register_event_type
from core.webhooks.config import WebhookConfig
from core.webhooks.models import EventPublication, WebhookMessage
from tests._webhook_receiver import webhook_config
from tests.factories import OrgFixture, make_org

INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["invoice_id", "amount"],
    "properties": {
        "invoice_id": {"type": "string"},
        "amount": {"type": "integer", "minimum": 0},
        "customer": {
            "type": "object",
            "required": ["email"],
            "properties": {"email": {"type": "string"}},
        },
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
    },
    "$defs": {"line": {"type": "object", "required": ["sku"]}},
}
VALID = {"invoice_id": "inv_1", "amount": 4200}


@pytest.fixture
def cfg() -> WebhookConfig:
    return webhook_config()  # type: ignore[return-value]


def invoice_org(session: Session, cfg: WebhookConfig, now: datetime) -> OrgFixture:
    """Register `invoice.paid` (schema above); return an organization with one endpoint
    subscribed to it."""
    with session.begin():
        register_event_type(
            session, "invoice.paid", "an invoice was paid", schema=INVOICE_SCHEMA, now=now
        )
    fixture = make_org(session, now=now - timedelta(days=1))
    with session.begin():
        webhooks.create_endpoint(
            session,
            fixture.id,
            fixture.admin,
            url="http://127.0.0.1:9/hook",
            events="invoice.paid",
            config=cfg,
        )
    return fixture


@pytest.fixture
def org(session: Session, now: datetime, cfg: WebhookConfig) -> OrgFixture:
    return invoice_org(session, cfg, now)


def publish(session: Session, org_ref: str, data: object, **kw: Any) -> Published:
    with session.begin():
        return publish_event(session, org_ref, kw.pop("type", "invoice.paid"), data, **kw)


def message_count(session: Session) -> int:
    with session.begin():
        return int(session.execute(select(func.count()).select_from(WebhookMessage)).scalar_one())


# -- the catalog ------------------------------------------------------------------------------


def test_a_registered_type_is_listed_and_subscribable_and_registering_again_replaces_it(
    session: Session, now: datetime, cfg: WebhookConfig
) -> None:
    org = make_org(session)
    with pytest.raises(ValidationError, match="unknown event type"), session.begin():
        webhooks.create_endpoint(
            session,
            org.id,
            org.admin,
            url="http://127.0.0.1:9/",
            events="order.shipped",
            config=cfg,
        )
    with session.begin():
        view, created = register_event_type(session, "order.shipped", "an order left", now=now)
    assert created and view.schema is None
    with session.begin():
        view, created = register_event_type(
            session, "order.shipped", "an order shipped", schema={"type": "object"}, now=now
        )
    assert not created and view.description == "an order shipped"
    with session.begin():
        (listed,) = catalog.list_event_types(session)
        assert listed.to_dict()["schema"] == {"type": "object"}
        assert catalog.subscribable_events(session)[-1] == "order.shipped"
        assert "api_key.revoked" in catalog.subscribable_events(session)
        endpoint, _ = webhooks.create_endpoint(
            session,
            org.id,
            org.admin,
            url="http://127.0.0.1:9/",
            events="order.shipped",
            config=cfg,
        )
    assert endpoint.events == ["order.shipped"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("invoice", "dot-separated"),
        ("Invoice.Paid", "dot-separated"),
        ("invoice.paid\n", "dot-separated"),
        ("invoice..paid", "dot-separated"),
        ("a." + "b" * 70, "at most 64"),
        ("api_key.deleted", "product's own namespace"),
        ("webhook.test", "product's own namespace"),
        ("member.promoted", "product's own namespace"),
    ],
)
def test_malformed_or_reserved_names_are_refused(session: Session, name: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message), session.begin():
        register_event_type(session, name, "x")
    assert catalog.list_event_types(session) == []


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([], "JSON object"),
        ({"type": "array"}, '"type" must be "object"'),
        ({"type": "object", "properties": {"a": {"type": "nope"}}}, "at /properties/a/type"),
        ({"$ref": "https://schemas.example/invoice.json"}, "never fetched"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "never fetched"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "points nowhere"),
        ({"properties": {"a": {"$id": "https://x.example/a"}}}, r"\$id"),
        ({"$ref": "#"}, "without end"),
        ({"const": "x" * 70_000}, "at most"),
    ],
)
def test_unusable_schemas_are_refused_with_the_reason(
    session: Session, schema: Any, message: str
) -> None:
    with pytest.raises(ValidationError, match=message), session.begin():
        register_event_type(session, "invoice.paid", "x", schema=schema)
    assert catalog.list_event_types(session) == []


# -- publishing -------------------------------------------------------------------------------


def test_valid_data_writes_one_message_per_subscribed_endpoint(
    session: Session, org: OrgFixture
) -> None:
    published = publish(session, org.id, VALID)
    assert published.event_id.startswith("evt_") and len(published.message_ids) == 1
    assert not published.duplicate
    by_name = publish(session, org.name, {**VALID, "lines": [{"sku": "A-1"}]})
    assert len(by_name.message_ids) == 1
    assert message_count(session) == 2


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"invoice_id": "inv_1"}, "/data/amount", "/data/amount: is required"),
        ({"invoice_id": "inv_1", "amount": "42"}, "/data/amount", "is not of type 'integer'"),
        ({"invoice_id": "inv_1", "amount": -1}, "/data/amount", "minimum"),
        ({**VALID, "customer": {}}, "/data/customer/email", "is required"),
        ({**VALID, "lines": [{"sku": "A"}, {}]}, "/data/lines/1/sku", "is required"),
        ([1, 2], "/data", "must be a JSON object"),
        (
            {**VALID, "deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
            "/data",
            "nested deeper",
        ),
        ({**VALID, "secret": "s"}, "/data", "secrets"),
        ({**VALID, "pad": "x" * 70_000}, "/data", "at most"),
    ],
)
def test_data_that_fails_is_refused_naming_the_path_and_writes_nothing(
    session: Session, org: OrgFixture, data: object, path: str, message: str
) -> None:
    with pytest.raises(InvalidEventData, match=message) as caught, session.begin():
        publish_event(session, org.id, "invoice.paid", data)
    assert caught.value.path == path
    assert caught.value.to_dict()["code"] == "invalid_event_data"
    assert message_count(session) == 0


def test_unknown_types_organizations_and_the_products_own_events_are_refused(
    session: Session, org: OrgFixture
) -> None:
    with pytest.raises(UnknownEventType, match="not registered"), session.begin():
        publish_event(session, org.id, "invoice.voided", VALID)
    with pytest.raises(UnknownEventType, match="product's own"), session.begin():
        publish_event(session, org.id, "api_key.revoked", {"key_id": "key_forged"})
    with pytest.raises(UnknownOrganization) as caught, session.begin():
        publish_event(session, "Nobody Inc", "invoice.paid", VALID)
    assert caught.value.code == "unknown_organization"
    assert message_count(session) == 0


def test_a_schema_change_applies_to_the_next_event(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    publish(session, org.id, VALID)
    with session.begin():
        register_event_type(
            session,
            "invoice.paid",
            "an invoice was paid",
            schema={**INVOICE_SCHEMA, "required": ["invoice_id", "amount", "currency"]},
            now=now,  # the same time: the new schema must still be used
        )
    with pytest.raises(InvalidEventData, match="currency"), session.begin():
        publish_event(session, org.id, "invoice.paid", VALID)


# -- idempotency ------------------------------------------------------------------------------


def test_the_same_idempotency_key_within_24_hours_publishes_once(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    first = publish(session, org.id, VALID, idempotency_key="inv_1-paid", now=now)
    again = publish(
        session, org.name, dict(reversed(VALID.items())), idempotency_key="inv_1-paid", now=now
    )
    assert again.duplicate and not first.duplicate
    assert (again.event_id, again.message_ids) == (first.event_id, first.message_ids)
    assert message_count(session) == 1
    with pytest.raises(IdempotencyConflict, match="another event"), session.begin():
        publish_event(
            session,
            org.id,
            "invoice.paid",
            {**VALID, "amount": 1},
            idempotency_key="inv_1-paid",
            now=now + timedelta(hours=23),
        )
    later = publish(
        session,
        org.id,
        VALID,
        idempotency_key="inv_1-paid",
        now=now + timedelta(hours=24, seconds=1),
    )
    assert not later.duplicate and later.event_id != first.event_id
    assert message_count(session) == 2


def test_idempotency_keys_belong_to_one_organization(
    session: Session, org: OrgFixture, cfg: WebhookConfig
) -> None:
    other = make_org(session, "Globex")
    with session.begin():
        webhooks.create_endpoint(
            session,
            other.id,
            other.admin,
            url="http://127.0.0.1:9/",
            events="invoice.paid",
            config=cfg,
        )
    a = publish(session, org.id, VALID, idempotency_key="k")
    b = publish(session, other.id, VALID, idempotency_key="k")
    assert not a.duplicate and not b.duplicate and message_count(session) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "line\nbreak", "\x00"])
def test_malformed_idempotency_keys_are_refused(
    session: Session, org: OrgFixture, key: str
) -> None:
    with pytest.raises(ValidationError, match="idempotency_key"), session.begin():
        publish_event(session, org.id, "invoice.paid", VALID, idempotency_key=key)
    assert message_count(session) == 0


def test_records_past_the_window_are_pruned(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    publish(session, org.id, VALID, idempotency_key="old", now=now - timedelta(hours=25))
    publish(session, org.id, VALID, idempotency_key="new", now=now)
    with session.begin():
        assert webhooks.prune(session, retention_days=30, now=now) == 0
    with session.begin():
        keys = session.execute(select(EventPublication.idempotency_key)).scalars().all()
    assert keys == ["new"]


def _wait_until_blocked(engine: Engine, worker: threading.Thread) -> None:
    """Return once the other transaction waits for ours (PostgreSQL: on a lock)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if engine.dialect.name == "postgresql":
            with engine.connect() as c:
                waiting = c.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                ).scalar_one()
            if waiting:
                return
        elif worker.is_alive():  # SQLite: its BEGIN IMMEDIATE waits for our write lock
            time.sleep(0.2)
            assert worker.is_alive()
            return
        time.sleep(0.02)
    raise AssertionError("the second publication never waited for the first")


@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_concurrent_requests_with_one_key_publish_once(
    engine: Engine, session: Session, org: OrgFixture, first_commits: bool
) -> None:
    results: list[Published | BaseException] = []

    def second() -> None:
        try:
            with Session(engine) as s, s.begin():
                results.append(
                    publish_event(s, org.id, "invoice.paid", VALID, idempotency_key="race")
                )
        except BaseException as exc:  # reported to the test thread
            results.append(exc)

    with Session(engine) as first_session:
        first_session.begin()
        first = publish_event(first_session, org.id, "invoice.paid", VALID, idempotency_key="race")
        worker = threading.Thread(target=second)
        worker.start()
        _wait_until_blocked(engine, worker)
        if first_commits:
            first_session.commit()
        else:
            first_session.rollback()
    worker.join(20)
    (outcome,) = results
    assert isinstance(outcome, Published), outcome
    if first_commits:
        assert outcome.duplicate and outcome.message_ids == first.message_ids
    else:
        assert not outcome.duplicate and outcome.event_id != first.event_id
    assert message_count(session) == 1


def test_a_batch_publishes_each_event_or_refuses_it_alone(
    session: Session, org: OrgFixture, now: datetime
) -> None:
    requests: list[dict[str, Any]] = [
        {"org": org.id, "type": "invoice.paid", "data": VALID, "idempotency_key": "b"},
        {"org": org.id, "type": "invoice.paid", "data": {"invoice_id": "x"}},
        {"org": org.name, "type": "invoice.paid", "data": VALID, "idempotency_key": "a"},
        {"org": org.id, "type": "invoice.paid", "data": VALID, "idempotency_key": "a"},
        {
            "org": org.id,
            "type": "invoice.paid",
            "data": {**VALID, "amount": 1},
            "idempotency_key": "a",
        },
        {"org": "Nobody", "type": "invoice.paid", "data": VALID},
        {"org": org.id, "type": "invoice.paid", "data": VALID},
    ]
    with session.begin():
        publisher = catalog.Publisher(session, now=now)
        outcomes = publisher.publish_many(requests)
        publisher.flush()
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == [
        "Published",
        "InvalidEventData",
        "Published",
        "Published",
        "IdempotencyConflict",
        "UnknownOrganization",
        "Published",
    ]
    first_a, repeat_a = outcomes[2], outcomes[3]
    assert isinstance(first_a, Published) and isinstance(repeat_a, Published)
    assert repeat_a.duplicate and repeat_a.message_ids == first_a.message_ids
    assert message_count(session) == 3  # b, a (once) and the plain one
    again = publish(session, org.id, VALID, idempotency_key="b", now=now)
    assert again.duplicate and again.message_ids == outcomes[0].message_ids  # type: ignore[union-attr]
    with session.begin():
        publisher = catalog.Publisher(session, now=now + timedelta(hours=1))
        later = publisher.publish_many([requests[0], requests[4], requests[6]])
        publisher.flush()
    assert [type(o).__name__ for o in later] == ["Published", "IdempotencyConflict", "Published"]
    assert later[0].duplicate and later[0].event_id == outcomes[0].event_id  # type: ignore[union-attr]
    assert message_count(session) == 4  # only the unkeyed one is new
