"""The WSGI middleware in a real Flask app, served by werkzeug on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from core.auth.contract import MESSAGES, Code
from core.auth.https import HttpsPolicy
from core.auth.principal import PRINCIPAL_KEY
from core.auth.verifier import Verifier
from core.auth.wsgi import ApiKeyWSGIMiddleware
from core.keys import service as keys
from core.usage.recorder import UsageRecorder
from core.usage.schema import glob_pattern
from tests._serve_util import auth, org_with_key, wait_recorded


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/v1/me")
    def me() -> dict[str, Any]:
        p = request.environ[PRINCIPAL_KEY]
        return {"org": p.org_id, "key_id": p.key_id, "key_name": p.key_name}

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def serve() -> Iterator[Any]:
    servers = []

    def start(wsgi: Any) -> str:
        server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def protect(app: Flask, verifier: Verifier, **kwargs: Any) -> Flask:
    app.wsgi_app = ApiKeyWSGIMiddleware(app.wsgi_app, verifier, **kwargs)  # type: ignore[method-assign]
    return app


def test_flask_view_receives_the_principal(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    url = serve(protect(flask_app(), Verifier(engine, pepper)))
    for headers in (
        auth(new.key),
        {"X-API-Key": new.key},
        {"authorization": f"X-API-KEY {new.key}"},
    ):
        r = httpx.get(url + "/v1/me", headers=headers)
        assert r.status_code == 200
        assert r.json() == {"org": org.id, "key_id": new.id, "key_name": "Production Server"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([], "missing_credentials"),
        ([("Authorization", "Basic dXNlcjpwdw==")], "malformed_credentials"),
        ([("X-API-Key", "isk_a"), ("X-API-Key", "isk_b")], "malformed_credentials"),
        ([("X-API-Key", "isk_" + "z" * 36)], "invalid_key"),
    ],
)
def test_failures_answer_401_with_the_same_shape(
    serve: Any, engine: Engine, pepper: bytes, headers: list[tuple[str, str]], code: str
) -> None:
    url = serve(protect(flask_app(), Verifier(engine, pepper)))
    r = httpx.get(url + "/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "x-api-key"
    assert r.json() == {"error": {"code": code, "message": MESSAGES[Code(code)]}}


def test_revoked_key_is_refused_and_health_passes(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    url = serve(protect(flask_app(), Verifier(engine, pepper)))
    assert httpx.get(url + "/v1/me", headers=auth(new.key)).status_code == 200
    with session.begin():
        keys.revoke_key(session, org.admin, new.id)
    r = httpx.get(url + "/v1/me", headers=auth(new.key))
    assert r.json()["error"]["code"] == "key_revoked"
    assert httpx.get(url + "/healthz").status_code == 200


def test_https_required_trusts_forwarded_proto_only_from_proxies(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    _org, new = org_with_key(session, pepper)
    headers = {**auth(new.key), "X-Forwarded-Proto": "https"}
    verifier = Verifier(engine, pepper)
    strict = serve(protect(flask_app(), verifier, https=HttpsPolicy.parse(True, "10.0.0.0/8")))
    r = httpx.get(strict + "/v1/me", headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "https_required"
    proxied = serve(protect(flask_app(), verifier, https=HttpsPolicy.parse(True, "127.0.0.1")))
    assert httpx.get(proxied + "/v1/me", headers=headers).status_code == 200


def test_usage_records_status_of_each_request(
    serve: Any, session: Session, engine: Engine, pepper: bytes, data_dir: Path
) -> None:
    import duckdb

    org, new = org_with_key(session, pepper)
    recorder = UsageRecorder(data_dir, engine)
    url = serve(protect(flask_app(), Verifier(engine, pepper), recorder=recorder))
    httpx.get(url + "/v1/me", headers=auth(new.key))
    httpx.get(url + "/v1/missing", headers=auth(new.key))
    httpx.get(url + "/v1/me")
    wait_recorded(recorder, 3)  # a record is made just after its response is sent
    assert recorder.flush() == 3
    rows = duckdb.sql(
        f"SELECT path, status, code, key_id FROM read_parquet('{glob_pattern(data_dir)}', "
        "hive_partitioning=true) ORDER BY ts"
    ).fetchall()
    assert rows == [
        ("/v1/me", 200, "valid", new.id),
        ("/v1/missing", 404, "valid", new.id),
        ("/v1/me", 401, "missing_credentials", None),
    ]
    assert keys.list_keys(session, org.id, org.admin)[0].usage_count == 2
