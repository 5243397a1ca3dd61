"""The SQL side of the demo: organizations, people, keys and their lives, sign-ins.

Everything goes through the product's services with back-dated `now=` times, executed in
time order per organization so each audit chain reads forward in time. The result is a
list of `KeyPlan` rows telling the traffic generator when and how much each key is used.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from core.audit import service as audit
from core.events import EventType
from core.keys import service as keys
from core.orgs import service as orgs
from core.orgs.permissions import Actor

DEMO_PASSWORD = "demo-password-2026"  # noqa: S105 - printed for the operator; demo only
ORG_NAMES = (
    "Northwind Traders",
    "Globex Logistics",
    "Initech Payments",
    "Umbrella Health",
    "Stark Retail",
    "Wayne Analytics",
    "Tyrell Robotics",
    "Soylent Foods",
)
KEY_NAMES = (
    "Production Server",
    "Billing Worker",
    "Mobile App Backend",
    "Data Warehouse Sync",
    "Partner Integration",
    "CI Pipeline",
    "Staging Server",
    "Support Dashboard",
    "Nightly Reports",
    "Inventory Service",
    "Marketing Site",
    "Webhook Relay",
)
# How a key lineage lives: its share of lineages, in a fixed cycle.
KINDS = (
    "steady",
    "rotating",
    "steady",
    "idle",
    "expiring",
    "revoked",
    "rotating",
    "expired",
    "never",
    "steady",
    "expiring",
    "idle",
)


@dataclass
class KeyPlan:
    """One key row and how its traffic looks (times are aware UTC)."""

    key_id: str
    org_id: str
    org_index: int
    weight: float
    start: datetime  # first call
    stop: datetime  # last accepted-traffic time (exclusive)
    valid_until: datetime  # revoked_at or expires_at, whichever is first
    refused_code: str  # key_revoked or key_expired after valid_until
    stale_until: datetime  # refused calls from stale clients continue until then
    spike_day: int | None = None  # day index with a burst far above the key's baseline


@dataclass
class _Lineage:
    org_index: int
    org_id: str
    name: str
    kind: str
    owner: Actor
    weight: float
    created: datetime
    key_id: str = ""
    plans: list[KeyPlan] = field(default_factory=list)


def _people(slug: str) -> list[tuple[str, str, str]]:
    return [
        (f"alice@{slug}.example", "admin", "Alice Admin"),
        (f"bob@{slug}.example", "member", "Bob Builder"),
        (f"carol@{slug}.example", "member", "Carol Coder"),
        (f"dave@{slug}.example", "auditor", "Dave Auditor"),
    ]


def org_name(index: int) -> str:
    base = ORG_NAMES[index % len(ORG_NAMES)]
    return base if index < len(ORG_NAMES) else f"{base} {index // len(ORG_NAMES) + 1}"


def build_org(
    session: Session,
    index: int,
    n_keys: int,
    start: datetime,
    end: datetime,
    pepper: bytes,
    rnd: random.Random,
) -> tuple[str, list[KeyPlan], int]:
    """Create one organization's people, keys and sign-ins; return (org id, plans, audit n)."""
    name = org_name(index)
    slug = name.lower().replace(" ", "-")
    people = _people(slug)
    org, admin_user = orgs.create_organization(
        session, name, people[0][0], DEMO_PASSWORD, now=start
    )
    admin = Actor.user(admin_user.id, admin_user.email)
    actors = [admin]
    for i, (email, role, display) in enumerate(people[1:], start=1):
        m = orgs.add_member(  # the demo is run by the operator, who adds people directly
            session,
            org.id,
            Actor.system("demo"),
            email,
            role,
            password=DEMO_PASSWORD,
            display_name=display,
            now=start + timedelta(hours=i),
        )
        actors.append(Actor.user(m.user_id, m.user.email))
    span = end - start
    size = rnd.choice((1.0, 0.6, 2.5, 0.3))  # organizations differ in traffic
    actions: list[tuple[datetime, int, Callable[[], None]]] = []
    lineages: list[_Lineage] = []
    for k in range(n_keys):
        kind = KINDS[(k + index) % len(KINDS)]
        owner = actors[rnd.choice((0, 0, 1, 2))]
        offset = timedelta(seconds=rnd.uniform(0.01, 0.5) * span.total_seconds())
        created = start + timedelta(days=1) + (offset if k >= 2 else timedelta(hours=k))
        if kind == "expiring":
            created = max(start + timedelta(days=1), end - timedelta(days=rnd.randint(40, 80)))
        weight = size * (rnd.paretovariate(1.3) if kind != "never" else 0.0)
        name_k = KEY_NAMES[k % len(KEY_NAMES)]
        if k >= len(KEY_NAMES):
            name_k = f"{name_k} {k // len(KEY_NAMES) + 1}"
        lineages.append(_Lineage(index, org.id, name_k, kind, owner, weight, created))
    for lin in lineages:
        actions += _lineage_actions(session, lin, start, end, pepper, rnd)
    actions += _people_actions(session, org.id, actors, start, end, rnd)
    seq = 0
    for _ts, _order, run in sorted(actions, key=lambda a: (a[0], a[1])):
        run()
        seq += 1
    plans = [p for lin in lineages for p in lin.plans]
    spiky = [p for p in plans if p.weight > 0 and (p.stop - p.start) > timedelta(days=20)]
    if spiky:
        chosen = rnd.choice(spiky)
        lo = (chosen.start - start).days + 15
        hi = (min(chosen.stop, end) - start).days - 1
        if hi > lo:
            chosen.spike_day = rnd.randint(lo, hi)
    return org.id, plans, seq


