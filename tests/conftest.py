"""Fixtures: real databases on both backends, a clock, and the product's own services.

Every test that takes `engine` (or anything built on it) runs twice: on a SQLite file and
on PostgreSQL. The PostgreSQL run gets its own database, migrated once per test session
and emptied after each test. Without a reachable server those runs are skipped with the
reason, unless INTEGRATION_REQUIRE_POSTGRES=1 (as in CI), where they fail instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from core.audit import keyring
from core.config import Settings
from core.db import Base, make_engine, migrate

PG_ADMIN_URL = os.environ.get(
    "INTEGRATION_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]


def _pg_admin() -> Engine | None:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        engine.dispose()
        return None
    return engine


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id, with the library's cheapest parameters so tests stay fast."""
    from argon2 import PasswordHasher
    from argon2.profiles import CHEAPEST

    from core.orgs import users

    monkeypatch.setattr(users, "hasher", PasswordHasher.from_parameters(CHEAPEST))


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to the newest schema."""
    admin = _pg_admin()
    if admin is None:
        reason = f"no PostgreSQL server reachable at {PG_ADMIN_URL}"
        if os.environ.get("INTEGRATION_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (INTEGRATION_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    name = f"integ_test_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file each test copies (migrating once is the slow part)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


def _empty_all_tables(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        conn.execute(
            text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, migrated database on the test's backend."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "data" / "integration.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("pg_database_url")
    yield url
    cleaner = make_engine(url, pool=False)
    try:
        _empty_all_tables(cleaner)
    finally:
        cleaner.dispose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    """Settings for the test's database; the pepper is the embedded default's file."""
    return Settings(data_dir=data_dir, database_url=database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url)
    keyring.bind(engine, keyring.AuditKeyring.from_settings(settings))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def pepper(settings: Settings) -> bytes:
    return settings.pepper


@pytest.fixture
def now() -> datetime:
    """A fixed 'now' for tests that pass time in."""
    return datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
