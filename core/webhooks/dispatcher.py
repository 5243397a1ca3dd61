"""The dispatcher: claims due messages, sends them concurrently, records every attempt.

Claiming takes due rows with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serializes
writers with BEGIN IMMEDIATE) and pushes their `next_attempt_at` one lease ahead, so any
number of workers can run side by side and a worker killed at any moment only delays its
messages by the lease: they are claimed again and redelivered with the same `webhook-id`.
Each worker bounds its in-flight requests per endpoint, so one slow receiver cannot take
every slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import aiohttp
from sqlalchemy import Connection, Engine, Table, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.errors import ValidationError
from core.webhooks import bulk, delivery, signing
from core.webhooks.config import WebhookConfig
from core.webhooks.delivery import Job, Outcome
from core.webhooks.models import MessageStatus, WebhookEndpoint, WebhookMessage

log = logging.getLogger("core.webhooks.dispatcher")
Clock = Callable[[], datetime]
_T = TypeVar("_T")
FLUSH_EVERY = 0.2  # seconds between records of results no claim has taken
RECORD_RETRIES = 5  # failed recordings in a row before their results are given up


def live_secrets(endpoint: WebhookEndpoint, key: bytes, now: datetime) -> tuple[str, ...]:
    """Return the endpoint's decrypted secrets that still sign at `now`, newest first."""
    return _live_secrets(endpoint.id, endpoint.secrets, key, now)


def _live_secrets(
    endpoint_id: str, sealed: dict[str, Any] | None, key: bytes, now: datetime
) -> tuple[str, ...]:
    out = []
    for item in (sealed or {}).get("secrets", []):
        expires = item.get("expires_at")
        if expires is not None and datetime.fromisoformat(expires) <= now:
            continue
        out.append(_opened(key, item["ciphertext"], endpoint_id))
    return tuple(out)


@functools.lru_cache(maxsize=1024)
def _opened(key: bytes, ciphertext: str, endpoint_id: str) -> str:
    # A rotation writes a new ciphertext (a fresh nonce each time), so keying the cache by
    # the ciphertext read from the row invalidates it; expiry is still checked per claim.
    return signing.decrypt(key, ciphertext, endpoint_id)


_messages = cast(Table, WebhookMessage.__table__)
_endpoints = cast(Table, WebhookEndpoint.__table__)


