"""Organizations, users and their memberships."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, func
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
    failed_signins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]

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