def _lineage_actions(
    session: Session,
    lin: _Lineage,
    start: datetime,
    end: datetime,
    pepper: bytes,
    rnd: random.Random,
) -> list[tuple[datetime, int, Callable[[], None]]]:
    out: list[tuple[datetime, int, Callable[[], None]]] = []
    order = len(out)
    if lin.kind == "expiring":
        expires_days = (end - lin.created).days + rnd.randint(3, 20)
    elif lin.kind == "expired":
        expires_days = rnd.choice((30, 60))
    elif lin.kind == "rotating":
        expires_days = 90
    else:
        expires_days = rnd.choice((180, 365))
    expires_days = min(expires_days, 365)
    idle_stop = end - timedelta(days=rnd.randint(20, 60))

    def add_plan(key_id: str, created: datetime, expires_at: datetime) -> KeyPlan:
        stop = end
        if lin.kind == "idle":
            stop = max(created + timedelta(days=3), idle_stop)
        plan = KeyPlan(
            key_id=key_id,
            org_id=lin.org_id,
            org_index=lin.org_index,
            weight=lin.weight,
            start=created + timedelta(minutes=rnd.randint(5, 600)),
            stop=min(stop, expires_at),
            valid_until=expires_at,
            refused_code="key_expired",
            stale_until=expires_at,
        )
        if lin.kind == "expired":
            plan.stale_until = expires_at + timedelta(days=rnd.randint(2, 10))
        lin.plans.append(plan)
        return plan

    def create() -> None:
        new = keys.create_key(
            session,
            lin.org_id,
            lin.owner,
            name=lin.name,
            expires=expires_days,
            pepper=pepper,
            now=lin.created,
        )
        lin.key_id = new.id
        add_plan(new.id, new.created_at, new.expires_at)

    out.append((lin.created, order, create))
    if lin.kind == "rotating":
        t = lin.created
        while True:
            t = t + timedelta(days=rnd.randint(55, 80))
            if t >= end - timedelta(hours=1):
                break
            grace = rnd.choice(("24h", "7d", "1h"))

            def roll(at: datetime = t, grace: str = grace) -> None:
                new, old = keys.roll_key(
                    session, lin.owner, lin.key_id, grace=grace, pepper=pepper, now=at
                )
                prev = lin.plans[-1]
                assert old.revoked_at is not None
                prev.valid_until = old.revoked_at
                prev.refused_code = "key_revoked"
                # most clients switch at once; a few keep the old key through the grace
                prev.stop = min(prev.stop, at + (old.revoked_at - at) / 2)
                prev.stale_until = old.revoked_at + timedelta(hours=rnd.randint(0, 30))
                lin.key_id = new.id
                add_plan(new.id, new.created_at, new.expires_at)

            out.append((t, 1, roll))
    if lin.kind == "revoked":
        at = lin.created + (end - lin.created) * rnd.uniform(0.4, 0.8)

        def revoke(at: datetime = at) -> None:
            keys.revoke_key(
                session, lin.owner, lin.key_id, reason="credential posted in a public repo", now=at
            )
            plan = lin.plans[-1]
            plan.valid_until = plan.stop = at
            plan.refused_code = "key_revoked"
            plan.stale_until = at + timedelta(days=rnd.randint(1, 5))

        out.append((at, 2, revoke))
    return out


