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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.api.config import ServiceConfig
from core.auth.asgi import Receive, Scope, Send, send_json
from core.auth.https import HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE, HTTPS_REQUIRED_STATUS
from core.auth.principal import error_json
from core.errors import Conflict, CoreError, NotFound, StorageError, ValidationError
from core.outbox import MAX_PAYLOAD_BYTES
from core.webhooks.catalog import Publisher

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


class Unavailable(Exception):
    """The event store cannot take the request now (queue full, database failing)."""


class EventsRoute:
    """The ASGI handler of ``POST /v1/events`` (mounted by `ServiceApp`).

    Accepted requests are published in batches: while one transaction commits, the next
    requests queue, and `writers` worker threads each take everything queued (up to
    `max_batch`) into one transaction — one commit for many events instead of one each.
    An event refused by `core` (unknown type, bad data, …) writes nothing, so the others
    in its batch go on; a database failure fails the whole batch (503, retry: an
    idempotency key makes the retry safe). At most `max_queued` requests wait; past that
    the answer is 503 with Retry-After.
    """

    def __init__(
        self,
        engine: Engine,
        config: ServiceConfig,
        *,
        writers: int = 4,
        max_batch: int = 256,
        max_queued: int = 10_000,
    ) -> None:
        self.engine = engine
        self.config = config
        self.writers = writers
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._token = config.service_token.encode() if config.service_token else None
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[Any]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: dict[int, Connection] = {}

    def publish_batch(
        self, requests: list[dict[str, Any]], connection: Connection | None = None
    ) -> list[dict[str, Any] | CoreError]:
        """Publish the requests in one transaction (on `connection`, else one from the
        pool); return, for each, the 202 body or the CoreError that refused it. Raise on a
        database failure."""
        bind: Engine | Connection = connection or self.engine
        if connection is not None and connection.dialect.name == "postgresql":
            # Without idempotency keys the batch's one write is a single COPY, atomic on
            # its own: no BEGIN and COMMIT round trips. Claiming keys and writing their
            # messages must commit together, so a batch with keys is one transaction.
            keyed = any(r.get("idempotency_key") is not None for r in requests)
            bind = connection.execution_options(
                isolation_level="READ COMMITTED" if keyed else "AUTOCOMMIT"
            )
        with Session(bind) as s, s.begin():
            publisher = Publisher(s)
            outcomes = publisher.publish_many(requests)
            publisher.flush()
        return [o if isinstance(o, CoreError) else o.to_dict() for o in outcomes]

    def _publish_on(self, writer: int, requests: list[dict[str, Any]]) -> list[Any]:
        """Publish a batch on the writer's own connection (kept between batches: no pool
        checkout or liveness ping per batch). A connection found dead is replaced and the
        batch, which wrote nothing, tried once more."""
        for attempt in (1, 2):
            connection = self._connections.get(writer)
            if connection is None or connection.closed or connection.invalidated:
                connection = self._connections[writer] = self.engine.connect()
            try:
                return self.publish_batch(requests, connection)
            except DBAPIError as exc:
                connection.close()
                del self._connections[writer]
                if attempt == 2 or not exc.connection_invalidated:
                    raise
            except Exception:
                connection.close()
                del self._connections[writer]
                raise
        raise AssertionError("unreachable")

    async def _writer(
        self, writer: int, queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[Any]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        # One thread per writer, so its connection is only ever used from that thread.
        thread = ThreadPoolExecutor(1, thread_name_prefix=f"events-writer-{writer}")
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < self.max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
                outcomes: list[Any]
                try:
                    outcomes = await loop.run_in_executor(
                        thread, self._publish_on, writer, [request for request, _ in batch]
                    )
                except Exception as exc:  # the transaction failed: every request in it did
                    log.warning("events not published: %s", type(exc).__name__)
                    outcomes = [Unavailable()] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:  # the loop is closing: let the thread close its connection and end
            thread.submit(self._close, writer)
            thread.shutdown(wait=False)

    def _close(self, writer: int) -> None:
        connection = self._connections.pop(writer, None)
        if connection is not None:
            connection.close()

    async def publish(self, request: dict[str, Any]) -> dict[str, Any] | CoreError:
        """Queue the request for the next batch; return its outcome. Raise Unavailable."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:  # first request (on this loop)
            self._loop = loop
            self._queue = asyncio.Queue()
            self._tasks = [
                asyncio.create_task(self._writer(i, self._queue)) for i in range(self.writers)
            ]
        if self._queue.qsize() >= self.max_queued:
            raise Unavailable()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put_nowait((request, future))
        outcome = await future
        if isinstance(outcome, Unavailable):
            raise outcome
        return outcome

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
        try:
            outcome = await self.publish(request)
        except Unavailable:
            body = error_json("events_unavailable", "The event store is unavailable; retry.")
            await send_json(send, 503, body, ((b"retry-after", b"1"),))
            return
        if isinstance(outcome, CoreError):
            body = json.dumps({"error": outcome.to_dict()}).encode()
            await send_json(send, _status(outcome), body)
            return
        await send_json(send, 202, json.dumps(outcome).encode())
