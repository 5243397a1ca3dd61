"""Alerts raised to an organization: one row per subject, kind and lead time, ever."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # The exactly-once guarantee: a second scanner's insert of the same alert is a no-op.
        UniqueConstraint("kind", "subject_id", "occurrence"),
        Index("ix_alerts_org_id_created_at", "org_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(32))
    # Lead time in days for api_key.expiring, 0 for api_key.expired, and for endpoint
    # alerts the start (epoch seconds) of the failure run or of the disabling.
    occurrence: Mapped[int] = mapped_column(BigInteger, default=0)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    message: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    # False when a later lead time was already due (the scan was down): recorded, not sent.
    notified: Mapped[bool] = mapped_column(default=True)
    emailed_at: Mapped[datetime | None]