def claim(
    session: Session,
    config: WebhookConfig,
    now: datetime,
    limit: int,
    busy: dict[str, int] | None = None,
    per_endpoint: int | None = None,
    held_back: set[str] | None = None,
    *,
    backlog: bool = False,
) -> list[Job]:
    """Lease up to `limit` due messages (skipping rows other workers hold); return the jobs.

    `busy` maps endpoint ids to this worker's unfinished jobs: an endpoint holding
    `per_endpoint` of them (default: its concurrency bound) gets no new ones, and its id
    is added to `held_back` if due messages were left for that reason. `backlog` says the
    last claim left some (see `bulk.claim`). Messages of disabled endpoints are failed.
    Core statements (no ORM objects): this is the hot path.
    """
    busy = busy or {}
    per_endpoint = per_endpoint or config.endpoint_concurrency
    saturated = [e for e, n in busy.items() if n >= per_endpoint]
    conn = session.connection()
    lease_end = now + timedelta(seconds=config.lease_seconds)
    leased = conn.dialect.name == "postgresql"
    if leased:
        # One statement: lock, keep each endpoint's quota, lease (see core.webhooks.bulk).
        # Every row it scans is locked until the commit, so when an endpoint is known to
        # have a backlog (its rows are likely the oldest) scan only what can be taken: the
        # free slots of endpoints in hand plus one round for others. Locking hundreds of
        # rows to lease a few made four workers skip each other's locks all day.
        if backlog:
            free = sum(per_endpoint - n for n in busy.values() if n < per_endpoint)
            limit = min(limit, free + config.endpoint_concurrency)
        rows: Sequence[Any] = bulk.claim(conn, now, lease_end, limit, per_endpoint, busy, saturated)
        if held_back is not None:
            held_back.update(r.endpoint_id for r in rows if r.more)
    else:
        m = _messages.c
        query = (
            select(m.id, m.endpoint_id, m.body, m.schedule_step, m.attempt_count)
            .where(m.status == MessageStatus.PENDING)
            .where(m.next_attempt_at <= now)
            .order_by(m.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if saturated:
            query = query.where(m.endpoint_id.not_in(saturated))
        rows = conn.execute(query).all()
    if not rows:
        return []
    e = _endpoints.c
    endpoints = {
        r.id: r
        for r in conn.execute(
            select(e.id, e.url, e.enabled, e.secrets).where(e.id.in_({r.endpoint_id for r in rows}))
        )
    }
    quota = Counter(busy)
    jobs: list[Job] = []
    dead: dict[str, list[str]] = {}  # reason -> message ids failed for good
    secrets: dict[str, tuple[str, ...] | str] = {}
    for row in rows:
        endpoint = endpoints.get(row.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            dead.setdefault("endpoint disabled", []).append(row.id)
            continue
        if quota[row.endpoint_id] >= per_endpoint:
            if held_back is not None:
                held_back.add(row.endpoint_id)
            continue  # left for a later claim; the row lock ends with this transaction
        if row.endpoint_id not in secrets:
            try:
                secrets[row.endpoint_id] = _live_secrets(
                    endpoint.id, endpoint.secrets, config.secret_key, now
                )
            except ValidationError as exc:  # the configured key changed: say so, go on
                secrets[row.endpoint_id] = exc.message
        signing_keys = secrets[row.endpoint_id]
        if isinstance(signing_keys, str):
            dead.setdefault(signing_keys, []).append(row.id)
            continue
        quota[row.endpoint_id] += 1
        jobs.append(
            Job(
                row.id,
                row.endpoint_id,
                endpoint.url,
                row.body,
                row.schedule_step,
                row.attempt_count,
                signing_keys,
            )
        )
    m = _messages.c
    if jobs and not leased:
        conn.execute(
            update(_messages)
            .where(m.id.in_([j.message_id for j in jobs]))
            .values(next_attempt_at=lease_end)
        )
    for reason, ids in dead.items():
        conn.execute(
            update(_messages)
            .where(m.id.in_(ids))
            .values(status=MessageStatus.FAILED, next_attempt_at=None, last_error=reason[:500])
        )
    return jobs


class Dispatcher:
    """Delivers due messages from `engine`; `run` loops until stopped, `run_once` drains.

    Claimed jobs wait in a queue per endpoint, drained by at most `endpoint_concurrency`
    lanes (tasks) per endpoint: no task or semaphore per message. Database work runs on
    one thread, over one connection kept open between transactions.
    """

    def __init__(
        self,
        engine: Engine,
        config: WebhookConfig,
        *,
        clock: Clock = utcnow,
        max_in_flight: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.max_in_flight = max_in_flight
        self.rng = rng or random.Random()
        self.delivered = 0
        self._busy: Counter[str] = Counter()  # claimed, unfinished jobs per endpoint
        self._claimed = 0  # their sum
        # Each endpoint sends at most `endpoint_concurrency` at once. `run` claims a few
        # rounds ahead (as many as the lease covers), and claims again when one round is
        # left, so the next batch is ready before the queue runs dry and each claim (one
        # transaction, which also records the results) carries several rounds.
        self._per_endpoint = config.endpoint_concurrency
        self._queues: dict[str, deque[Job]] = {}
        self._lanes: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed: asyncio.Event | None = None
        self._held_back: set[str] = set()  # endpoints with due messages left by the last claim
        self._healthy: dict[str, float] = {}  # see delivery.record
        self._results: list[tuple[Job, Outcome]] = []
        self._record_failures = 0  # failed recordings in a row, see _keep_for_retry
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhooks-db")
        self._conn: Connection | None = None

    # -- the database (always on one thread at a time) ---------------------------------------

    def _transaction(self, work: Callable[[Session], _T]) -> _T:
        """Run `work` in one transaction on the kept connection (reconnecting after errors)."""
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            self._conn = self._connect()
        conn = self._conn
        try:
            with conn.begin(), Session(bind=conn) as session:
                return work(session)
        except Exception:
            self._close_connection()
            raise

    def _connect(self) -> Connection:
        conn = self.engine.connect()
        if conn.dialect.name == "postgresql":
            # This connection is the dispatcher's alone (detached: it never goes back to
            # the pool), so its settings stay here. Its commits (leases, results) do not
            # wait for the WAL flush: a server crash can lose the last few hundred ms of
            # them, which only makes those messages go out again — as when a worker dies.
            # The messages themselves are written by the caller's own, durable commit.
            conn.detach()
            conn.exec_driver_sql("SET synchronous_commit = off")
            conn.commit()
        return conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _claim(
        self,
        limit: int,
        busy: dict[str, int] | None = None,
        finished: list[tuple[Job, Outcome]] | None = None,
    ) -> tuple[list[Job], int]:
        """Record `finished` results and claim new jobs in one short transaction.

        Return (jobs, attempts recorded). If it fails, both are lost together: the claimed
        leases were not written and the recorded messages' leases expire, so they are sent
        again (at least once) — as when a worker is killed.
        """
        held_back: set[str] = set()

        def work(s: Session) -> tuple[list[Job], int]:
            done = self._record_in(s, finished) if finished else 0
            jobs = claim(
                s,
                self.config,
                self.clock(),
                limit,
                dict(self._busy) if busy is None else busy,
                self._per_endpoint,
                held_back,
                backlog=bool(self._held_back),
            )
            return jobs, done

        out = self._transaction(work)
        self._held_back = held_back
        return out

    def _record_in(self, session: Session, results: list[tuple[Job, Outcome]]) -> int:
        return delivery.record(session, results, self.config, self.rng, healthy=self._healthy)

    def _record(self, results: list[tuple[Job, Outcome]]) -> int:
        return self._transaction(lambda s: self._record_in(s, results))

    # -- sending -----------------------------------------------------------------------------

    def _enqueue(self, client: aiohttp.ClientSession, jobs: list[Job]) -> None:
        """Queue claimed jobs per endpoint and start lanes up to each endpoint's bound."""
        for job in jobs:
            queue = self._queues.get(job.endpoint_id)
            if queue is None:
                queue = self._queues[job.endpoint_id] = deque()
            queue.append(job)
            self._busy[job.endpoint_id] += 1
        self._claimed += len(jobs)
        for endpoint_id in {job.endpoint_id for job in jobs}:
            idle = self.config.endpoint_concurrency - self._lanes[endpoint_id]
            for _ in range(min(idle, len(self._queues[endpoint_id]))):
                self._lanes[endpoint_id] += 1
                task = asyncio.create_task(self._lane(client, endpoint_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _lane(self, client: aiohttp.ClientSession, endpoint_id: str) -> None:
        """Send one endpoint's queued jobs one after another until its queue is empty."""
        queue = self._queues[endpoint_id]
        try:
            while queue:
                job = queue.popleft()
                try:
                    outcome = await delivery.send(client, job, self.config, self.clock())
                    self._results.append((job, outcome))
                except Exception:  # a bug, not the network: the lease expires, it is resent
                    log.exception("sending webhook message %s failed", job.message_id)
                finally:
                    self._finished(endpoint_id)
        finally:
            self._lanes[endpoint_id] -= 1
            if self._lanes[endpoint_id] <= 0:
                del self._lanes[endpoint_id]
                if not queue and self._queues.get(endpoint_id) is queue:
                    del self._queues[endpoint_id]

    def _finished(self, endpoint_id: str) -> None:
        self._claimed -= 1
        left = self._busy[endpoint_id] = self._busy[endpoint_id] - 1
        if left <= self.config.endpoint_concurrency:
            if self._slot_freed is not None:
                self._slot_freed.set()  # one round is left in hand: claim the rest in one go
            if left <= 0:
                del self._busy[endpoint_id]

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _flush(self) -> int:
        if not self._results:
            return 0
        batch, self._results = self._results, []
        loop = asyncio.get_running_loop()
        try:
            done = await loop.run_in_executor(self._db, self._record, batch)
        except Exception:
            self._keep_for_retry(batch, "recording %d webhook attempts failed")
            return 0
        self._record_failures = 0
        self.delivered += done
        return done

    def _keep_for_retry(self, batch: list[tuple[Job, Outcome]], message: str) -> None:
        """Keep results whose recording failed for the next transaction (a new connection).

        After `RECORD_RETRIES` failures in a row they are dropped: their leases expire and
        the messages are sent again, so at-least-once holds either way.
        """
        self._record_failures += 1
        if self._record_failures <= RECORD_RETRIES:
            log.warning(message + "; kept for a retry", len(batch), exc_info=True)
            self._results[:0] = batch
        else:
            log.exception(message + "; their messages will be sent again", len(batch))

    async def _flusher(self, stop: asyncio.Event) -> None:
        # Results usually ride along with the next claim (at least every poll interval);
        # this records what is left when no claim comes (every slot busy, or stopping).
        while not stop.is_set() or self._results:
            await self._flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)

    async def _idle(self) -> None:
        """Wait for the next poll, or less when a saturated endpoint frees a slot.

        An endpoint is saturated when it holds its share of claimed jobs, or when the last
        claim left some of its due messages for that reason: then the next claim waits until
        only one round of its jobs is left, not for the poll interval, so a backlog flows.
        """
        assert self._slot_freed is not None
        saturated = bool(self._held_back) or any(
            n >= self._per_endpoint for n in self._busy.values()
        )
        if not saturated:
            await asyncio.sleep(self.config.poll_interval)
            return
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), self.config.poll_interval)

    async def run(self, stop: asyncio.Event | threading.Event) -> None:
        """Claim and deliver until `stop` is set; finish in-flight requests, then return."""
        loop = asyncio.get_running_loop()
        self._slot_freed = asyncio.Event()
        rounds = int(self.config.lease_seconds // self.config.total_timeout) - 1
        self._per_endpoint = max(2, min(4, rounds)) * self.config.endpoint_concurrency
        flushing = asyncio.Event()
        try:
            async with delivery.make_client(self.config) as client:
                flusher = asyncio.create_task(self._flusher(flushing))
                while not stop.is_set():
                    room = self.max_in_flight - self._claimed
                    jobs: list[Job] = []
                    if room > 0:
                        # Results waiting to be recorded ride along with the claim: one
                        # transaction instead of two (the flusher takes whatever is left).
                        finished, self._results = self._results, []
                        try:
                            jobs, done = await loop.run_in_executor(
                                self._db,
                                self._claim,
                                min(room, self.config.batch_size),
                                dict(self._busy),
                                finished,
                            )
                            self.delivered += done
                            self._record_failures = 0
                        except Exception:
                            if finished:
                                self._keep_for_retry(
                                    finished, "claiming (and recording %d webhook attempts) failed"
                                )
                            else:
                                log.exception("claiming webhook messages failed")
                            await asyncio.sleep(1)
                    self._enqueue(client, jobs)
                    if len(jobs) < min(room, self.config.batch_size) or room <= 0:
                        await self._idle()
                await self._drain()
                flushing.set()
                await flusher
        finally:
            await loop.run_in_executor(self._db, self._close_connection)
            self._db.shutdown(wait=True)

    async def run_once(self, *, max_rounds: int = 1000) -> int:
        """Deliver every message due now (retries due later are left); return attempts made."""
        before = self.delivered
        async with delivery.make_client(self.config) as client:
            for _ in range(max_rounds):
                jobs, _ = self._claim(self.config.batch_size)
                if not jobs:
                    break
                self._enqueue(client, jobs)
                await self._drain()
                batch, self._results = self._results, []
                self.delivered += self._record(batch)
        return self.delivered - before

    def close(self) -> None:
        """Release the kept connection and the database thread (after `run_once`)."""
        self._close_connection()
        self._db.shutdown(wait=False)


def deliver_due(
    engine: Engine,
    config: WebhookConfig,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> int:
    """Deliver every message due at `now` (default: the current time); return attempts made."""
    clock: Clock = (lambda: now) if now is not None else utcnow
    dispatcher = Dispatcher(engine, config, clock=clock, rng=rng)
    try:
        return asyncio.run(dispatcher.run_once())
    finally:
        dispatcher.close()


class EmbeddedWorker:
    """A dispatcher (and alert scanner) on a background thread, as the console runs one."""

    def __init__(self, engine: Engine, config: WebhookConfig, scan_every: float = 60.0) -> None:
        self.engine = engine
        # Poll more gently than a dedicated worker: on SQLite each claim takes the write lock.
        self.config = dataclasses.replace(config, poll_interval=max(config.poll_interval, 0.2))
        self.scan_every = scan_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="webhooks-embedded", daemon=True)

    def start(self) -> EmbeddedWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _main(self) -> None:
        from core.webhooks.worker import run_worker

        asyncio.run(run_worker(self.engine, self.config, self._stop, scan_every=self.scan_every))
