"""One delivery attempt: sign, POST with timeouts and no redirects, classify, record.

Any 2xx is success; everything else (3xx included) is a failure retried on the schedule
with ±20% jitter. A 429 or 503 with Retry-After sets the next delay (bounded), a 410 Gone
disables the endpoint at once. The response body is read up to a cap and kept as a
short excerpt (non-UTF-8 bytes replaced).
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from core.webhooks import bulk, egress, health, signing
from core.webhooks.config import WebhookConfig
from core.webhooks.models import MessageStatus, WebhookAttempt, WebhookEndpoint, WebhookMessage

JITTER = 0.2
HEALTHY_FOR = 1.0  # seconds a dispatcher skips health writes for an endpoint seen healthy
_messages = cast(Table, WebhookMessage.__table__)
_attempts = cast(Table, WebhookAttempt.__table__)
_endpoints = cast(Table, WebhookEndpoint.__table__)


@dataclass(frozen=True)
class Job:
    """A claimed message with what is needed to send it (secrets decrypted, never logged)."""

    message_id: str
    endpoint_id: str
    url: str
    body: str
    schedule_step: int
    attempt_count: int
    secrets: tuple[str, ...]
    trigger: str = "scheduled"

    def __repr__(self) -> str:
        return f"Job(message_id={self.message_id!r}, endpoint_id={self.endpoint_id!r})"


@dataclass(frozen=True)
class Outcome:
    attempted_at: datetime
    success: bool
    latency_ms: float
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None
    gone: bool = False


def make_client(config: WebhookConfig, limit: int = 0) -> aiohttp.ClientSession:
    """Return an aiohttp session whose connections pass the egress guard."""
    connector = aiohttp.TCPConnector(
        resolver=egress.GuardedResolver(config.allow_private),
        limit=limit,
        ttl_dns_cache=10,
    )
    timeout = aiohttp.ClientTimeout(total=config.total_timeout, sock_connect=config.connect_timeout)
    # No cookie jar: a receiver's Set-Cookie must never ride along to later deliveries
    # (they may go to another organization's endpoint on the same host).
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=False,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@functools.lru_cache(maxsize=1024)
def _literal_refusal(url: str) -> tuple[str, str] | None:
    """Return (host, reason) if the URL's host is an IP literal that may not be reached."""
    host = urlsplit(url).hostname or ""
    literal = egress.literal_address(host)
    reason = egress.refusal_reason(literal) if literal is not None else None
    return (host, reason) if reason else None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Return the seconds a Retry-After header asks for (seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = await resp.content.read(cap + 1 - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:cap], True


def _excerpt(raw: bytes, truncated: bool, config: WebhookConfig) -> str:
    text = raw.decode("utf-8", errors="replace")
    if len(text) > config.excerpt_chars:
        text, truncated = text[: config.excerpt_chars], True
    return text + (" [truncated]" if truncated else "")


def _error_text(exc: BaseException, config: WebhookConfig) -> str:
    refused = egress.describe(exc)
    if refused:
        return refused
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timed out after {config.connect_timeout:g}s"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"timed out after {config.total_timeout:g}s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the receiver closed the connection without a response"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientOSError | ConnectionResetError):
        return f"connection reset: {getattr(exc, 'strerror', None) or exc}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response was cut off"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"malformed response: {exc.message}"[:500]
    return f"delivery failed ({type(exc).__name__})"


async def send(
    client: aiohttp.ClientSession, job: Job, config: WebhookConfig, now: datetime
) -> Outcome:
    """POST one signed message; return the outcome (this never raises for network trouble)."""
    start = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - start) * 1000, 2)

    body = job.body.encode()
    try:
        refused = None if config.allow_private else _literal_refusal(job.url)
        if refused is not None:
            raise egress.EgressRefused(*refused)
        headers = signing.headers(list(job.secrets), job.message_id, int(now.timestamp()), body)
        async with client.post(job.url, data=body, headers=headers, allow_redirects=False) as resp:
            raw, truncated = await _read_capped(resp, config.max_response_bytes)
            status = resp.status
            excerpt = _excerpt(raw, truncated, config)
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), now)
            error = None
            if 300 <= status < 400:
                location = resp.headers.get("Location", "")[:200]
                error = f"redirect ({status}) not followed" + (
                    f" to {location}" if location else ""
                )
            elif not 200 <= status < 300:
                error = f"HTTP {status}"
            return Outcome(
                now,
                200 <= status < 300,
                elapsed(),
                status,
                excerpt,
                error,
                retry_after,
                gone=status == 410,
            )
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        return Outcome(now, False, elapsed(), error=_error_text(exc, config)[:500])


