"""The console's HTTP routes and headers: only the console's own page may set or clear
the session cookie, and every response carries the security headers."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from core.orgs import users
from core.sessions import service as sessions
from core.sessions import web
from tests.factories import make_org
from tests.test_console_app import http_post

SAME_ORIGIN = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
BINDING = "a-browser-binding-value-0123"


def _app(engine: Engine, env: dict[str, str] | None = None) -> Starlette:
    async def page(request):  # type: ignore[no-untyped-def]
        return HTMLResponse("<html></html>")

    async def data(request):  # type: ignore[no-untyped-def]
        return JSONResponse({})

    routes = web.ConsoleRoutes(lambda: engine, env=env or {}).routes()
    routes += [Route("/", page), Route("/data", data)]
    return Starlette(routes=routes, middleware=[Middleware(web.SecurityHeaders, env=env or {})])


def _handoff(engine: Engine, email: str, now: datetime) -> str:
    with Session(engine) as s, s.begin():
        user = users.user_by_email(s, email)
        return sessions.issue_handoff(s, user.id, BINDING, next_path="/api-keys")


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"},
    ],
)
def test_another_site_cannot_post_a_handoff(
    engine: Engine, session: Session, now: datetime, headers: dict[str, str]
) -> None:
    make_org(session, now=now)
    handoff = _handoff(engine, "member@acme.test", now)
    cookie = {"Cookie": f"{web.BINDING_COOKIE}={BINDING}"}
    response = http_post(_app(engine), web.SESSION_PATH, {"handoff": handoff}, headers | cookie)
    assert response.status_code == 403 and "set-cookie" not in response.headers
    ok = http_post(_app(engine), web.SESSION_PATH, {"handoff": handoff}, SAME_ORIGIN | cookie)
    assert ok.status_code == 303 and ok.headers["location"] == "/api-keys"


def test_an_origin_of_the_console_itself_is_accepted(
    engine: Engine, session: Session, now: datetime
) -> None:
    make_org(session, now=now)
    handoff = _handoff(engine, "member@acme.test", now)
    headers = {"Origin": "http://testserver", "Cookie": f"{web.BINDING_COOKIE}={BINDING}"}
    response = http_post(_app(engine), web.SESSION_PATH, {"handoff": handoff}, headers)
    assert response.status_code == 303


def test_an_oversized_or_malformed_post_is_refused(engine: Engine) -> None:
    response = http_post(_app(engine), web.SESSION_PATH, {"handoff": "x" * 10_000}, SAME_ORIGIN)
    assert response.status_code == 400
    response = http_post(_app(engine), web.SESSION_PATH, {"handoff": "hof_nope"}, SAME_ORIGIN)
    assert response.status_code == 400 and "set-cookie" not in response.headers


def test_the_cookie_is_secure_behind_https_when_configured(
    engine: Engine, session: Session, now: datetime
) -> None:
    make_org(session, now=now)
    handoff = _handoff(engine, "member@acme.test", now)
    app = _app(engine, {web.SECURE_ENV: "1"})
    headers = SAME_ORIGIN | {"Cookie": f"{web.BINDING_COOKIE}={BINDING}"}
    cookie = http_post(app, web.SESSION_PATH, {"handoff": handoff}, headers).headers["set-cookie"]
    assert cookie.startswith(f"{web.SESSION_COOKIE}=cs_")
    assert {"HttpOnly", "SameSite=Lax", "Secure", "Path=/"} <= set(cookie.split("; "))


def test_sign_out_deletes_the_session_and_clears_the_cookie(
    engine: Engine, session: Session, now: datetime
) -> None:
    make_org(session, now=now)
    with Session(engine) as s, s.begin():
        token, _ = sessions.open_session(s, users.user_by_email(s, "member@acme.test").id)
    cookie = {"Cookie": f"{web.SESSION_COOKIE}={token}"}
    refused = http_post(
        _app(engine), web.SIGNOUT_PATH, {}, {"Origin": "https://evil.example"} | cookie
    )
    assert refused.status_code == 403
    with Session(engine) as s:
        assert sessions.resume(s, token) is not None  # a forced sign-out from elsewhere fails
    response = http_post(_app(engine), web.SIGNOUT_PATH, {}, SAME_ORIGIN | cookie)
    assert response.status_code == 204 and "Max-Age=0" in response.headers["set-cookie"]
    with Session(engine) as s:
        assert sessions.resume(s, token) is None


def test_every_response_carries_the_security_headers_and_pages_a_binding(engine: Engine) -> None:
    import asyncio

    import httpx

    async def get(path: str, cookie: str = "") -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.get(path, headers={"Cookie": cookie} if cookie else {})

    page = asyncio.run(get("/"))
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "img-src 'self' data: blob:" in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["set-cookie"].startswith(f"{web.BINDING_COOKIE}=")
    assert "HttpOnly" in page.headers["set-cookie"]
    again = asyncio.run(get("/", f"{web.BINDING_COOKIE}=already"))
    assert "set-cookie" not in again.headers
    data = asyncio.run(get("/data"))
    assert data.headers["x-content-type-options"] == "nosniff" and "set-cookie" not in data.headers
