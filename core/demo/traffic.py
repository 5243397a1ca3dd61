"""The usage side of the demo: vectorized request records with realistic rhythm and trouble.

Traffic follows a daily curve (busiest mid-afternoon UTC) and a weekly one (quiet
weekends), grows slowly over the period, and is spread over keys by heavy-tailed
weights, so a few keys carry most calls. Each organization has short incidents (5xx and
slow answers), every answer has a latency tail, one key per organization has a day far
above its baseline, and stale clients keep calling with revoked or expired keys. About
0.5 % of requests carry no recognisable key. Generation is numpy throughout and written
in day-aligned chunks through the usage log writer, so ten million records fit in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.demo.plan import KeyPlan
from core.usage import schema as usage_schema

# method, path, median latency (ms), share of calls
ENDPOINTS: tuple[tuple[str, str, float, float], ...] = (
    ("GET", "/v1/orders", 38.0, 0.26),
    ("GET", "/v1/orders/search", 95.0, 0.08),
    ("POST", "/v1/orders", 120.0, 0.07),
    ("GET", "/v1/customers", 30.0, 0.14),
    ("PATCH", "/v1/customers", 70.0, 0.03),
    ("GET", "/v1/products", 22.0, 0.17),
    ("GET", "/v1/inventory", 45.0, 0.10),
    ("POST", "/v1/payments", 210.0, 0.05),
    ("GET", "/v1/reports/daily", 480.0, 0.02),
    ("POST", "/v1/events", 15.0, 0.08),
)
UNKNOWN_SHARE = 0.005
HOUR_US = 3_600_000_000

Progress = Callable[[int, int], None]


@dataclass
class TrafficResult:
    """What was written: record count, files, and each key's accepted calls and last use."""

    records: int = 0
    files: int = 0
    usage: dict[str, tuple[int, int]] = field(default_factory=dict)  # key → (n, last µs)