def next_delay(
    step: int, outcome: Outcome, config: WebhookConfig, rng: random.Random
) -> float | None:
    """Return seconds until the next attempt after attempt number `step`, or None (give up)."""
    if step + 1 >= len(config.retry_schedule):
        return None
    if outcome.retry_after is not None:
        return min(max(outcome.retry_after, 1.0), config.retry_after_max)
    base = config.retry_schedule[step + 1]
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def record(
    session: Session,
    results: list[tuple[Job, Outcome]],
    config: WebhookConfig,
    rng: random.Random | None = None,
    *,
    retry: bool = True,
    healthy: dict[str, float] | None = None,
) -> int:
    """Write the attempts and message states of `results`; update endpoint health.

    Messages deleted meanwhile (with their endpoint) are skipped. Return how many were
    recorded. With `retry` False (a test send) a failure is final. `healthy` (endpoint id
    → monotonic deadline) lets a dispatcher skip health writes for endpoints it saw
    succeed within the last second.
    """
    if not results:
        return 0
    rng = rng or random.Random()
    # Set-based statements on the session's connection: this is the hot path.
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        existing = bulk.record(conn, _columns(results, config, rng, retry))
    else:
        existing = _record_portable(conn, results, config, rng, retry)
    results = [(j, o) for j, o in results if j.message_id in existing]
    if not results:
        return 0
    _update_health(session, results, config, healthy)
    return len(results)


def _next_state(
    job: Job, out: Outcome, config: WebhookConfig, rng: random.Random, retry: bool
) -> tuple[str, datetime | None]:
    """Return a failed attempt's message status and next attempt time."""
    delay = None if (out.gone or not retry) else next_delay(job.schedule_step, out, config, rng)
    if delay is None:
        return MessageStatus.FAILED, None
    return MessageStatus.PENDING, out.attempted_at + timedelta(seconds=delay)


def _columns(
    results: list[tuple[Job, Outcome]], config: WebhookConfig, rng: random.Random, retry: bool
) -> dict[str, list[Any]]:
    """Return `results` column-wise, with each message's new state, for `bulk.record`."""
    status: list[str] = []
    next_at: list[datetime | None] = []
    step: list[int] = []
    for job, out in results:
        if out.success:
            status.append(MessageStatus.DELIVERED)
            next_at.append(None)
            step.append(job.schedule_step)
        else:
            state, when = _next_state(job, out, config, rng, retry)
            status.append(state)
            next_at.append(when)
            step.append(job.schedule_step + 1)
    jobs = [job for job, _ in results]
    outs = [out for _, out in results]
    return {
        "ids": [j.message_id for j in jobs],
        "endpoint_ids": [j.endpoint_id for j in jobs],
        "trigger": [j.trigger for j in jobs],
        "success": [o.success for o in outs],
        "attempted_at": [o.attempted_at for o in outs],
        "status_code": [o.status_code for o in outs],
        "latency_ms": [o.latency_ms for o in outs],
        "excerpt": [o.excerpt for o in outs],
        "error": [o.error for o in outs],
        "status": status,
        "next_at": next_at,
        "step": step,
    }


