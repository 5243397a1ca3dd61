"""Console sessions, the one-time secrets that lead to them, and sign-in throttling."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class ConsoleSession(Base):
    """One row per signed-in browser, found by the hash of the token in its cookie."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_user_id", "user_id"),)

    # SHA-256 of the token the browser carries, hex; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the absolute end, whatever the activity
    last_seen_at: Mapped[datetime]  # the idle timeout counts from here


class Handoff(Base):
    """A one-time, short-lived secret the sign-in page hands the browser, which posts it
    to the console's session route to receive its session cookie."""

    __tablename__ = "console_handoffs"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # SHA-256 of the browser's binding cookie: only that browser can redeem the handoff.
    binding_hash: Mapped[str] = mapped_column(String(64))
    next_path: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class SetupToken(Base):
    """A first-run setup token, printed to the console's log; gone once setup is done."""

    __tablename__ = "setup_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class SigninThrottle(Base):
    """Failed sign-ins counted under one key: a client address, an account, or both."""

    __tablename__ = "signin_throttles"
    __table_args__ = (Index("ix_signin_throttles_last_failure_at", "last_failure_at"),)

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime]
    blocked_until: Mapped[datetime | None]


class SigninBurst(Base):
    """Failed sign-ins on one account from one client address, not yet in the audit log.

    A burst becomes one `auth.signin_failed` event (with its count) when it closes.
    """

    __tablename__ = "signin_bursts"
    __table_args__ = (Index("ix_signin_bursts_started_at", "started_at"),)

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    client_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime]
    last_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(default=0)
    user_agent: Mapped[str] = mapped_column(String(200), default="")
