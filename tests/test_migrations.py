"""The migration history is one line: plain `alembic upgrade head` has one head to reach."""

from __future__ import annotations

from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from core import db


def test_the_history_has_exactly_one_head() -> None:
    script = ScriptDirectory(str(db.MIGRATIONS_DIR))
    heads = script.get_heads()
    assert len(heads) == 1, f"several migration heads {heads}: add a merge revision"


def test_a_migrated_database_is_at_the_one_head(engine: Engine) -> None:
    script = ScriptDirectory(str(db.MIGRATIONS_DIR))
    db.migrate(engine)
    assert db.current_revisions(engine) == {script.get_current_head()}
