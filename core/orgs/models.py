"""Organizations, users and their memberships."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base

DEFAULT_MAX_KEY_LIFETIME_DAYS = 365
DEFAULT_ALERT_LEAD_DAYS = (30, 7, 1)
DEFAULT_API_BASE_URL = "https://api.example.com"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    AUDITOR = "auditor"


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())
    max_key_lifetime_days: Mapped[int] = mapped_column(default=DEFAULT_MAX_KEY_LIFETIME_DAYS)
    # Days before expiry at which alerts fire, largest first; the first is "expiring".
    alert_lead_days: Mapped[dict[str, Any]] = mapped_column(
        default=lambda: {"days": list(DEFAULT_ALERT_LEAD_DAYS)}
    )
    api_base_url: Mapped[str] = mapped_column(String(300), default=DEFAULT_API_BASE_URL)
    # Head of the audit hash chain: the last event's sequence number and hash.
    audit_seq: Mapped[int] = mapped_column(default=0)
    audit_head: Mapped[str] = mapped_column(String(64), default="0" * 64)

    memberships: Mapped[list[Membership]] = relationship(back_populates="org")

    @property
    def lead_days(self) -> list[int]:
        days = (self.alert_lead_days or {}).get("days") or list(DEFAULT_ALERT_LEAD_DAYS)
        return sorted((int(d) for d in days), reverse=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (CheckConstraint("role IN ('admin', 'member', 'auditor')", name="role"),)

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())

    org: Mapped[Organization] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class Invitation(Base):
    """An invitation to join an organization: grants nothing until its person accepts it."""

    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'member', 'auditor')", name="role"),
        Index("ix_invitations_org_id_email", "org_id", "email"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the one-time token in the invitation link, hex; the token is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    invited_by_email: Mapped[str] = mapped_column(String(254))  # "cli" for the operator
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None]

    org: Mapped[Organization] = relationship()

    def status(self, now: datetime) -> str:
        """Return "accepted", "revoked", "expired" or "pending" at `now`."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "pending"


class PasswordReset(Base):
    """A one-time password-reset link issued by an admin or the operator."""

    __tablename__ = "password_resets"
    __table_args__ = (Index("ix_password_resets_user_id", "user_id"),)

    # SHA-256 of the one-time token in the reset link, hex; the token is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    issued_by_email: Mapped[str] = mapped_column(String(254))  # "cli" for the operator
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
