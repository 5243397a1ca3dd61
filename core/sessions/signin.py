"""Password sign-in, throttled so it cannot be turned against the account's owner.

Failed sign-ins are counted under three keys, forgotten 24 hours after the last one:

- per client address (all accounts): 20 failures are free; after that the address must
  wait 1 s, 2 s, 4 s … (doubling per failure, at most 15 minutes) before its next
  attempt is even checked;
- per account *and* client address: 5 free, then the same growing wait, at most 15
  minutes — it slows the address guessing, never the owner at another address;
- per account (all addresses): after 20 failures each attempt on the account is
  answered only after a delay growing from 1 s to at most 10 s — a distributed guess
  is slowed, and the owner still gets in with the right password.

There is never a hard lock: a throttled attempt is refused without checking the
password, and the right password works again once the wait is over. Unknown email,
wrong password, disabled account and throttled attempt get the same answer after the
same work (one argon2 verification, against a throwaway hash where needed).

Failures on a known account are audited as one `auth.signin_failed` event per burst —
per account and client address, a burst closes after 5 quiet minutes, 15 minutes after
it began, or at the account's next successful sign-in — with the count, the client
address and the user agent; the actor is "anonymous" and the target the account.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.clock import resolve
from core.errors import AuthenticationFailed
from core.events import EventType
from core.orgs import users
from core.orgs.models import User
from core.orgs.permissions import Actor
from core.sessions.models import SigninBurst, SigninThrottle
from core.sessions.service import SignedIn

ADDRESS_FREE = 20
ACCOUNT_ADDRESS_FREE = 5
ACCOUNT_FREE = 20
FIRST_WAIT = timedelta(seconds=1)
MAX_WAIT = timedelta(minutes=15)
ACCOUNT_MAX_DELAY = 10.0  # seconds
FORGET_AFTER = timedelta(hours=24)
BURST_QUIET = timedelta(minutes=5)
BURST_WINDOW = timedelta(minutes=15)
BAD_CREDENTIALS = (
    "Incorrect email or password. After repeated failures, sign-in from your network "
    "pauses for a while: wait a minute before trying again."
)


@dataclass(frozen=True)
class Client:
    """Where an attempt comes from: the client address and the browser's user agent."""

    address: str
    user_agent: str = ""

    @classmethod
    def of(cls, address: object, user_agent: object = "") -> Client:
        """Return a Client from raw values, bounded and printable ("unknown" if absent)."""
        addr = address if isinstance(address, str) and address.strip() else "unknown"
        agent = user_agent if isinstance(user_agent, str) else ""
        clean = lambda s, n: "".join(c for c in s.strip() if c.isprintable())[:n]  # noqa: E731
        return cls(clean(addr, 64) or "unknown", clean(agent, 200))


@dataclass(frozen=True)
class SignInOutcome:
    """The result of a sign-in attempt: `signed_in` on success, else `error`.

    Its bookkeeping belongs to the caller's transaction: commit first, then `result()`,
    which waits out the account's delay (if any) before answering.
    """

    signed_in: SignedIn | None
    error: AuthenticationFailed | None
    delay: float = 0.0

    def result(self, sleep: Callable[[float], None] = time.sleep) -> SignedIn:
        """Wait `delay` seconds, then return who signed in; raise AuthenticationFailed."""
        if self.delay > 0:
            sleep(self.delay)
        if self.error is not None:
            raise self.error
        assert self.signed_in is not None
        return self.signed_in


def _digest(email: str) -> str:
    return hashlib.sha256(email.encode("utf-8", "replace")).hexdigest()[:40]


def keys_for(email: str, client: Client) -> tuple[str, str, str]:
    """Return the throttle keys (address, account+address, account) of an attempt."""
    account = _digest(email)
    return f"addr:{client.address}", f"pair:{account}:{client.address}", f"acct:{account}"


def _wait(failures: int, free: int) -> timedelta:
    extra = failures - free
    if extra <= 0:
        return timedelta(0)
    return min(FIRST_WAIT * (2 ** min(extra - 1, 20)), MAX_WAIT)


def account_delay(failures: int) -> float:
    """Seconds every attempt on an account with `failures` recent failures waits."""
    extra = failures - ACCOUNT_FREE
    if extra <= 0:
        return 0.0
    return float(min(2 ** min(extra - 1, 10), ACCOUNT_MAX_DELAY))


