"""Per-key usage rollups: `last_used_at` and `usage_count` of each key, updated per flush."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, case, update

from core.db import UTCDateTime
from core.keys.models import ApiKey

_ROLLUP = (
    update(ApiKey)
    .where(ApiKey.id == bindparam("kid"))
    .values(
        usage_count=ApiKey.usage_count + bindparam("n"),
        last_used_at=case(
            (
                (ApiKey.last_used_at.is_(None))
                | (ApiKey.last_used_at < bindparam("ts", type_=UTCDateTime())),
                bindparam("ts", type_=UTCDateTime()),
            ),
            else_=ApiKey.last_used_at,
        ),
    )
)


def apply(engine: Engine, counts: dict[str, tuple[int, float]]) -> None:
    """Add each key's count and raise its last_used_at, in one batched UPDATE statement.

    `counts` maps key id → (requests, latest epoch seconds). Keys are updated in id order
    so concurrent flushes of several processes lock rows in the same order. Raise the
    database's error if the statement fails (nothing is applied then).
    """
    if not counts:
        return
    params = [
        {"kid": key_id, "n": n, "ts": datetime.fromtimestamp(ts, UTC)}
        for key_id, (n, ts) in sorted(counts.items())
    ]
    with engine.begin() as conn:
        conn.execute(_ROLLUP.execution_options(synchronize_session=False), params)