def _record_portable(
    conn: Connection,
    results: list[tuple[Job, Outcome]],
    config: WebhookConfig,
    rng: random.Random,
    retry: bool,
) -> set[str]:
    """`bulk.record` in portable statements (SQLite); return the message ids logged."""
    m = _messages.c
    delivered = [(j, o) for j, o in results if o.success]
    existing: set[str] = set()
    if delivered:
        # The common case in one statement: every success gets the same new state.
        existing.update(
            conn.execute(
                update(_messages)
                .where(m.id.in_([j.message_id for j, _ in delivered]))
                .values(
                    status=MessageStatus.DELIVERED,
                    next_attempt_at=None,
                    attempt_count=m.attempt_count + 1,
                    last_attempt_at=max(o.attempted_at for _, o in delivered),
                    last_error=None,
                )
                .returning(m.id)
            ).scalars()
        )
    failed = [(j, o) for j, o in results if not o.success]
    if failed:
        existing.update(
            conn.execute(select(m.id).where(m.id.in_([j.message_id for j, _ in failed]))).scalars()
        )
        updates: list[dict[str, Any]] = []
        for job, out in failed:
            if job.message_id not in existing:
                continue
            status, next_at = _next_state(job, out, config, rng, retry)
            updates.append(
                {
                    "b_id": job.message_id,
                    "status": status,
                    "next_attempt_at": next_at,
                    "schedule_step": job.schedule_step + 1,
                    "attempt_count": job.attempt_count + 1,
                    "last_attempt_at": out.attempted_at,
                    "last_error": out.error,
                }
            )
        if updates:
            updates.sort(key=lambda u: str(u["b_id"]))
            # Only a message still pending takes a failure: if its lease ran out and another
            # worker delivered it meanwhile, that success stands.
            conn.execute(
                update(_messages)
                .where(m.id == bindparam("b_id"), m.status == MessageStatus.PENDING)
                .values({k: bindparam(k) for k in updates[0] if k != "b_id"}),
                updates,
            )
    logged = [(j, o) for j, o in results if j.message_id in existing]
    if logged:
        conn.execute(
            insert(_attempts),
            [
                {
                    "message_id": job.message_id,
                    "endpoint_id": job.endpoint_id,
                    "attempted_at": out.attempted_at,
                    "success": out.success,
                    "status_code": out.status_code,
                    "latency_ms": out.latency_ms,
                    "response_excerpt": out.excerpt,
                    "error": out.error,
                    "trigger": job.trigger,
                }
                for job, out in logged
            ],
        )
    return existing


def _update_health(
    session: Session,
    results: list[tuple[Job, Outcome]],
    config: WebhookConfig,
    healthy: dict[str, float] | None = None,
) -> None:
    conn = session.connection()
    clock = time.monotonic()
    latest: dict[str, Outcome] = {}
    gone: set[str] = set()
    for job, out in results:
        if out.gone:
            gone.add(job.endpoint_id)
        seen = latest.get(job.endpoint_id)
        if seen is None or out.attempted_at >= seen.attempted_at:
            latest[job.endpoint_id] = out
    for endpoint_id in sorted(latest):
        out = latest[endpoint_id]
        if healthy is not None:
            if not out.success or endpoint_id in gone:
                healthy.pop(endpoint_id, None)
            elif healthy.get(endpoint_id, 0.0) > clock:
                continue  # written healthy less than a second ago
        failing_since = conn.execute(
            select(_endpoints.c.failing_since).where(_endpoints.c.id == endpoint_id)
        ).scalar()
        if out.success and endpoint_id not in gone and failing_since is None:
            # Fast path, no row lock: healthy endpoints are touched at most once a second.
            e = _endpoints.c
            conn.execute(
                update(_endpoints)
                .where(
                    e.id == endpoint_id,
                    e.failing_since.is_(None),
                    e.last_success_at.is_(None)
                    | (e.last_success_at < out.attempted_at - timedelta(seconds=1)),
                )
                .values(last_success_at=out.attempted_at)
            )
            if healthy is not None:
                healthy[endpoint_id] = clock + HEALTHY_FOR
            continue
        endpoint = session.execute(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar()
        if endpoint is None:
            continue
        if endpoint_id in gone:
            health.disable(session, endpoint, "the receiver answered 410 Gone", out.attempted_at)
            continue
        health.apply_outcome(
            session,
            endpoint,
            out.success,
            out.attempted_at,
            failing_after=config.failing_after,
            disable_after=config.disable_after,
        )
    session.flush()
