"""The engine: migrations, UTC times on every backend, and SQLite's locking modes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from core.db import current_revisions, make_engine, migrate, read_session
from core.orgs.models import Organization
from tests.factories import make_org


def test_migrations_reach_every_head(engine: Engine) -> None:
    from alembic.script import ScriptDirectory

    from core.db import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    assert current_revisions(engine) == heads


def test_migrating_twice_is_a_no_op(engine: Engine) -> None:
    before = current_revisions(engine)
    migrate(engine)
    assert current_revisions(engine) == before


def test_times_come_back_aware_utc(session: Session) -> None:
    org = make_org(session, now=datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))))
    row = session.execute(select(Organization).where(Organization.id == org.id)).scalar_one()
    assert row.created_at == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert row.created_at.tzinfo is not None


def test_a_read_session_does_not_block_a_writer_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    with read_session(engine) as reader:
        reader.execute(select(Organization)).all()  # a read transaction stays open
        with Session(engine) as writer, writer.begin():
            writer.execute(text("UPDATE organizations SET name = name"))
    engine.dispose()


def test_naive_datetimes_are_refused(session: Session) -> None:
    org = make_org(session)
    with pytest.raises(Exception, match="naive"), session.begin():
        row = session.get(Organization, org.id)
        assert row is not None
        row.created_at = datetime(2026, 1, 1)
        session.flush()
