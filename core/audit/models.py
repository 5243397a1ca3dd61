"""The audit log: one keyed hash chain of events per organization, and signed checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("org_id", "seq"),
        Index("ix_audit_events_org_id_ts", "org_id", "ts"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    seq: Mapped[int]
    ts: Mapped[datetime]
    actor_type: Mapped[str] = mapped_column(String(16))  # user | system
    actor_id: Mapped[str | None] = mapped_column(String(32))
    actor_email: Mapped[str | None] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The audit key whose chain key made `hash` (HMAC-SHA256); None for the unkeyed
    # SHA-256 events written before chains were keyed.
    key_id: Mapped[str | None] = mapped_column(String(16))


class AuditCheckpoint(Base):
    """A signed statement that an organization's chain had `head` at event `seq`."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (UniqueConstraint("org_id", "n"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    n: Mapped[int]  # 1, 2, … per organization
    seq: Mapped[int]
    head: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime]
    prev: Mapped[str] = mapped_column(String(64))  # digest of checkpoint n - 1
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(100))
