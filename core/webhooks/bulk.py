"""The dispatcher's two hot statements on PostgreSQL, each one round trip of fixed text.

A claim and a record of results are each a single statement whose values travel as
arrays (`unnest`), so the text never changes with the batch size: psycopg prepares it
once per connection and the server plans it once. The portable versions (SQLite) in
`core.webhooks.dispatcher.claim` and `core.webhooks.delivery.record` take three to five
statements for the same work; both give the same results (the tests run on both).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, text

# Lock up to :limit due rows (skipping those other workers hold), keep per endpoint only as
# many as its free slots (:per_endpoint minus what this worker already holds of it), and
# lease those. Rows over an endpoint's quota stay locked only until the commit.
# `more` says that endpoint had more due rows than it could take now.
CLAIM = text(
    """
WITH due AS (
    SELECT id, endpoint_id, next_attempt_at
    FROM webhook_messages
    WHERE status = 'pending' AND next_attempt_at <= :now
      AND endpoint_id <> ALL(CAST(:saturated AS text[]))
    ORDER BY next_attempt_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), held AS (
    SELECT * FROM unnest(CAST(:busy_ids AS text[]), CAST(:busy_counts AS int[]))
        AS held(endpoint_id, n)
), ranked AS (
    SELECT due.id, due.next_attempt_at AS due_at,
           row_number() OVER w AS rank, count(*) OVER w AS due_n,
           :per_endpoint - coalesce(held.n, 0) AS room
    FROM due LEFT JOIN held ON held.endpoint_id = due.endpoint_id
    WINDOW w AS (PARTITION BY due.endpoint_id ORDER BY due.next_attempt_at, due.id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
UPDATE webhook_messages AS m
SET next_attempt_at = :lease_end
FROM ranked
WHERE m.id = ranked.id AND ranked.rank <= ranked.room
RETURNING m.id, m.endpoint_id, m.body, m.schedule_step, m.attempt_count,
          ranked.due_at, ranked.due_n > ranked.room AS more
"""
)

# Move each message to its new state and log each attempt, in one statement. A failure
# only lands on a message still pending (a success by another worker whose lease ran out
# stands); every attempt of a message that still exists is logged.
RECORD = text(
    """
WITH r AS (
    SELECT * FROM unnest(
        CAST(:ids AS text[]), CAST(:endpoint_ids AS text[]), CAST(:success AS boolean[]),
        CAST(:status AS text[]), CAST(:next_at AS timestamptz[]), CAST(:step AS int[]),
        CAST(:attempted_at AS timestamptz[]), CAST(:status_code AS int[]),
        CAST(:latency_ms AS float8[]), CAST(:excerpt AS text[]), CAST(:error AS text[]),
        CAST(:trigger AS text[])
    ) AS r(id, endpoint_id, success, status, next_at, step, attempted_at, status_code,
           latency_ms, excerpt, error, trigger)
), moved AS (
    UPDATE webhook_messages AS m
    SET status = r.status, next_attempt_at = r.next_at, schedule_step = r.step,
        attempt_count = m.attempt_count + 1, last_attempt_at = r.attempted_at,
        last_error = r.error
    FROM r
    WHERE m.id = r.id AND (r.success OR m.status = 'pending')
)
INSERT INTO webhook_attempts (message_id, endpoint_id, attempted_at, success, status_code,
                              latency_ms, response_excerpt, error, trigger)
SELECT r.id, r.endpoint_id, r.attempted_at, r.success, r.status_code, r.latency_ms,
       r.excerpt, r.error, r.trigger
FROM r JOIN webhook_messages AS m ON m.id = r.id
RETURNING message_id
"""
)


def claim(
    conn: Connection,
    now: datetime,
    lease_end: datetime,
    limit: int,
    per_endpoint: int,
    busy: dict[str, int],
    saturated: Sequence[str],
) -> Sequence[Row[Any]]:
    """Lease due messages; return rows (id, endpoint_id, body, schedule_step,
    attempt_count, due_at, more), oldest first."""
    rows = conn.execute(
        CLAIM,
        {
            "now": now,
            "lease_end": lease_end,
            "limit": limit,
            "per_endpoint": per_endpoint,
            "busy_ids": list(busy),
            "busy_counts": list(busy.values()),
            "saturated": list(saturated),
        },
    ).all()
    return sorted(rows, key=lambda r: (r.due_at, r.id))


def record(conn: Connection, rows: dict[str, list[Any]]) -> set[str]:
    """Apply recorded results given column-wise (see RECORD); return the message ids logged."""
    return set(conn.execute(RECORD, rows).scalars())
