"""After creating, rolling, verifying and revoking keys, no full key is stored anywhere."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, MetaData, select
from sqlalchemy.orm import Session

from core.audit import reports
from core.auth.verifier import Verifier
from core.config import Settings
from core.keys import service as keys
from tests.factories import make_org


def _all_database_text(engine: Engine) -> str:
    metadata = MetaData()
    metadata.reflect(engine)
    chunks = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                chunks.append(json.dumps([str(v) for v in row]))
    return "\n".join(chunks)


def test_no_full_key_in_the_database_or_the_data_directory(
    engine: Engine,
    session: Session,
    settings: Settings,
    pepper: bytes,
    now: datetime,
    tmp_path: Path,
) -> None:
    org = make_org(session, now=now)
    secrets = []
    with session.begin():
        a = keys.create_key(session, org.id, org.admin, name="a", expires=30, pepper=pepper)
        b = keys.create_key(session, org.id, org.member, name="b", expires=60, pepper=pepper)
    secrets += [a.key, b.key]
    verifier = Verifier(engine, pepper)
    for key in secrets:
        assert verifier.verify_key(key).valid
    with session.begin():
        rolled, _ = keys.roll_key(session, org.admin, a.id, grace="1h", pepper=pepper)
        keys.revoke_key(session, org.member, b.id, reason="rotation drill")
    secrets.append(rolled.key)
    assert verifier.verify_key(rolled.key).valid
    with session.begin():
        reports.export(session, org.id, org.admin, "jsonl", settings.data_dir / "a.jsonl")
    engine.dispose()

    assert _all_database_text(engine)  # the scan saw the rows
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    if settings.database_url.startswith("sqlite"):
        assert any(p.name == "integration.db" for p in files)
    blobs = [p.read_bytes() for p in files]
    text = _all_database_text(engine)
    for key in secrets:
        random_part = key[4:34]  # even without prefix or checksum
        assert key not in text and random_part not in text
        for blob in blobs:
            assert key.encode() not in blob and random_part.encode() not in blob