def _rhythm(hour_starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return the relative traffic of each hour: day curve × week curve × trend × noise."""
    hours = hour_starts // HOUR_US
    hod = (hours % 24).astype(float)
    weekday = ((hours // 24) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    day_curve = 0.18 + np.exp(-0.5 * ((hod - 14.5) / 3.8) ** 2)
    week_curve = np.where(weekday >= 5, 0.42, 1.0)
    trend = np.linspace(0.8, 1.2, len(hours))
    days = len(hours) // 24
    noise = np.repeat(rng.lognormal(0.0, 0.12, days), 24)[: len(hours)]
    return day_curve * week_curve * trend * noise


def _us(value: datetime) -> int:
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def generate(
    data_dir: Path,
    plans: Sequence[KeyPlan],
    n_orgs: int,
    start: datetime,
    end: datetime,
    events: int,
    seed: int,
    *,
    chunk_events: int = 1_000_000,
    progress: Progress | None = None,
) -> TrafficResult:
    """Write about `events` usage records for `plans` between start and end; return totals.

    The same arguments (and seed) give the same records. The count is exact: `events`.
    """
    rng = np.random.default_rng(seed)
    n_hours = int((end - start).total_seconds() // 3600)
    hour_starts = _us(start) + np.arange(n_hours, dtype=np.int64) * HOUR_US
    k = len(plans)
    weights = np.array([p.weight for p in plans], dtype=float)
    t_start = np.array([_us(p.start) for p in plans], dtype=np.int64)
    t_stop = np.array([_us(p.stop) for p in plans], dtype=np.int64)
    t_valid = np.array([_us(p.valid_until) for p in plans], dtype=np.int64)
    t_stale = np.array([_us(p.stale_until) for p in plans], dtype=np.int64)
    spike_day = np.array([-1 if p.spike_day is None else p.spike_day for p in plans])
    key_org = np.array([p.org_index for p in plans], dtype=np.int32)

    def block(h0: int, h1: int) -> np.ndarray:
        """Weights of hours [h0, h1) × (accepted key 0..k-1, stale key 0..k-1)."""
        hs = hour_starts[h0:h1, None]
        accepted = (hs >= t_start) & (hs + HOUR_US <= t_stop)
        stale = (hs >= t_valid) & (hs + HOUR_US <= t_stale)
        day = (np.arange(h0, h1) // 24)[:, None]
        boost = np.where(day == spike_day, 12.0, 1.0)
        return np.hstack([accepted * weights * boost, stale * weights * 0.03])

    rhythm = _rhythm(hour_starts, rng)
    sums = [block(h, min(h + 24, n_hours)).sum(axis=1) for h in range(0, n_hours, 24)]
    mass_h = np.concatenate(sums) * rhythm if sums else np.zeros(0)
    n_unknown = round(events * UNKNOWN_SHARE) if mass_h.sum() > 0 else events
    n_known = events - n_unknown
    known_h = rng.multinomial(n_known, mass_h / mass_h.sum()) if n_known else np.zeros(n_hours, int)
    unknown_h = rng.multinomial(n_unknown, rhythm / rhythm.sum()) if n_hours else np.zeros(0, int)
    # incidents: per organization a few hours with 5xx answers and slow responses
    incident = np.zeros((max(n_orgs, 1), max(n_hours, 1)), dtype=bool)
    for o in range(n_orgs):
        for _ in range(rng.integers(2, 5)):
            h = int(rng.integers(0, max(n_hours - 4, 1)))
            incident[o, h : h + int(rng.integers(2, 6))] = True
    # each key calls from one to three client addresses
    n_clients = rng.integers(1, 4, size=k)
    octets = rng.integers(2, 250, size=(k, 3))
    nets = np.array(["203.0.113.", "198.51.100.", "100.64.12."])
    client_names = [f"{nets[c]}{octets[i, c]}" for i in range(k) for c in range(3)]
    methods = sorted({e[0] for e in ENDPOINTS})
    method_idx = np.array([methods.index(e[0]) for e in ENDPOINTS], dtype=np.int32)
    path_names = [e[1] for e in ENDPOINTS]
    base_ms = np.array([e[2] for e in ENDPOINTS])
    path_p = np.array([e[3] for e in ENDPOINTS])
    path_p /= path_p.sum()
    is_post = np.array([e[0] == "POST" for e in ENDPOINTS])
    codes = ["valid", "key_revoked", "key_expired", "invalid_key", "missing_credentials",
             "malformed_credentials"]  # fmt: skip
    refused_code = np.array([codes.index(p.refused_code) for p in plans], dtype=np.int8)
    org_ids = sorted({p.org_id for p in plans})
    org_of_key = np.array([org_ids.index(p.org_id) for p in plans], dtype=np.int32)
    key_ids = [p.key_id for p in plans]

    result = TrafficResult()
    counts = np.zeros(k, dtype=np.int64)
    last = np.full(k, -1, dtype=np.int64)
    pending: list[dict[str, np.ndarray]] = []
    pending_n = 0

    def flush() -> None:
        nonlocal pending, pending_n
        if not pending:
            return
        cols = {name: np.concatenate([p[name] for p in pending]) for name in pending[0]}
        order = np.argsort(cols["ts"], kind="stable")
        cols = {name: v[order] for name, v in cols.items()}
        known = cols["key"] >= 0

        def dict_col(idx: np.ndarray, names: Sequence[str], mask: np.ndarray | None = None):
            indices = pa.array(idx.astype(np.int32), mask=mask)
            return pa.DictionaryArray.from_arrays(indices, pa.array(names)).cast(pa.string())

        table = pa.table(
            {
                "ts": pa.array(cols["ts"], pa.timestamp("us", tz="UTC")),
                "org_id": dict_col(np.where(known, cols["org"], 0), org_ids or [""], ~known),
                "key_id": dict_col(np.where(known, cols["key"], 0), key_ids or [""], ~known),
                "method": dict_col(method_idx[cols["path"]], methods),
                "path": dict_col(cols["path"], path_names),
                "status": pa.array(cols["status"].astype(np.int16)),
                "latency_ms": pa.array(cols["latency"].astype(np.float32)),
                "code": dict_col(cols["code"], codes),
                "client": dict_col(cols["client"], [*client_names, *_scanner_names()]),
            }
        )
        result.files += len(usage_schema.write_records(data_dir, table))
        result.records += table.num_rows
        pending, pending_n = [], 0
        if progress is not None:
            progress(result.records, events)

    for h0 in range(0, n_hours, 24):
        h1 = min(h0 + 24, n_hours)
        w = block(h0, h1)
        n_h = known_h[h0:h1]
        if n_h.sum():
            rows = np.repeat(np.arange(h1 - h0), n_h)
            total = w.sum(axis=1, keepdims=True)
            cum = np.cumsum(w / np.where(total > 0, total, 1.0), axis=1)
            cum[:, -1] = 1.0
            flat = (cum + np.arange(h1 - h0)[:, None]).ravel()
            pick = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
            col = np.minimum(pick - rows * w.shape[1], w.shape[1] - 1)
            key = col % k
            stale = col >= k
            ts = hour_starts[h0 + rows] + rng.integers(0, 3_600_000, len(rows)) * 1000
            path = rng.choice(len(ENDPOINTS), size=len(rows), p=path_p)
            r = rng.random(len(rows))
            status = np.where(is_post[path], 201, 200)
            status = np.select([r < 0.012, r < 0.02, r < 0.023, r < 0.026],
                               [404, 422, 500, 429], status)  # fmt: skip
            inc = incident[key_org[key], h0 + rows]
            status = np.where(inc & (rng.random(len(rows)) < 0.4), 503, status)
            latency = base_ms[path] * rng.lognormal(0.0, 0.45, len(rows))
            tail = rng.random(len(rows)) < 0.015
            latency = np.where(tail, latency * rng.uniform(4, 25, len(rows)), latency)
            latency = np.where(inc, latency * 6, latency)
            code = np.where(stale, refused_code[key], 0)
            status = np.where(stale, 401, status)
            latency = np.where(stale, rng.uniform(0.4, 3.0, len(rows)), latency)
            client = key * 3 + rng.integers(0, n_clients[key])
            ok = ~stale
            np.add.at(counts, key[ok], 1)
            np.maximum.at(last, key[ok], ts[ok])
            pending.append(
                {"ts": ts, "org": org_of_key[key], "key": key, "path": path,
                 "status": status, "latency": latency, "code": code, "client": client}
            )  # fmt: skip
            pending_n += len(rows)
        u = unknown_h[h0:h1]
        if u.sum():
            rows = np.repeat(np.arange(h1 - h0), u)
            n = len(rows)
            pending.append(
                {
                    "ts": hour_starts[h0 + rows] + rng.integers(0, 3_600_000, n) * 1000,
                    "org": np.zeros(n, np.int32),
                    "key": np.full(n, -1),
                    "path": rng.choice(len(ENDPOINTS), size=n, p=path_p),
                    "status": np.full(n, 401),
                    "latency": rng.uniform(0.2, 2.0, n),
                    "code": rng.choice([3, 4, 5], size=n, p=[0.6, 0.25, 0.15]),
                    "client": 3 * k + rng.integers(0, len(_scanner_names()), n),
                }
            )
            pending_n += n
        if pending_n >= chunk_events:
            flush()
    flush()
    result.usage = {key_ids[i]: (int(counts[i]), int(last[i])) for i in range(k) if counts[i] > 0}
    return result


def _scanner_names() -> list[str]:
    return [f"192.0.2.{i}" for i in range(10, 30)]


def to_datetime(us: int) -> datetime:
    """Return the aware UTC datetime of a microsecond epoch timestamp."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
