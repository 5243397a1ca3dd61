"""The usage recorder: an in-memory buffer off the request path, flushed to the Parquet log.

The buffer is column-ready: one flat list that each record extends with its `FIELDS`
values in one atomic `list +=` (no lock, no row object kept, nothing new for the cyclic
GC to track). Every `chunk` records, the thread that recorded the last one converts the
buffer's whole records into Arrow arrays ("seals" them: a strided slice per column,
`flat[i::FIELDS]`, a C-speed copy, then one `pa.array` each, and nothing more: every
other Arrow step waits for the flush) and removes them with one `del`. Sealing small
chunks where the records were made keeps the buffer small and cache-warm, and leaves
the flusher thread almost nothing to do while holding the GIL: when it converted a whole
second of records itself, the event loop waited for the GIL during each flush and every
hand-over cost both threads (bench/README.md).

A record keeps its start and end as `time.perf_counter()` readings, so the request path
reads one clock, once: the flush turns them into the latency and, with the wall clock's
offset from `perf_counter` (re-read when the wall clock was set), the record's time.

A background thread flushes every `interval` seconds, or as soon as `batch_size` records
wait, and once more at `close()`. Each flush writes the sealed chunks and what is left in
the buffer as one new file per day touched (see `core.usage.schema.write_records`) and
then rolls per-key counts into SQL in one batched statement (`core.usage.rollup`). When
the buffer is full, or a write fails, the records are dropped, counted and logged; a
request is never slowed or failed by usage.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from core.usage import rollup
from core.usage.schema import SCHEMA, partition_dir, write_file, write_records

log = logging.getLogger("core.usage")

# One record's values, in this order, in the flat buffer:
# end, start (time.perf_counter() seconds), org_id, key_id, method, path, status, code, client
FIELDS = 9
MAX_METHOD = 16
MAX_PATH = 512
_WARN_EVERY = 10.0
_TEXT_LIMIT = {2: MAX_PATH, 3: MAX_PATH, 4: MAX_METHOD, 5: MAX_PATH, 7: 64, 8: 64}
_STATUS = 6  # the status's position in a record
_REANCHOR = 0.001  # re-read the wall clock's offset when it moved by more than this (s)


@dataclass
class UsageStats:
    """Counters of one recorder since it started."""

    recorded: int = 0
    written: int = 0
    overflow: int = 0
    write_failed: int = 0
    flushes: int = 0
    files: int = 0
    rollup_failed: int = 0
    buffered: int = 0
    last_flush_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


def _text(values: list[Any], limit: int) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowException, UnicodeError):  # lone surrogates and the like
        return pa.array([_clean(v, limit) for v in values], pa.string())


def _status(value: Any) -> int:
    return value if type(value) is int and 0 <= value <= 999 else 0


Columns = list[pa.Array]  # one sealed chunk: a record field per array, in `FIELDS` order


def wall_offset() -> float:
    """Return wall-clock time minus `time.perf_counter()`, in seconds."""
    return time.time() - time.perf_counter()


def flat_to_columns(flat: list[Any]) -> Columns:
    """Return records laid out flat (`FIELDS` values each) as one Arrow array per field.

    Only the conversions from Python objects happen here, one `pa.array` call per field
    (times stay `perf_counter` seconds): this runs on the request thread, where each
    further Arrow call costs tens of µs with cold caches. `columns_to_table` finishes
    the job. Odd text (lone surrogates) is made valid UTF-8, and an odd status becomes
    0, rather than losing the records.
    """
    columns: Columns = [pa.array(flat[i::FIELDS], pa.float64()) for i in (0, 1)]  # end, start
    for i in range(2, FIELDS):
        values = flat[i::FIELDS]
        if i == _STATUS:
            try:
                columns.append(pa.array(values, pa.int16()))
            except (pa.ArrowException, TypeError, OverflowError):  # an app sent an odd status
                columns.append(pa.array([_status(v) for v in values], pa.int16()))
        else:
            columns.append(_text(values, _TEXT_LIMIT[i]))
    return columns


def columns_to_table(chunks: list[Columns], offset: float) -> pa.Table:
    """Return sealed chunks (oldest first) as one table of the log's schema.

    A record's time is its end on the wall clock (`end + offset`, see `wall_offset`),
    its latency the time from its start to its end on the monotonic clock.
    """
    cols = [pa.chunked_array([c[i] for c in chunks], c0.type) for i, c0 in enumerate(chunks[0])]
    end, start, org_id, key_id, method, path, status, code, client = cols
    micros = pc.round(pc.multiply(pc.add(end, offset), 1_000_000.0)).cast(pa.int64())
    ts = micros.cast(pa.timestamp("us", tz="UTC"))
    latency = pc.multiply(pc.subtract(end, start), 1000.0).cast(pa.float32())
    fields = [ts, org_id, key_id, method, path, status, latency, code, client]
    return pa.Table.from_arrays(fields, schema=SCHEMA)


def flat_to_table(flat: list[Any], offset: float) -> pa.Table:
    """Return records laid out flat (`FIELDS` values each) as a table of the log's schema."""
    return columns_to_table([flat_to_columns(flat)], offset)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def write_table(data_dir: Path, table: pa.Table, first: float, last: float) -> list[Path]:
    """Write one flush: one file straight into its day when every record shares that day."""
    day = _day(first)
    if day == _day(last):
        return [write_file(partition_dir(data_dir, day), table)]
    return write_records(data_dir, table)


def rollup_counts(table: pa.Table) -> dict[str, tuple[int, float]]:
    """Return key id → (accepted requests, latest epoch seconds) of a flush's records."""
    valid = table.filter(pc.and_(pc.equal(table["code"], "valid"), pc.is_valid(table["key_id"])))
    if valid.num_rows == 0:
        return {}
    grouped = valid.group_by("key_id").aggregate([("key_id", "count"), ("ts", "max")])
    keys = grouped["key_id"].to_pylist()
    counts = grouped["key_id_count"].to_pylist()
    latest = pc.divide(grouped["ts_max"].cast(pa.int64()), 1_000_000.0).to_pylist()
    return {k: (n, t) for k, n, t in zip(keys, counts, latest, strict=True)}


class UsageRecorder:
    """Buffer usage records in memory and flush them to the usage log in the background."""

    def __init__(
        self,
        data_dir: Path,
        engine: Engine | None = None,
        *,
        interval: float = 1.0,
        batch_size: int = 50_000,
        max_buffer: int = 200_000,
        chunk: int = 2_000,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._engine = engine
        self._interval = interval
        # Lengths of the flat buffer: this many values queued, wake the flusher on the next
        # record; this many, drop the next one (counted overflow).
        self._wake_len = (min(batch_size, max_buffer) - 1) * FIELDS
        self._max_len = max_buffer * FIELDS
        self._chunk_len = max(1, min(chunk, batch_size, max_buffer)) * FIELDS
        self._buf: list[Any] = []  # FIELDS values per record, see `add`
        self._sealed: list[Columns] = []  # chunks converted by `_seal`, oldest first
        self._sealed_rows = 0
        # The buffer length past which `add` leaves its fast path: the next chunk's end, or
        # sooner when sealed chunks already hold most of a batch (kept by `_reset_fast`).
        self._fast_len = min(self._chunk_len, self._wake_len)
        self._take_lock = threading.Lock()  # one taker of the buffer's head at a time
        self._flush_lock = threading.Lock()
        self._overflow_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_rollup: dict[str, tuple[int, float]] = {}
        self._last_warning = 0.0
        self._offset = wall_offset()  # kept while the clocks agree, see `_current_offset`
        self.stats = UsageStats()

    # -- the request path -------------------------------------------------------------

    def record(
        self,
        ts: float,
        org_id: str | None,
        key_id: str | None,
        method: str,
        path: str,
        status: int,
        latency_ms: float,
        code: str,
        client: str | None,
    ) -> None:
        """Queue one record made at wall-clock time `ts` (epoch seconds) that took
        `latency_ms`; method and path are cut to their limits. Never blocks.

        If the buffer is full the record is counted as overflow and dropped instead.
        """
        end = ts - self._offset
        self.add(
            end,
            end - latency_ms / 1000.0,
            org_id,
            key_id,
            method[:MAX_METHOD],
            path[:MAX_PATH],
            status,
            code,
            client,
        )

    def add(
        self,
        end: float,
        start: float,
        org_id: str | None,
        key_id: str | None,
        method: str,
        path: str,
        status: int,
        code: str,
        client: str | None,
    ) -> None:
        """Queue one prepared record: `start` and `end` are `time.perf_counter()` readings
        (its time is `end` on the wall clock), method ≤ MAX_METHOD and path ≤ MAX_PATH
        characters.

        The hot path: one length check and one atomic `list +=`, no lock, never blocks; the
        caller reads one clock. Past `batch_size` queued records the flusher is woken; past
        `max_buffer` the record is counted as overflow and dropped.
        """
        buf = self._buf
        if len(buf) < self._fast_len:
            buf += (end, start, org_id, key_id, method, path, status, code, client)
            return
        if len(buf) >= self._chunk_len:
            self._seal()
        if len(buf) + self._sealed_rows * FIELDS < self._wake_len:
            buf += (end, start, org_id, key_id, method, path, status, code, client)
            return
        if len(buf) + self._sealed_rows * FIELDS < self._max_len:
            buf += (end, start, org_id, key_id, method, path, status, code, client)
        else:
            with self._overflow_lock:
                self.stats.overflow += 1
            self._warn("usage buffer full: records dropped (overflow=%d)", self.stats.overflow)
        self._wake.set()

    def _take(self) -> list[Any]:
        """Remove and return the buffer's whole records (caller holds `_take_lock`)."""
        buf = self._buf
        size = len(buf)
        size -= size % FIELDS  # whole records only (each `+=` adds one whole record)
        flat = buf[:size]  # one atomic copy: records added from now on stay queued ...
        del buf[:size]  # ... and this drops exactly the ones copied
        return flat

    def _reset_fast(self) -> None:
        self._fast_len = max(0, min(self._chunk_len, self._wake_len - self._sealed_rows * FIELDS))

    def _seal(self) -> None:
        """Convert the buffered records into an Arrow chunk, unless a flush is taking them."""
        if not self._take_lock.acquire(blocking=False):
            return
        try:
            flat = self._take()
            if not flat:
                return
            try:
                columns = flat_to_columns(flat)
            except Exception:
                count = len(flat) // FIELDS
                self.stats.write_failed += count
                log.exception("usage records could not be converted; %d dropped", count)
                return
            self._sealed.append(columns)
            self._sealed_rows += len(columns[0])
            self._reset_fast()
        finally:
            self._take_lock.release()

    # -- the background flusher -------------------------------------------------------------

    def start(self) -> UsageRecorder:
        """Start the background flusher thread; return self.

        One record is converted to Arrow first, so that pyarrow's lazy imports (pandas,
        about a second of CPU) happen now rather than in the first flush, while serving.
        """
        if self._thread is None:
            flat_to_table([0.0, 0.0, None, None, "GET", "/", 200, "", None], self._offset)
            self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the flusher and flush what is left (call at shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def flush(self) -> int:
        """Write the buffered records now; return how many were written."""
        with self._flush_lock:
            with self._take_lock:
                chunks, self._sealed, self._sealed_rows = self._sealed, [], 0
                flat = self._take()
                self._reset_fast()
            count = sum(len(c[0]) for c in chunks) + len(flat) // FIELDS
            self.stats.recorded += count
            written = 0
            if count:
                table = self._write(chunks, flat, count)
                if table is not None:
                    written = table.num_rows
                    self._collect_rollup(table)
            self._apply_rollup()
            self.stats.buffered = self._queued()
            return written

    def _queued(self) -> int:
        return self._sealed_rows + len(self._buf) // FIELDS

    def _write(self, chunks: list[Columns], flat: list[Any], count: int) -> pa.Table | None:
        """Write sealed chunks and flat records (`count` in all); return their table, or
        None when dropped (counted)."""
        try:
            if flat:
                chunks = [*chunks, flat_to_columns(flat)]
            table = columns_to_table(chunks, self._current_offset())
        except Exception:
            self.stats.write_failed += count
            log.exception("usage records could not be converted; %d dropped", count)
            return None
        bounds = pc.min_max(table["ts"].cast(pa.int64()))
        first, last = bounds["min"].as_py() / 1e6, bounds["max"].as_py() / 1e6
        for attempt in (1, 2):
            try:
                paths = write_table(self.data_dir, table, first, last)
            except OSError as exc:
                if attempt == 2:
                    self.stats.write_failed += count
                    self._warn(
                        "usage log write failed (%s); %d records dropped (write_failed=%d)",
                        exc.strerror or type(exc).__name__,
                        count,
                        self.stats.write_failed,
                    )
                    return None
                continue
            self.stats.written += count
            self.stats.flushes += 1
            self.stats.files += len(paths)
            self.stats.last_flush_at = datetime.now(UTC).isoformat()
            return table
        return None  # pragma: no cover - the loop always returns

    def _current_offset(self) -> float:
        """Return the wall clock's offset from `perf_counter`, re-read if the wall clock
        was set (stepped) since: records then queued get the time the clock now tells."""
        now = wall_offset()
        if abs(now - self._offset) > _REANCHOR:
            self._offset = now
        return self._offset

    def _collect_rollup(self, table: pa.Table) -> None:
        if self._engine is None:
            return
        pending = self._pending_rollup
        for key_id, (count, last) in rollup_counts(table).items():
            c0, l0 = pending.get(key_id, (0, 0.0))
            pending[key_id] = (count + c0, max(last, l0))

    def _apply_rollup(self) -> None:
        if self._engine is None or not self._pending_rollup:
            return
        pending, self._pending_rollup = self._pending_rollup, {}
        try:
            rollup.apply(self._engine, pending)
        except Exception as exc:
            self.stats.rollup_failed += 1
            self._warn("usage rollup failed (%s); it will be retried", type(exc).__name__)
            for key_id, (count, last) in pending.items():
                c2, l2 = self._pending_rollup.get(key_id, (0, 0.0))
                self._pending_rollup[key_id] = (count + c2, max(last, l2))

    def _warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning(message, *args)

    def snapshot(self) -> dict[str, Any]:
        """Return the recorder's counters (recorded, written, overflow, write_failed, …)."""
        out = self.stats.to_dict()
        out["buffered"] = buffered = self._queued()
        out["recorded"] += buffered
        return out
