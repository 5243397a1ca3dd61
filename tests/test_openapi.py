"""The OpenAPI document holds to the service: the same routes, an operationId each, every
answer and error code documented — checked statically here, and by schemathesis against a
live `serve` with a bounded number of generated requests per operation."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy.orm import Session

from core.api import app, events, openapi
from core.auth.contract import Code
from core.auth.https import HTTPS_REQUIRED_CODE
from core.auth.principal import UNAVAILABLE_CODE
from core.db import make_engine
from core.errors import (
    IdempotencyConflict,
    InvalidEventData,
    StorageError,
    UnknownEventType,
    UnknownOrganization,
    ValidationError,
)
from core.keys import service as keys
from core.webhooks.catalog import register_event_type
from tests._serve_util import SERVICE_TOKEN, Server, start_serve
from tests.factories import make_org

ROOT = Path(__file__).resolve().parents[1]
DOC = openapi.DOCUMENT


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, item in DOC["paths"].items() for m, op in item.items()]


def _codes(response: dict[str, Any]) -> list[str]:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    error = schema.get("properties", {}).get("error", {})
    return list(error.get("properties", {}).get("code", {}).get("enum", []))


def test_the_document_has_exactly_the_services_routes() -> None:
    documented = {(path, method.upper()) for path, method, _ in _operations()}
    assert documented == set(app._ROUTES.items())


def test_every_operation_has_a_unique_operation_id_and_typed_answers() -> None:
    ids = [op["operationId"] for _, _, op in _operations()]
    assert len(ids) == len(set(ids)) == len(_operations())
    for path, method, op in _operations():
        for status, response in op["responses"].items():
            assert response["content"]["application/json"]["schema"], (path, method, status)
            if int(status) >= 400:
                assert _codes(response), (path, method, status)


def test_every_error_code_the_service_sends_is_documented() -> None:
    documented = {
        code for _, _, op in _operations() for r in op["responses"].values() for code in _codes(r)
    }
    sent = set()
    for source in (ROOT / "core" / "api").glob("*.py"):
        sent |= set(re.findall(r'error_json\(\s*"([a-z_]+)"', source.read_text()))
    sent |= {HTTPS_REQUIRED_CODE, UNAVAILABLE_CODE}
    sent |= {c.value for c in Code if c is not Code.VALID}
    # The service's own errors answered by POST /v1/events.
    sent |= {
        e.code
        for e in (
            UnknownOrganization,
            IdempotencyConflict,
            UnknownEventType,
            InvalidEventData,
            ValidationError,
            StorageError,
        )
    }
    sent -= {"not_found", "method_not_allowed"}  # answers to no operation (see info)
    assert sent <= documented, sorted(sent - documented)
    assert "not_found" in DOC["info"]["description"]
    assert "method_not_allowed" in DOC["info"]["description"]


def test_the_documented_limits_and_codes_are_the_services() -> None:
    assert openapi.VERIFY_MAX_BODY == app.MAX_BODY
    assert openapi.EVENTS_MAX_BODY == events.MAX_EVENT_BODY
    assert [c.value for c in Code] == openapi.VERDICT_CODES
    verify = DOC["components"]["schemas"]["VerifyRequest"]["properties"]["key"]
    assert "maxLength" not in verify  # every string within the body limit gets a verdict


# -- schemathesis against a live service -----------------------------------------------------


class Live:
    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key


@pytest.fixture(scope="module")
def live(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`serve` on a SQLite copy with the documented examples' data: organization Acme, a
    key, and the `invoice.paid` type with a schema."""
    data_dir = tmp_path_factory.mktemp("openapi") / "data"
    data_dir.mkdir()
    path = data_dir / "integration.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    from core.config import Settings

    pepper = Settings(data_dir, url).pepper
    with Session(engine, expire_on_commit=False) as s:
        org = make_org(s, "Acme")
        with s.begin():
            new = keys.create_key(
                s, org.id, org.admin, name="Conformance", expires="30", pepper=pepper
            )
            register_event_type(
                s,
                "invoice.paid",
                "an invoice was paid",
                schema={"type": "object", "required": ["invoice_id"]},
            )
    engine.dispose()
    server = start_serve(url, data_dir, args=("--no-usage",))
    try:
        yield Live(server, new.key)
    finally:
        server.stop()


schema = schemathesis.openapi.from_dict(DOC)


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_live_service_answers_as_documented(case: Any, live: Live) -> None:
    if case.path == "/v1/whoami":
        headers = {"X-API-Key": live.key}
    elif case.path in ("/v1/keys/verify", "/v1/events"):
        headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    else:
        headers = {}
    # A schema-valid event may still name a type that is not registered, or data its type's
    # own schema refuses (422): that depends on the catalog, which the document cannot know.
    excluded = [positive_data_acceptance] if case.path == "/v1/events" else []
    case.call_and_validate(base_url=live.server.url, headers=headers, excluded_checks=excluded)
