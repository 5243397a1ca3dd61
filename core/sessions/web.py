"""The console's HTTP side: the routes that set and clear the session cookie, and the
response headers every console response carries. Starlette only (no Streamlit).

- `POST /console/session` redeems a one-time handoff (form body `handoff`) for a new
  session: `Set-Cookie: isc_session=cs_…; HttpOnly; SameSite=Lax; Path=/` (and `Secure`
  behind HTTPS), then `303 See Other` to the page the handoff names.
- `POST /console/signout` deletes the session row of the cookie it carries and clears
  the cookie.
- `GET /console/handoff.js` posts the handoff form a sign-in page renders (a script of
  the site's own, so the Content-Security-Policy needs no inline script).

Both POST routes refuse a request that is not the console page's own (`Sec-Fetch-Site`
other than same-origin, or an `Origin` of another site), and a handoff is bound to the browser's
binding cookie (`isc_browser`, set on the first page load): another site cannot sign a
victim into the attacker's session (login CSRF), and a stolen handoff is useless
elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import AuthenticationFailed
from core.orgs.mail import CONSOLE_URL_ENV
from core.sessions import service as sessions

SESSION_COOKIE = "isc_session"
BINDING_COOKIE = "isc_browser"
SECURE_ENV = "INTEGRATION_COOKIE_SECURE"
SESSION_PATH = "/console/session"
SIGNOUT_PATH = "/console/signout"
SCRIPT_PATH = "/console/handoff.js"
MAX_BODY = 4096

HANDOFF_JS = """\
(function () {
  var forms = document.querySelectorAll("form[data-console-post]");
  for (var i = 0; i < forms.length; i++) {
    var form = forms[i];
    if (form.getAttribute("data-console-sent")) continue;
    form.setAttribute("data-console-sent", "1");
    if (form.getAttribute("data-console-post") === "navigate") {
      form.submit();
    } else {
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        body: new URLSearchParams(new FormData(form)),
      });
    }
  }
})();
"""


def inline_script_hashes(index_html: Path) -> list[str]:
    """Return CSP source expressions ('sha256-…') for the inline scripts of a page."""
    try:
        text = index_html.read_text(encoding="utf-8")
    except OSError:
        return []
    bodies = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
        for b in bodies
    ]


def content_security_policy(script_hashes: Sequence[str] = ()) -> str:
    """Return the console's Content-Security-Policy.

    Scripts from the site itself (and the hashed inline bootstrap of the page) only;
    images only from the site, data: and blob: URLs, so a Markdown image can never
    reach another host; no framing by any site; forms post only to the site.
    """
    scripts = " ".join(["'self'", *script_hashes])
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "media-src 'self' blob:",
            "worker-src 'self' blob:",
            "frame-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _secure(scope: Scope, env: Mapping[str, str]) -> bool:
    flag = (env.get(SECURE_ENV) or "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    return scope.get("scheme") in ("https", "wss")


def cookie_header(
    name: str, value: str, *, secure: bool, path: str = "/", max_age: int | None = None
) -> str:
    """Return a Set-Cookie value: HttpOnly, SameSite=Lax, Secure when asked."""
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Lax"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class SecurityHeaders:
    """ASGI middleware: the console's security headers on every HTTP response, and a
    binding cookie for each browser that has none, set with the page itself."""

    def __init__(
        self,
        app: ASGIApp,
        csp: str = "",
        base_path: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.csp = csp or content_security_policy()
        self.base_path = base_path
        self.env = os.environ if env is None else env

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_binding = BINDING_COOKIE in Request(scope).cookies
        secure = _secure(scope, self.env)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = self.csp
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Frame-Options"] = "DENY"
                html = headers.get("content-type", "").startswith("text/html")
                if html:
                    headers["Cache-Control"] = "no-store"
                if html and not has_binding:
                    headers.append(
                        "Set-Cookie",
                        cookie_header(
                            BINDING_COOKIE,
                            secrets.token_urlsafe(24),
                            secure=secure,
                            path=self.base_path or "/",
                        ),
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ConsoleRoutes:
    """The session routes, on the engine `engine` returns (created on first use)."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        *,
        base_path: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.base_path = base_path.rstrip("/")
        self.env = os.environ if env is None else env

    def routes(self) -> list[Route]:
        b = self.base_path
        return [
            Route(b + SESSION_PATH, self.session, methods=["POST"]),
            Route(b + SIGNOUT_PATH, self.signout, methods=["POST"]),
            Route(b + SCRIPT_PATH, self.script, methods=["GET"]),
        ]

    def _same_origin(self, request: Request) -> bool:
        """True for a request the console's own page made.

        `Sec-Fetch-Site`, which every current browser sends and no page can forge, must
        say same-origin when present. `Origin` must name the console (its Host, or
        INTEGRATION_CONSOLE_URL) — except that under `Referrer-Policy: no-referrer` a
        browser sends `Origin: null` for its own form posts, which passes only with
        `Sec-Fetch-Site: same-origin`.
        """
        origin = request.headers.get("origin", "")
        site = request.headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return False
        if origin in ("", "null"):
            return site == "same-origin"
        allowed = {request.headers.get("host", "")}
        configured = (self.env.get(CONSOLE_URL_ENV) or "").strip()
        if configured:
            allowed.add(urlsplit(configured).netloc)
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc in allowed

    async def _form(self, request: Request) -> dict[str, str] | None:
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return None
        if length > MAX_BODY:
            return None
        body = await request.body()
        if len(body) > MAX_BODY:
            return None
        try:
            form = await request.form(max_files=0, max_fields=8)
        except Exception:  # a malformed body is refused like a missing field
            return None
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _refuse(self, message: str, status: int = 403) -> Response:
        return PlainTextResponse(message, status_code=status, headers={"Cache-Control": "no-store"})

    async def session(self, request: Request) -> Response:
        if not self._same_origin(request):
            return self._refuse("Refused: this request did not come from the console's own page.")
        form = await self._form(request)
        if form is None:
            return self._refuse("Refused: malformed request.", 400)
        binding = request.cookies.get(BINDING_COOKIE)
        try:
            token, _who, next_path = await run_in_threadpool(
                self._redeem, form.get("handoff"), binding
            )
        except AuthenticationFailed as exc:
            response = self._refuse(exc.message + " Return to the console to sign in.", 400)
            response.headers["Refresh"] = f"3; url={self.base_path}/"
            return response
        response = RedirectResponse(self.base_path + next_path, status_code=303)
        response.headers["Cache-Control"] = "no-store"
        max_age = int(sessions.SessionPolicy.from_env(self.env).lifetime.total_seconds())
        response.headers.append(
            "Set-Cookie",
            cookie_header(
                SESSION_COOKIE,
                token,
                secure=_secure(request.scope, self.env),
                path=self.base_path or "/",
                max_age=max_age,
            ),
        )
        return response

    def _redeem(self, handoff: Any, binding: Any) -> tuple[str, sessions.SignedIn, str]:
        with Session(self.engine()) as s, s.begin():
            return sessions.redeem_handoff(
                s, handoff, binding, policy=sessions.SessionPolicy.from_env(self.env)
            )

    def _sign_out(self, token: Any) -> None:
        with Session(self.engine()) as s, s.begin():
            sessions.sign_out(s, token)

    async def signout(self, request: Request) -> Response:
        if not self._same_origin(request):
            return self._refuse("Refused: this request did not come from the console's own page.")
        await run_in_threadpool(self._sign_out, request.cookies.get(SESSION_COOKIE))
        response = Response(status_code=204, headers={"Cache-Control": "no-store"})
        response.headers.append(
            "Set-Cookie",
            cookie_header(
                SESSION_COOKIE,
                "",
                secure=_secure(request.scope, self.env),
                path=self.base_path or "/",
                max_age=0,
            ),
        )
        return response

    async def script(self, request: Request) -> Response:
        return Response(
            HANDOFF_JS,
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )
