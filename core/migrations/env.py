"""Alembic environment: runs against the engine `core.db.migrate` hands over, or DATABASE_URL."""

from __future__ import annotations

from alembic import context

import core.models  # noqa: F401  (registers every table on Base.metadata)
from core.config import Settings
from core.db import Base, make_engine

config = context.config
engine = config.attributes.get("engine") or make_engine(Settings.from_env().database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