def _people_actions(
    session: Session,
    org_id: str,
    actors: list[Actor],
    start: datetime,
    end: datetime,
    rnd: random.Random,
) -> list[tuple[datetime, int, Callable[[], None]]]:
    out: list[tuple[datetime, int, Callable[[], None]]] = []
    failures: dict[str, int] = {}
    locked_after = 5  # the console locks an account after five failures in a row

    def signin(at: datetime, who: Actor, ok: bool) -> None:
        """Record a console sign-in the way the sign-in service does (actor = the user)."""
        key = who.user_id or ""
        if ok:
            failures[key] = 0
            details: dict[str, str] = {}
        else:
            failures[key] = failures.get(key, 0) + 1
            n = failures[key]
            reason = "locked" if n > locked_after else "bad_password"
            details = {"reason": reason, "failures": str(min(n, locked_after))}
        audit.record(
            session,
            org_id,
            who,
            EventType.SIGNIN_SUCCEEDED if ok else EventType.SIGNIN_FAILED,
            target=("user", key),
            details=details,
            now=at,
        )

    day = start + timedelta(days=1)
    while day < end:
        weekday = day.weekday() < 5
        for who in actors:
            if rnd.random() < (0.7 if weekday else 0.1):
                at = day + timedelta(hours=rnd.uniform(7, 18))
                if rnd.random() < 0.06:  # a typo first
                    out.append((at, 3, _bind(signin, at, who, False)))
                    at += timedelta(seconds=rnd.randint(5, 60))
                if at < end:
                    out.append((at, 3, _bind(signin, at, who, True)))
        day += timedelta(days=1)
    # one password-guessing burst against the admin: it runs into the lock
    burst = start + (end - start) * rnd.uniform(0.55, 0.9)
    for i in range(rnd.randint(20, 40)):
        at = burst + timedelta(seconds=20 * i + rnd.randint(0, 15))
        out.append((at, 3, _bind(signin, at, actors[0], False)))
    # settings and a role change mid-period
    admin = actors[0]
    at = start + (end - start) * 0.3
    out.append(
        (
            at,
            4,
            lambda: (
                orgs.update_settings(
                    session,
                    org_id,
                    admin,
                    max_key_lifetime_days=365,
                    alert_lead_days=[30, 14, 1],
                    now=at,
                ),
                None,
            )[1],
        )
    )
    at2 = start + (end - start) * 0.45
    if len(actors) > 2 and actors[2].user_id:
        uid = actors[2].user_id
        out.append(
            (
                at2,
                4,
                lambda: (orgs.change_role(session, org_id, admin, uid, "admin", now=at2), None)[1],
            )
        )
    return out


def _bind(fn: Callable[..., None], *args: object) -> Callable[[], None]:
    return lambda: fn(*args)
