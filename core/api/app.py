"""The HTTP service as a raw ASGI app (no framework on the hot path).

    GET  /v1/whoami        protected by ApiKeyMiddleware; answers the principal
    POST /v1/keys/verify   protected by the service token; answers the verdict (HTTP 200)
    POST /v1/events        protected by the service token; publishes a platform event (202)
    GET  /healthz          unauthenticated; usage counters (overflow) and feed state
    GET  /openapi.json     unauthenticated; the OpenAPI document

Every error answers ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from sqlalchemy import Engine

from core import db
from core.api.config import ServiceConfig
from core.api.events import EVENTS_PATH, EventsRoute
from core.api.openapi import DOCUMENT
from core.auth.asgi import (
    ApiKeyMiddleware,
    Receive,
    Scope,
    Send,
    send_json,
    verify_key_async,
)
from core.auth.contract import Verdict, extract_key
from core.auth.feed import FeedFollower
from core.auth.https import HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE, HTTPS_REQUIRED_STATUS
from core.auth.principal import PRINCIPAL_KEY, STATUS_KEY, error_json
from core.auth.verifier import Verifier
from core.config import Settings
from core.usage.recorder import UsageRecorder

log = logging.getLogger("core.api")

MAX_BODY = 8192
VERIFY_PATH = "/v1/keys/verify"
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", VERIFY_PATH, EVENTS_PATH})
_ROUTES = {
    "/v1/whoami": "GET",
    VERIFY_PATH: "POST",
    EVENTS_PATH: "POST",
    "/healthz": "GET",
    "/openapi.json": "GET",
}
_OPENAPI = json.dumps(DOCUMENT).encode()
_BEARER = (b"www-authenticate", b"Bearer")


class ServiceApp:
    """The service's routes; wrap it in ApiKeyMiddleware (as `build_app` does) to serve it.

    Every answer to a request the middleware lets through carries its status in
    ``scope["integration.status"]`` (`reports_status`), so the middleware records usage
    without wrapping ``send``.
    """

    reports_status = True

    def __init__(
        self,
        verifier: Verifier,
        config: ServiceConfig,
        *,
        recorder: UsageRecorder | None = None,
        feed: FeedFollower | None = None,
        engines: tuple[Engine, ...] = (),
        events: EventsRoute | None = None,
    ) -> None:
        self.verifier = verifier
        self.events = events
        self.config = config
        self.recorder = recorder
        self.feed = feed
        self._engines = engines
        self._token = config.service_token.encode() if config.service_token else None

    # -- lifecycle -------------------------------------------------------------------------

    def startup(self) -> None:
        """Start following the key-change feed and the usage flusher."""
        if self.feed is not None:
            self.feed.start()
        if self.recorder is not None:
            self.recorder.start()
        # Everything built so far lives as long as the process: keep the cyclic GC from
        # re-scanning it while usage records churn (measured: halves the flush cost).
        gc.freeze()

    def shutdown(self) -> None:
        """Stop the feed, flush every buffered usage record, release the database."""
        if self.feed is not None:
            self.feed.stop()
        if self.recorder is not None:
            self.recorder.close()
        for engine in self._engines:
            engine.dispose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        path = scope["path"]
        method = _ROUTES.get(path)
        if method is None:
            await _answer(scope, send, 404, error_json("not_found", "No such endpoint."))
            return
        if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
            body = error_json("method_not_allowed", f"Use {method} for this endpoint.")
            await _answer(scope, send, 405, body, ((b"allow", method.encode()),))
            return
        if path == "/v1/whoami":
            principal = scope.get(PRINCIPAL_KEY)
            if principal is None:  # only when mounted without the middleware
                body = error_json("missing_credentials", "No API key.")
                await _answer(scope, send, 401, body)
                return
            await _answer(scope, send, 200, json.dumps(principal.to_dict()).encode())
        elif path == VERIFY_PATH:
            await self._verify(scope, receive, send)
        elif path == EVENTS_PATH:
            await self._events(scope, receive, send)
        elif path == "/healthz":
            await send_json(send, 200, json.dumps(self.health()).encode())
        else:
            await send_json(send, 200, _OPENAPI)

    def health(self) -> dict[str, Any]:
        """Return the health document: status, usage counters (overflow) and feed state."""
        return {
            "status": "ok",
            "usage": self.recorder.snapshot() if self.recorder else None,
            "feed": self.feed.snapshot() if self.feed else None,
        }

    # -- POST /v1/keys/verify -----------------------------------------------------------------

    async def _verify(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        client = scope.get("client")
        host = client[0] if client else None
        https = self.config.https
        if https.required:
            proto = [v.decode("latin-1") for n, v in scope["headers"] if n == b"x-forwarded-proto"]
            if not https.allows(scope.get("scheme", "http"), host, proto):
                body = error_json(HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE)
                await send_json(send, HTTPS_REQUIRED_STATUS, body)
                return
        if self._token is None:
            body = error_json(
                "verify_disabled",
                "The verify endpoint is off: set INTEGRATION_SERVICE_TOKEN on the server.",
            )
            await send_json(send, 503, body)
            return
        tokens = [v for n, v in scope["headers"] if n.lower() == b"authorization"]
        given = tokens[0].strip() if len(tokens) == 1 else b""
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
            body = error_json(
                "invalid_service_token",
                "Send 'Authorization: Bearer SERVICE_TOKEN' with the configured service token.",
            )
            await send_json(send, 401, body, (_BEARER,))
            return
        raw = await _read_body(receive, MAX_BODY)
        if raw is None:
            body = error_json("request_too_large", f"The body must be at most {MAX_BODY} bytes.")
            await send_json(send, 413, body)
            return
        key = _key_from_body(raw)
        if key is None:
            body = error_json("invalid_request", 'Send a JSON body {"key": "THE_KEY"}.')
            await send_json(send, 400, body)
            return
        try:
            found = extract_key(None, key)
            verdict = (
                found
                if isinstance(found, Verdict)
                else await verify_key_async(self.verifier, found)
            )
        except Exception as exc:
            log.warning("key verification unavailable: %s", type(exc).__name__)
            body = error_json("auth_unavailable", "Verification is unavailable; retry shortly.")
            await send_json(send, 503, body)
            return
        await send_json(send, 200, json.dumps(verdict.to_dict()).encode())
        if self.recorder is not None:
            self.recorder.add(
                time.perf_counter(),
                started,
                verdict.org_id,
                verdict.key_id,
                "POST",
                VERIFY_PATH,
                200,
                verdict.code.value,
                host,
            )

    # -- POST /v1/events ------------------------------------------------------------------------

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.events is None:
            body = error_json("events_disabled", "Publishing events is off on this service.")
            await send_json(send, 503, body)
            return
        await self.events(scope, receive, send)


def _answer(
    scope: Scope, send: Send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> Awaitable[None]:
    """Send a JSON response, its status noted in the scope for the middleware
    (`reports_status`); a plain function handing back `send_json`'s awaitable."""
    scope[STATUS_KEY] = status
    return send_json(send, status, body, extra)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Return the request body, or None when it is longer than `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _key_from_body(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("key"), str):
        return None
    key: str = data["key"]
    return key


def build_app(
    settings: Settings | None = None, config: ServiceConfig | None = None
) -> ApiKeyMiddleware:
    """Return the service, migrated database and all: routes wrapped in ApiKeyMiddleware.

    The feed follower and usage flusher start with the ASGI lifespan and stop (flushing
    every buffered record) at shutdown. Raise ValidationError for bad settings.
    """
    settings = settings or Settings.from_env()
    config = config or ServiceConfig.from_env()
    writer = db.connect(settings)  # migrates; used for usage rollups
    reader = db.make_engine(settings.database_url, immediate=False)
    verifier = Verifier(reader, settings.pepper)
    feed = FeedFollower(verifier, interval=config.feed_interval)
    recorder = None
    if config.usage_enabled:
        recorder = UsageRecorder(
            settings.data_dir,
            writer,
            interval=config.usage_interval,
            batch_size=config.usage_batch,
        )
    service = ServiceApp(
        verifier,
        config,
        recorder=recorder,
        feed=feed,
        engines=(reader, writer),
        events=EventsRoute(writer, config),
    )
    return ApiKeyMiddleware(
        service,
        verifier,
        exempt_paths=PUBLIC_PATHS,
        recorder=recorder,
        https=config.https,
    )
