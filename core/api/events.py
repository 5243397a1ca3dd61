"""``POST /v1/events``: the platform publishes its own events over HTTP, from any language.

    POST /v1/events
    Authorization: Bearer SERVICE_TOKEN
    {"org": "org_… or its name", "type": "invoice.paid", "data": {…},
     "idempotency_key": "optional, ≤ 255 characters"}

    202 {"event_id": "evt_…", "message_ids": ["msg_…", …], "duplicate": false}

The event is checked against the catalog (a registered type, data matching its JSON
Schema) and written to the outbox in one transaction; the workers deliver it, signed, to
every subscribed endpoint. Every refusal answers ``{"error": {"code", "message"}}`` (a
422 for the data adds ``"path"``, the JSON Pointer of what failed).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.api.config import ServiceConfig
from core.auth.asgi import Receive, Scope, Send, send_json
from core.auth.https import HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE, HTTPS_REQUIRED_STATUS
from core.auth.principal import error_json
from core.errors import Conflict, CoreError, NotFound, StorageError, ValidationError
from core.outbox import MAX_PAYLOAD_BYTES
from core.webhooks.catalog import publish_event

log = logging.getLogger("core.api.events")

EVENTS_PATH = "/v1/events"
# The data may take the whole 64 KiB payload; the rest of the request fits in 4 KiB more.
MAX_EVENT_BODY = MAX_PAYLOAD_BYTES + 4096
FIELDS = frozenset({"org", "type", "data", "idempotency_key"})
_BEARER = (b"www-authenticate", b"Bearer")
_SHAPE = (
    'Send a JSON object {"org": ORG_ID_OR_NAME, "type": EVENT_TYPE, "data": {...}, '
    '"idempotency_key": optional}.'
)


class BadRequest(Exception):
    """The body is not the request's JSON shape; the message says what is wrong."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_request(raw: bytes) -> dict[str, Any]:
    """Return the request's fields; raise BadRequest saying what is wrong with the body."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("The body is not JSON. " + _SHAPE) from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object. " + _SHAPE)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field(s) {', '.join(map(repr, unknown))[:200]}. " + _SHAPE)
    for name in ("org", "type"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise BadRequest(f'"{name}" must be a non-empty string. ' + _SHAPE)
    if "data" not in body:
        raise BadRequest('"data" is missing. ' + _SHAPE)
    key = body.get("idempotency_key")
    if key is not None and not isinstance(key, str):
        raise BadRequest('"idempotency_key" must be a string. ' + _SHAPE)
    return body


def _status(exc: CoreError) -> int:
    """unknown_organization 404; idempotency_conflict 409; unknown_event_type,
    invalid_event_data and invalid_input 422; storage_error 503."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, ValidationError):
        return 422
    if isinstance(exc, StorageError):
        return 503
    return 400


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Return the request body, or None as soon as it is longer than `limit`."""
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


class EventsRoute:
    """The ASGI handler of ``POST /v1/events`` (mounted by `ServiceApp`)."""

    def __init__(self, engine: Engine, config: ServiceConfig) -> None:
        self.engine = engine
        self.config = config
        self._token = config.service_token.encode() if config.service_token else None

    def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """Publish in one transaction (runs in a worker thread); return the 202 body."""
        with Session(self.engine) as s, s.begin():
            published = publish_event(
                s,
                body["org"],
                body["type"],
                body["data"],
                idempotency_key=body.get("idempotency_key"),
            )
        return published.to_dict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        https = self.config.https
        if https.required:
            client = scope.get("client")
            proto = [v.decode("latin-1") for n, v in scope["headers"] if n == b"x-forwarded-proto"]
            if not https.allows(scope.get("scheme", "http"), client[0] if client else None, proto):
                body = error_json(HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE)
                await send_json(send, HTTPS_REQUIRED_STATUS, body)
                return
        if self._token is None:
            body = error_json(
                "events_disabled",
                "Publishing events is off: set INTEGRATION_SERVICE_TOKEN on the server.",
            )
            await send_json(send, 503, body)
            return
        tokens = [v for n, v in scope["headers"] if n == b"authorization"]
        given = tokens[0].strip() if len(tokens) == 1 else b""
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
            body = error_json(
                "invalid_service_token",
                "Send 'Authorization: Bearer SERVICE_TOKEN' with the configured service token.",
            )
            await send_json(send, 401, body, (_BEARER,))
            return
        raw = await _read_body(receive, MAX_EVENT_BODY)
        if raw is None:
            body = error_json(
                "request_too_large", f"The body must be at most {MAX_EVENT_BODY} bytes."
            )
            await send_json(send, 413, body)
            return
        try:
            request = parse_request(raw)
        except BadRequest as exc:
            await send_json(send, 400, error_json("invalid_request", str(exc)))
            return
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(None, self.publish, request)
        except CoreError as exc:
            await send_json(send, _status(exc), json.dumps({"error": exc.to_dict()}).encode())
            return
        except (SQLAlchemyError, OSError) as exc:
            log.warning("event not published: %s", type(exc).__name__)
            body = error_json("events_unavailable", "The event store is unavailable; retry.")
            await send_json(send, 503, body, ((b"retry-after", b"1"),))
            return
        await send_json(send, 202, json.dumps(answer).encode())
