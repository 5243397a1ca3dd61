"""The ASGI middleware in real FastAPI and Starlette apps, served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import duckdb
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.auth.asgi import ApiKeyMiddleware
from core.auth.https import HttpsPolicy
from core.auth.principal import PRINCIPAL_KEY, STATUS_KEY
from core.auth.verifier import Verifier
from core.clock import utcnow
from core.db import make_engine
from core.keys import format as keyformat
from core.keys import service as keys
from core.usage.recorder import UsageRecorder
from core.usage.schema import glob_pattern
from tests._serve_util import auth, free_port, org_with_key, wait_recorded


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/me")
    def me(request: Request) -> dict[str, Any]:
        p = request.state.principal
        return {
            "org": p.org_id,
            "key_id": p.key_id,
            "key_name": p.key_name,
            "scope_has_it": request.scope[PRINCIPAL_KEY] is p,
        }

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.principal.key_id)
        await websocket.close()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("handler failure")

    return app


def starlette_app() -> Starlette:
    async def me(request: Request) -> JSONResponse:
        p = request.state.principal
        return JSONResponse({"org": p.org_id, "key_id": p.key_id})

    return Starlette(routes=[Route("/v1/me", me)])


@pytest.fixture
def serve() -> Iterator[Any]:
    """Run an ASGI app with uvicorn on a free loopback port; yield a starter."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="error", lifespan="off", proxy_headers=False
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def test_fastapi_handler_receives_the_principal(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    app = fastapi_app()  # added the way the README shows
    app.add_middleware(
        ApiKeyMiddleware, verifier=Verifier(engine, pepper), exempt_paths={"/healthz"}
    )
    url = serve(app)
    r = httpx.get(url + "/v1/me", headers=auth(new.key))
    assert r.status_code == 200
    assert r.json() == {
        "org": org.id,
        "key_id": new.id,
        "key_name": "Production Server",
        "scope_has_it": True,
    }
    r = httpx.get(url + "/v1/me", headers={"X-API-Key": new.key})
    assert r.status_code == 200 and r.json()["key_id"] == new.id


def test_starlette_app_works_the_same(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    url = serve(ApiKeyMiddleware(starlette_app(), Verifier(engine, pepper)))
    assert httpx.get(url + "/v1/me", headers=auth(new.key)).json() == {
        "org": org.id,
        "key_id": new.id,
    }
    assert httpx.get(url + "/v1/me").status_code == 401


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_credentials"),
        ({"Authorization": "Bearer abc"}, "malformed_credentials"),
        ({"Authorization": "x-api-key"}, "malformed_credentials"),
        ({"Authorization": "x-api-key isk_not-a-key!"}, "malformed_credentials"),
        ({"X-API-Key": "isk_" + "a" * 36}, "invalid_key"),
    ],
)
def test_failures_answer_401_with_challenge_and_error_shape(
    serve: Any, engine: Engine, pepper: bytes, headers: dict[str, str], code: str
) -> None:
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper)))
    r = httpx.get(url + "/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "x-api-key"
    body = r.json()
    assert body["error"]["code"] == code and body["error"]["message"]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}


def test_revoked_key_is_refused_at_once_in_the_same_process(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper)))
    assert httpx.get(url + "/v1/me", headers=auth(new.key)).status_code == 200
    with session.begin():
        keys.revoke_key(session, org.admin, new.id, reason="leaked")
    r = httpx.get(url + "/v1/me", headers=auth(new.key))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"


def test_key_is_refused_at_the_exact_second_it_expires(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    expires = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    _org, new = org_with_key(session, pepper, expires=expires)
    clock = Clock(expires.timestamp() - 0.001)
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper, clock=clock)))
    assert httpx.get(url + "/v1/me", headers=auth(new.key)).status_code == 200  # now cached
    clock.t = expires.timestamp()
    r = httpx.get(url + "/v1/me", headers=auth(new.key))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"


def test_exempt_paths_pass_without_a_key(serve: Any, engine: Engine, pepper: bytes) -> None:
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper)))
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(url + "/healthz/extra").status_code == 401


