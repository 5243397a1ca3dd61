"""A realistic demo data set, built through the product's own services and usage log writer.

`build_demo` creates organizations (an admin, two members and an auditor each), keys
created over the period (some rolled, revoked, expired, idle, never used, expiring soon),
the audit trail those changes write, sign-ins (with one password-guessing burst per
organization), and usage records with daily and weekly rhythm, heavy keys, incidents,
latency tails and a spike. Each key's `usage_count` and `last_used_at` in SQL are set to
agree with the log. The same options (seed and end) give the same data; identifiers and
key secrets are random, as the product makes them.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from core.audit import keyring as audit_keyring
from core.clock import resolve
from core.config import Settings
from core.db import UTCDateTime
from core.demo.plan import DEMO_PASSWORD, KeyPlan, build_org, org_name
from core.demo.traffic import Progress, generate, to_datetime
from core.errors import Conflict, ValidationError
from core.keys.models import ApiKey
from core.orgs.models import Organization

LIMITS = {
    "orgs": (1, 50),
    "keys": (1, 200),
    "events": (0, 200_000_000),
    "days": (7, 365),
    "seed": (0, 2**32 - 1),
}


@dataclass(frozen=True)
class DemoOptions:
    """What to build: organizations, key lineages per organization, usage records, days."""

    orgs: int = 3
    keys: int = 12
    events: int = 300_000
    days: int = 90
    seed: int = 42
    end: datetime | None = None  # default: today's midnight (UTC); data stops before it

    def validated(self) -> DemoOptions:
        """Return self; raise ValidationError naming the first option out of range."""
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValidationError(f"--{name} must be a whole number, {lo}–{hi}", field=name)
        if self.end is not None and self.end.tzinfo is None:
            raise ValidationError("the end must carry a time zone", field="end")
        return self


@dataclass
class DemoSummary:
    orgs: list[str]
    keys: int
    audit_events: int
    records: int
    files: int
    start: datetime
    end: datetime
    seconds: float
    password: str = DEMO_PASSWORD
    admins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "orgs": self.orgs,
            "admins": self.admins,
            "password": self.password,
            "keys": self.keys,
            "audit_events": self.audit_events,
            "usage_records": self.records,
            "files": self.files,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "seconds": round(self.seconds, 1),
        }


def build_demo(
    engine: Engine,
    settings: Settings,
    options: DemoOptions | None = None,
    *,
    progress: Progress | None = None,
) -> DemoSummary:
    """Build the demo data set into the configured database and usage log; return a summary.

    Raise Conflict if a demo organization already exists (use a fresh data directory or
    database), ValidationError for options out of range. Each organization is committed in
    its own transaction, before any usage is written.
    """
    opts = (options or DemoOptions()).validated()
    started = time.monotonic()
    end = (
        opts.end.astimezone(UTC)
        if opts.end
        else datetime.combine(resolve(None).date(), dtime(0), UTC)
    )
    start = end - timedelta(days=opts.days)
    names = [org_name(i) for i in range(opts.orgs)]
    with Session(engine) as s:
        taken = s.execute(select(Organization.name).where(Organization.name.in_(names))).scalars()
        clash = sorted(taken)
        if clash:
            raise Conflict(
                f"demo organization {clash[0]!r} already exists: build the demo into a fresh "
                "database and data directory (DATABASE_URL, INTEGRATION_DATA_DIR)"
            )
    rnd = random.Random(opts.seed)
    pepper = settings.pepper
    # Chains are keyed with these settings' audit key, whatever the environment says.
    audit_keyring.bind(engine, audit_keyring.AuditKeyring.from_settings(settings))
    plans: list[KeyPlan] = []
    audit_events = 0
    admins = []
    for i in range(opts.orgs):
        with Session(engine, expire_on_commit=False) as s, s.begin():
            _org_id, org_plans, n = build_org(s, i, opts.keys, start, end, pepper, rnd)
        plans += org_plans
        audit_events += n
        admins.append(f"alice@{names[i].lower().replace(' ', '-')}.example")
    traffic = generate(
        settings.data_dir,
        plans,
        opts.orgs,
        start,
        end,
        opts.events,
        opts.seed,
        progress=progress,
    )
    _set_key_usage(engine, traffic.usage)
    return DemoSummary(
        orgs=names,
        keys=len(plans),
        audit_events=audit_events,
        records=traffic.records,
        files=traffic.files,
        start=start,
        end=end,
        seconds=time.monotonic() - started,
        admins=admins,
    )


def _set_key_usage(engine: Engine, usage: dict[str, tuple[int, int]]) -> None:
    """Set each key's usage_count and last_used_at to what the log holds, in one statement."""
    if not usage:
        return
    stmt = (
        update(ApiKey)
        .where(ApiKey.id == bindparam("kid"))
        .values(
            usage_count=bindparam("n"),
            last_used_at=bindparam("ts", type_=UTCDateTime()),
        )
        .execution_options(synchronize_session=False)
    )
    params = [
        {"kid": key_id, "n": n, "ts": to_datetime(last)}
        for key_id, (n, last) in sorted(usage.items())
    ]
    with engine.begin() as conn:
        conn.execute(stmt, params)


__all__ = ["DEMO_PASSWORD", "DemoOptions", "DemoSummary", "build_demo"]
