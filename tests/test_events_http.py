"""`POST /v1/events`: every answer in process, then the whole path for real — the CLI
registers the type and adds the endpoint, `serve` accepts the event, `worker` delivers it,
and the receiver verifies it with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from core.api.app import PUBLIC_PATHS, ServiceApp
from core.api.config import ServiceConfig
from core.api.events import MAX_EVENT_BODY, EventsRoute
from core.auth.asgi import ApiKeyMiddleware
from core.auth.verifier import Verifier
from core.webhooks.models import WebhookMessage
from tests._serve_util import ROOT, SERVICE_TOKEN, start_serve
from tests._webhook_receiver import Receiver, webhook_config
from tests.test_events_catalog import INVOICE_SCHEMA, VALID, invoice_org

SVC = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def call(
    engine: Engine, pepper: bytes, requests: list[dict[str, Any]], **config: Any
) -> list[httpx.Response]:
    """Send each request to the service (its routes behind the middleware) in process."""
    settings = ServiceConfig(service_token=SERVICE_TOKEN, **config)
    verifier = Verifier(engine, pepper)
    service = ServiceApp(verifier, settings, events=EventsRoute(engine, settings))
    app = ApiKeyMiddleware(service, verifier, exempt_paths=PUBLIC_PATHS)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return [await client.request(**r) for r in requests]

    return asyncio.run(run())


def post(body: object = None, headers: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": "POST",
        "url": "/v1/events",
        "headers": SVC if headers is None else headers,
    }
    if body is not None:
        request["json"] = body
    request.update(kw)
    return request


def messages(session: Session) -> int:
    with session.begin():
        return int(session.execute(select(func.count()).select_from(WebhookMessage)).scalar_one())


def test_every_answer_of_the_events_endpoint(
    engine: Engine, session: Session, pepper: bytes, now: datetime
) -> None:
    org = invoice_org(session, webhook_config(), now)  # type: ignore[arg-type]
    event = {"org": org.id, "type": "invoice.paid", "data": VALID}
    answers = call(
        engine,
        pepper,
        [
            post(event),
            post({**event, "org": org.name, "idempotency_key": "inv_1"}),
            post({**event, "org": org.name, "idempotency_key": "inv_1"}),
            post({**event, "data": {**VALID, "amount": 5}, "idempotency_key": "inv_1"}),
            post({**event, "data": {"invoice_id": "inv_1"}}),
            post({**event, "type": "invoice.voided"}),
            post({**event, "type": "api_key.revoked"}),
            post({**event, "org": "org_doesnotexist"}),
            post(event, headers={}),
            post(event, headers={"Authorization": "Bearer " + "x" * 30}),
            post(event, headers={"Authorization": f"x-api-key {SERVICE_TOKEN}"}),
            post(content=b"{not json"),
            post(content=b"[1]"),
            post({**event, "extra": 1}),
            post({"org": org.id, "type": "invoice.paid"}),
            post({**event, "idempotency_key": 7}),
            post(content=b'{"org": "x", "type": "invoice.paid", "data": {"n": NaN}}'),
            post(content=b"x" * (MAX_EVENT_BODY + 1)),
            {"method": "GET", "url": "/v1/events", "headers": SVC},
        ],
    )
    status = [(r.status_code, r.json().get("error", {}).get("code")) for r in answers]
    assert status == [
        (202, None),
        (202, None),
        (202, None),
        (409, "idempotency_conflict"),
        (422, "invalid_event_data"),
        (422, "unknown_event_type"),
        (422, "unknown_event_type"),
        (404, "unknown_organization"),
        (401, "invalid_service_token"),
        (401, "invalid_service_token"),
        (401, "invalid_service_token"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (400, "invalid_request"),
        (413, "request_too_large"),
        (405, "method_not_allowed"),
    ]
    first, keyed, repeat = (a.json() for a in answers[:3])
    assert first["event_id"].startswith("evt_") and len(first["message_ids"]) == 1
    assert first["duplicate"] is False and keyed["duplicate"] is False
    assert repeat == {**keyed, "duplicate": True}
    assert answers[4].json()["error"]["path"] == "/data/amount"
    assert "/data/amount" in answers[4].json()["error"]["message"]
    assert answers[8].headers["www-authenticate"] == "Bearer"
    assert messages(session) == 2  # the valid event and the keyed one, once


def test_without_a_service_token_publishing_is_off(engine: Engine, pepper: bytes) -> None:
    settings = ServiceConfig(service_token=None)
    verifier = Verifier(engine, pepper)
    app = ServiceApp(verifier, settings, events=EventsRoute(engine, settings))

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.post("/v1/events", json={}, headers=SVC)

    answer = asyncio.run(run())
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "events_disabled"


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # both backends are covered in process above
def test_an_event_posted_over_http_reaches_the_endpoint_signed(
    database_url: str, data_dir: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        DATABASE_URL=database_url,
        INTEGRATION_DATA_DIR=str(data_dir),
        INTEGRATION_WEBHOOK_ALLOW_HTTP="1",
        INTEGRATION_WEBHOOK_ALLOW_PRIVATE="1",
    )
    schema = tmp_path / "invoice.paid.json"
    schema.write_text(json.dumps(INVOICE_SCHEMA))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "init",
            "--org",
            "Acme",
            "--admin",
            "ann@acme.test",
            "--password-stdin",
        ],
        input="a-long-passw0rd\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = cli(
        [
            "events",
            "register",
            "invoice.paid",
            "--description",
            "an invoice was paid",
            "--schema",
            str(schema),
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    r = cli(["events", "list", "--json"], env)
    assert [t["name"] for t in json.loads(r.stdout)] == ["invoice.paid"]

    with Receiver() as receiver:
        r = cli(
            [
                "webhooks",
                "add",
                "--org",
                "Acme",
                "--url",
                receiver.url,
                "--events",
                "invoice.paid",
                "--by",
                "ann@acme.test",
                "--json",
            ],
            env,
        )
        assert r.returncode == 0, r.stderr
        secret = json.loads(r.stdout)["secret"]
        server = start_serve(database_url, data_dir, args=("--no-usage",))
        try:
            with httpx.Client(base_url=server.url, headers=SVC) as c:
                event = {
                    "org": "Acme",
                    "type": "invoice.paid",
                    "data": VALID,
                    "idempotency_key": "inv_1",
                }
                accepted = c.post("/v1/events", json=event)
                assert accepted.status_code == 202, accepted.text
                again = c.post("/v1/events", json=event)
                assert again.status_code == 202 and again.json()["duplicate"] is True
                assert again.json()["message_ids"] == accepted.json()["message_ids"]
                missing = c.post(
                    "/v1/events",
                    json={**event, "data": {"invoice_id": "inv_2"}, "idempotency_key": None},
                )
                assert missing.status_code == 422
                assert missing.json()["error"]["path"] == "/data/amount"
                unknown = c.post("/v1/events", json={**event, "type": "invoice.voided"})
                assert unknown.status_code == 422
                assert unknown.json()["error"]["code"] == "unknown_event_type"
                anonymous = httpx.post(server.url + "/v1/events", json=event)
                assert anonymous.status_code == 401
        finally:
            server.stop()
        r = cli(["worker", "--once"], env)
        assert r.returncode == 0, r.stderr
        (got,) = receiver.requests
    assert got.headers["webhook-id"] == accepted.json()["message_ids"][0]
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["type"] == "invoice.paid" and payload["data"] == VALID
    assert payload["id"] == accepted.json()["event_id"]
    assert payload["org"]["name"] == "Acme"
    assert payload["timestamp"] == payload["created_at"]