def test_https_required_refuses_plain_http_and_untrusted_forwarded_proto(
    serve: Any, session: Session, engine: Engine, pepper: bytes
) -> None:
    _org, new = org_with_key(session, pepper)
    verifier = Verifier(engine, pepper)
    strict = serve(ApiKeyMiddleware(fastapi_app(), verifier, https=HttpsPolicy(required=True)))
    r = httpx.get(strict + "/v1/me", headers={**auth(new.key), "X-Forwarded-Proto": "https"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "https_required"
    assert new.key not in r.text
    proxied = serve(
        ApiKeyMiddleware(fastapi_app(), verifier, https=HttpsPolicy.parse(True, "127.0.0.0/8"))
    )
    r = httpx.get(proxied + "/v1/me", headers={**auth(new.key), "X-Forwarded-Proto": "https"})
    assert r.status_code == 200
    r = httpx.get(proxied + "/v1/me", headers={**auth(new.key), "X-Forwarded-Proto": "http"})
    assert r.status_code == 403


def test_an_app_that_reports_its_status_is_recorded_without_a_send_wrapper(
    serve: Any, session: Session, engine: Engine, pepper: bytes, data_dir: Any
) -> None:
    _org, new = org_with_key(session, pepper)
    sends: list[Any] = []

    class Reporting:
        reports_status = True

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            sends.append(send)
            if scope["path"] == "/boom":
                raise RuntimeError("failed before answering")
            scope[STATUS_KEY] = 201
            body = b"{}"
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": body})

    recorder = UsageRecorder(data_dir, engine)
    url = serve(ApiKeyMiddleware(Reporting(), Verifier(engine, pepper), recorder=recorder))
    assert httpx.get(url + "/made", headers=auth(new.key)).status_code == 201
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/boom", headers=auth(new.key)).raise_for_status()
    wait_recorded(recorder, 2)
    assert recorder.flush() == 2
    rows = duckdb.sql(
        f"SELECT path, status, code FROM read_parquet('{glob_pattern(data_dir)}') ORDER BY ts"
    ).fetchall()
    assert rows == [("/made", 201, "valid"), ("/boom", 500, "valid")]
    # the app was handed the server's own `send`, not a wrapper made per request
    assert all(getattr(s, "__self__", None) is not None for s in sends)


def test_usage_is_recorded_for_accepted_and_refused_requests(
    serve: Any, session: Session, engine: Engine, pepper: bytes, data_dir: Any
) -> None:
    org, new = org_with_key(session, pepper)
    recorder = UsageRecorder(data_dir, engine)
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper), recorder=recorder))
    with httpx.Client() as c:
        c.get(url + "/v1/me", headers=auth(new.key))
        c.get(url + "/nope", headers=auth(new.key))
        c.get(url + "/v1/me", headers={"X-API-Key": "isk_" + "b" * 36})
    with pytest.raises(httpx.HTTPError):  # a failing handler still leaves a record
        httpx.get(url + "/boom", headers=auth(new.key)).raise_for_status()
    wait_recorded(recorder, 4)  # a record is made just after its response is sent
    assert recorder.flush() == 4
    rows = duckdb.sql(
        f"SELECT path, status, code, key_id, org_id FROM read_parquet('{glob_pattern(data_dir)}',"
        " hive_partitioning=true) ORDER BY ts"
    ).fetchall()
    assert rows == [
        ("/v1/me", 200, "valid", new.id, org.id),
        ("/nope", 404, "valid", new.id, org.id),
        ("/v1/me", 401, "invalid_key", None, None),
        ("/boom", 500, "valid", new.id, org.id),
    ]
    view = keys.list_keys(session, org.id, org.admin)[0]
    assert view.usage_count == 3 and view.last_used_at is not None


def test_the_key_never_reaches_logs_or_errors(
    serve: Any, session: Session, engine: Engine, pepper: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    org, new = org_with_key(session, pepper)
    with session.begin():
        keys.revoke_key(session, org.admin, new.id)
    caplog.set_level(logging.DEBUG)
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper)))
    r = httpx.get(url + "/v1/me", headers=auth(new.key))
    near_miss = new.key[:-1] + ("A" if new.key[-1] != "A" else "B")
    r2 = httpx.get(url + "/v1/me", headers=auth(near_miss))
    assert r.json()["error"]["code"] == "key_revoked"
    assert r2.json()["error"]["code"] == "invalid_key"
    for text in (r.text, r2.text, str(r.headers), caplog.text):
        assert new.key not in text and near_miss not in text


def test_an_unreachable_database_answers_503_never_500(serve: Any) -> None:
    port = free_port()  # nothing listens there
    broken = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/none", pool=False)
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(broken, b"p" * 32)))
    key = keyformat.generate()
    r = httpx.get(url + "/v1/me", headers=auth(key))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "auth_unavailable" and key not in r.text


def _upgrade(url: str, headers: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + headers.encode()
            + b"\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_websockets_are_authenticated_too(
    serve: Any, session: Session, engine: Engine, pepper: bytes, data_dir: Any
) -> None:
    _org, new = org_with_key(session, pepper)
    recorder = UsageRecorder(data_dir)
    url = serve(ApiKeyMiddleware(fastapi_app(), Verifier(engine, pepper), recorder=recorder))
    assert _upgrade(url, "").startswith(b"HTTP/1.1 403")
    assert _upgrade(url, f"Authorization: x-api-key {new.key}\r\n").startswith(b"HTTP/1.1 101")
    wait_recorded(recorder, 2)
    recorder.flush()
    rows = duckdb.sql(
        f"SELECT method, status, code FROM read_parquet('{glob_pattern(data_dir)}') ORDER BY ts"
    ).fetchall()
    assert rows == [("WEBSOCKET", 401, "missing_credentials"), ("WEBSOCKET", 101, "valid")]