def _rows(session: Session, keys: tuple[str, ...], now: datetime) -> dict[str, SigninThrottle]:
    """Return the throttle rows for `keys`, created when missing, locked, fresh."""
    values = [{"key": k, "failures": 0, "last_failure_at": now} for k in keys]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(SigninThrottle).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(SigninThrottle).values(values).on_conflict_do_nothing())
    else:  # pragma: no cover - the product runs on SQLite and PostgreSQL
        session.execute(insert(SigninThrottle).values(values))
    rows = session.execute(
        select(SigninThrottle)
        .where(SigninThrottle.key.in_(keys))
        .order_by(SigninThrottle.key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalars()
    found = {r.key: r for r in rows}
    for row in found.values():
        if row.last_failure_at + FORGET_AFTER <= now:
            row.failures, row.blocked_until = 0, None
    return found


def _fail(row: SigninThrottle, free: int | None, now: datetime) -> None:
    row.failures += 1
    row.last_failure_at = now
    if free is not None:
        wait = _wait(row.failures, free)
        row.blocked_until = now + wait if wait else None


def _close_burst(session: Session, burst: SigninBurst, now: datetime) -> None:
    user = session.get(User, burst.user_id)
    if user is not None and burst.count > 0:
        users.record_for_person(
            session,
            user,
            Actor.anonymous(),
            EventType.SIGNIN_FAILED,
            {
                "count": burst.count,
                "client_address": burst.client_address,
                "user_agent": burst.user_agent,
                "first_at": burst.started_at.isoformat(),
                "last_at": burst.last_at.isoformat(),
            },
            now=now,
        )
    session.delete(burst)
    session.flush()


def close_bursts(session: Session, *, now: datetime | None = None, limit: int = 20) -> int:
    """Audit (and forget) bursts that are over: quiet for 5 minutes or begun 15 minutes
    ago. Return how many were closed; at most `limit` per call."""
    now = resolve(now)
    due = session.execute(
        select(SigninBurst)
        .where(
            or_(
                SigninBurst.last_at <= now - BURST_QUIET,
                SigninBurst.started_at <= now - BURST_WINDOW,
            )
        )
        .order_by(SigninBurst.started_at)
        .limit(limit)
        .with_for_update()
    ).scalars()
    closed = 0
    for burst in list(due):
        _close_burst(session, burst, now)
        closed += 1
    return closed


def _count_burst(session: Session, user: User, client: Client, now: datetime) -> None:
    burst = session.execute(
        select(SigninBurst)
        .where(SigninBurst.user_id == user.id, SigninBurst.client_address == client.address)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar()
    if burst is not None and (
        burst.last_at + BURST_QUIET <= now or burst.started_at + BURST_WINDOW <= now
    ):
        _close_burst(session, burst, now)
        burst = None
    if burst is None:
        burst = SigninBurst(
            user_id=user.id,
            client_address=client.address,
            started_at=now,
            last_at=now,
            count=0,
            user_agent=client.user_agent,
        )
        session.add(burst)
    burst.count += 1
    burst.last_at = now
    burst.user_agent = client.user_agent or burst.user_agent
    session.flush()


def sign_in(
    session: Session,
    email: str,
    password: str,
    client: Client,
    *,
    now: datetime | None = None,
) -> SignInOutcome:
    """Check the password, with throttling; return the outcome (see SignInOutcome).

    On success the outcome names the person (the caller then issues a handoff or opens
    a session); on failure its error is AuthenticationFailed with one message for every
    reason.
    """
    return _attempt(session, email, password, client, resolve(now), signing_in=True)


def check_password(
    session: Session,
    user_id: str,
    password: str,
    client: Client,
    *,
    now: datetime | None = None,
) -> SignInOutcome:
    """Check a signed-in person's current password again (before they change it), under
    the same throttling and burst audit as a sign-in, so a stolen session cannot guess it
    faster; a success is not a sign-in and writes no event. Return the outcome."""
    user = session.get(User, user_id)
    outcome = _attempt(
        session, user.email if user else "", password, client, resolve(now), signing_in=False
    )
    if outcome.error is None:
        return outcome
    wrong = AuthenticationFailed("The current password is not correct.")
    return SignInOutcome(None, wrong, outcome.delay)


def _attempt(
    session: Session,
    email: str,
    password: str,
    client: Client,
    now: datetime,
    *,
    signing_in: bool,
) -> SignInOutcome:
    address = (email or "").strip().lower()[:254]
    password = password if isinstance(password, str) else ""
    close_bursts(session, now=now)
    session.execute(
        delete(SigninThrottle).where(SigninThrottle.last_failure_at <= now - FORGET_AFTER)
    )
    addr_key, pair_key, acct_key = keys_for(address, client)
    rows = _rows(session, (addr_key, pair_key, acct_key), now)
    delay = account_delay(rows[acct_key].failures)
    throttled = any(
        rows[k].blocked_until is not None and rows[k].blocked_until > now  # type: ignore[operator]
        for k in (addr_key, pair_key)
    )
    user = (
        session.execute(select(User).where(User.email == address).with_for_update()).scalar()
        if address
        else None
    )
    if throttled or user is None:
        users.spend_verify_time(password)
        ok = False
    else:
        ok = users.password_matches(user, password) and not user.disabled
    if ok and user is not None:
        session.delete(rows[pair_key])
        for burst in session.execute(
            select(SigninBurst).where(SigninBurst.user_id == user.id).with_for_update()
        ).scalars():
            _close_burst(session, burst, now)
        if signing_in:
            users.record_for_person(
                session,
                user,
                Actor.user(user.id, user.email),
                EventType.SIGNIN_SUCCEEDED,
                {"client_address": client.address, "user_agent": client.user_agent},
                now=now,
            )
        session.flush()
        return SignInOutcome(SignedIn(user.id, user.email, user.display_name), None, delay)
    if not throttled:  # a throttled attempt counts in the audit, not in the waits
        _fail(rows[addr_key], ADDRESS_FREE, now)
        _fail(rows[pair_key], ACCOUNT_ADDRESS_FREE, now)
        _fail(rows[acct_key], None, now)
    if user is not None:
        _count_burst(session, user, client, now)
    session.flush()
    return SignInOutcome(None, AuthenticationFailed(BAD_CREDENTIALS), delay)
