"""keyed audit chains: a key id per event, signed checkpoints; existing chains sealed as they are

Every organization whose chain holds events gets one keyed `audit.chain_upgraded` event
that names the count and head of its unkeyed events, and a signed checkpoint of it. The
audit key comes from the environment (INTEGRATION_AUDIT_KEY or data/audit_key).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import core.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("ts", core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("prev", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_audit_checkpoints_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
        sa.UniqueConstraint("org_id", "n", name=op.f("uq_audit_checkpoints_org_id_n")),
    )
    _seal_existing_chains(op.get_bind())


def _seal_existing_chains(conn: sa.Connection) -> None:
    """Append a keyed seal and a signed checkpoint to every chain that has events."""
    from core.audit import checkpoints
    from core.audit.canonical import jcs
    from core.audit.keyring import keyring_for_bind
    from core.audit.models import AuditCheckpoint, AuditEvent
    from core.audit.service import event_hash

    orgs = conn.execute(
        sa.text("SELECT id, audit_seq, audit_head FROM organizations WHERE audit_seq > 0")
    ).all()
    if not orgs:
        return
    keyring = keyring_for_bind(conn)
    now = datetime.now(UTC)
    events = sa.table(
        "audit_events",
        *(
            sa.column(c)
            for c in (
                "org_id", "seq", "ts", "actor_type", "actor_id", "actor_email", "action",
                "target_type", "target_id", "details", "prev_hash", "hash", "key_id",
            )
        ),  # fmt: skip
    )
    events.c.ts.type = core.db.UTCDateTime()
    events.c.details.type = core.db.JSONType
    cps = sa.table(
        "audit_checkpoints",
        *(sa.column(c) for c in ("org_id", "n", "seq", "head", "ts", "prev", "key_id", "signature")),
    )
    cps.c.ts.type = core.db.UTCDateTime()
    for org_id, seq, head in orgs:
        event = AuditEvent(
            org_id=org_id,
            seq=seq + 1,
            ts=now,
            actor_type="system",
            actor_id=None,
            actor_email="migration",
            action="audit.chain_upgraded",
            target_type=None,
            target_id=None,
            details={"legacy_events": seq, "legacy_head": head, "to_key": keyring.current.id},
            prev_hash=head,
            key_id=keyring.current.id,
        )
        event.hash = event_hash(event, keyring)
        conn.execute(
            events.insert().values(
                **{c.name: getattr(event, c.name) for c in events.columns}
            )
        )
        cp = AuditCheckpoint(
            org_id=org_id,
            n=1,
            seq=event.seq,
            head=event.hash,
            ts=now,
            prev=checkpoints.GENESIS,
            key_id=keyring.current.id,
            signature="",
        )
        cp.signature = keyring.current.sign(jcs(checkpoints.statement(cp)))
        conn.execute(cps.insert().values(**{c.name: getattr(cp, c.name) for c in cps.columns}))
        conn.execute(
            sa.text("UPDATE organizations SET audit_seq = :s, audit_head = :h WHERE id = :o"),
            {"s": event.seq, "h": event.hash, "o": org_id},
        )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("key_id")
