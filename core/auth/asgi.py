"""Pure ASGI middleware: authenticate every request with the key contract.

    app = ApiKeyMiddleware(app, verifier, exempt_paths={"/healthz"}, recorder=recorder)

A valid request reaches the app with the principal in ``scope["integration.principal"]``
and ``scope["state"]["principal"]`` (Starlette/FastAPI: ``request.state.principal``).
Every failure is answered here: 401, ``WWW-Authenticate: x-api-key`` and
``{"error": {"code", "message"}}``. The key itself is never logged or echoed.

With a recorder, each request's response status is recorded. The middleware learns it by
wrapping ``send``; an app that declares ``reports_status = True`` (the service's own
routes do) puts it in ``scope["integration.status"]`` instead, which saves a Python call
per message and a closure per request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from core.auth.contract import Verdict, extract_key
from core.auth.https import (
    HTTPS_REQUIRED_CODE,
    HTTPS_REQUIRED_MESSAGE,
    HTTPS_REQUIRED_STATUS,
    HttpsPolicy,
)
from core.auth.principal import (
    DEFAULT_EXEMPT_PATHS,
    PRINCIPAL_KEY,
    STATUS_KEY,
    UNAVAILABLE_CODE,
    UNAVAILABLE_MESSAGE,
    Principal,
    error_json,
    principal_of,
    verdict_body,
)
from core.auth.verifier import Verifier
from core.usage.recorder import MAX_METHOD, MAX_PATH, UsageRecorder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("core.auth")

# The canonical header, exactly: for it the contract's parsing yields group 1 as the key, so
# the hot path skips the general parser (tests check both agree on arbitrary input).
_CANONICAL = re.compile(rb"x-api-key ([0-9A-Za-z_]{1,256})")
_PRINCIPALS_MAX = 10_000
_JSON = (b"content-type", b"application/json")
_CHALLENGE = (b"www-authenticate", b"x-api-key")


async def send_json(
    send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """Send a whole JSON response."""
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def verify_key_async(verifier: Verifier, key: str) -> Verdict:
    """Return the verdict for a bare key; a database lookup runs in a worker thread."""
    verdict = verifier.verify_cached(key)
    if verdict is None:
        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(None, verifier.verify_key, key)
    return verdict


class ApiKeyMiddleware:
    """Authenticate each HTTP (and WebSocket) request before `app` sees it."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        exempt_paths: Iterable[str] = DEFAULT_EXEMPT_PATHS,
        recorder: UsageRecorder | None = None,
        https: HttpsPolicy | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)
        self.recorder = recorder
        self.https = https or HttpsPolicy()
        self._principals: dict[str, Principal] = {}
        self._app_reports_status = getattr(app, "reports_status", False) is True

    async def authenticate(self, auth: list[bytes], xkey: list[bytes]) -> Verdict:
        """Return the verdict for a request's Authorization and X-API-Key header values.

        A cached key (the hot path) is answered inline; a key that needs the database is
        looked up in a worker thread so the event loop keeps serving other requests.
        """
        match = _CANONICAL.fullmatch(auth[0]) if len(auth) == 1 and not xkey else None
        if match is not None:
            key = match[1].decode("ascii")
        else:
            found = extract_key(auth or None, xkey or None)
            if isinstance(found, Verdict):
                return found
            key = found
        return await verify_key_async(self.verifier, key)

    def principal(self, verdict: Verdict) -> Principal:
        """Return the (shared, immutable) principal of a valid verdict."""
        key_id = verdict.key_id or ""
        cached = self._principals.get(key_id)
        if cached is None or (cached.org_id, cached.key_name) != (verdict.org_id, verdict.key_name):
            if len(self._principals) >= _PRINCIPALS_MAX:
                self._principals.clear()
            cached = self._principals[key_id] = principal_of(verdict)
        return cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        auth: list[bytes] = []
        xkey: list[bytes] = []
        proto: list[bytes] = []
        for name, value in scope["headers"]:  # names are lowercase (ASGI spec)
            if name == b"authorization":
                auth.append(value)
            elif name == b"x-api-key":
                xkey.append(value)
            elif name == b"x-forwarded-proto":
                proto.append(value)
        client = scope.get("client")
        host = client[0] if client else None

        if self.https.required and not self.https.allows(
            scope.get("scheme", "http"), host, [p.decode("latin-1") for p in proto]
        ):
            await self._refuse(
                scope, send, HTTPS_REQUIRED_STATUS, HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE
            )
            self._record(scope, None, HTTPS_REQUIRED_STATUS, HTTPS_REQUIRED_CODE, host, started)
            return
        try:
            verdict = await self.authenticate(auth, xkey)
        except Exception as exc:  # the database is unreachable: fail closed, say so
            log.warning("key verification unavailable: %s", type(exc).__name__)
            await self._refuse(scope, send, 503, UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE)
            self._record(scope, None, 503, UNAVAILABLE_CODE, host, started)
            return
        if not verdict.valid:
            if kind == "http":
                await send_json(send, 401, verdict_body(verdict), (_CHALLENGE,))
            else:
                await send({"type": "websocket.close", "code": 1008})
            self._record(scope, verdict, 401, verdict.code.value, host, started)
            return

        principal = self.principal(verdict)
        scope[PRINCIPAL_KEY] = principal
        state = scope.get("state")
        if state is None:
            scope["state"] = {"principal": principal}
        else:
            state["principal"] = principal
        if self.recorder is None:
            await self.app(scope, receive, send)
            return
        status = 500 if kind == "http" else 101  # a WebSocket has no HTTP status of its own
        reports = self._app_reports_status
        if reports:
            app_send = send
        else:

            def app_send(message: Message) -> Awaitable[None]:
                # A plain function handing back `send`'s awaitable: no coroutine per send.
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                return send(message)

        try:
            await self.app(scope, receive, app_send)
        finally:
            if reports:
                status = scope.get(STATUS_KEY, status)
            method = scope.get("method", "WEBSOCKET")
            path = scope["path"]
            self.recorder.add(
                time.perf_counter(),
                started,
                verdict.org_id,
                verdict.key_id,
                method if len(method) <= MAX_METHOD else method[:MAX_METHOD],
                path if len(path) <= MAX_PATH else path[:MAX_PATH],
                status,
                "valid",
                host,
            )

    async def _refuse(self, scope: Scope, send: Send, status: int, code: str, msg: str) -> None:
        if scope["type"] == "http":
            extra = (_CHALLENGE,) if status == 401 else ()
            await send_json(send, status, error_json(code, msg), extra)
        else:
            await send({"type": "websocket.close", "code": 1008})

    def _record(
        self,
        scope: Scope,
        verdict: Verdict | None,
        status: int,
        code: str,
        host: str | None,
        started: float,
    ) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        recorder.add(
            time.perf_counter(),
            started,
            verdict.org_id if verdict else None,
            verdict.key_id if verdict else None,
            scope.get("method", "WEBSOCKET")[:MAX_METHOD],
            scope["path"][:MAX_PATH],
            status,
            code,
            host,
        )
