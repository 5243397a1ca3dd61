"""The authentication contract, as a table, and a property: no header value raises."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.auth.contract import (
    HTTP_STATUS,
    MESSAGES,
    Code,
    Verdict,
    extract_key,
    key_from_text,
)
from core.auth.verifier import Verifier
from core.db import make_engine
from core.keys import format as keyformat
from core.keys import service as keys
from tests.factories import make_org

KEY = "isk_" + "a" * 30 + keyformat.checksum("isk_" + "a" * 30)

# (authorization header values, x-api-key header values, expected: a code or "KEY")
HEADER_TABLE = [
    (None, None, Code.MISSING_CREDENTIALS),
    ([], [], Code.MISSING_CREDENTIALS),
    (f"x-api-key {KEY}", None, "KEY"),
    (f"X-API-KEY {KEY}", None, "KEY"),
    (f"X-Api-Key {KEY}", None, "KEY"),
    (f"  x-api-key   {KEY}  ", None, "KEY"),
    (None, KEY, "KEY"),
    (None, f"  {KEY} ", "KEY"),
    (f"x-api-key {KEY}", KEY, "KEY"),  # both agree
    (f"Bearer {KEY}", KEY, "KEY"),  # another scheme is ignored beside X-API-Key
    (f"x-api-key {KEY}", "isk_other", Code.MALFORMED_CREDENTIALS),  # both disagree
    (f"Bearer {KEY}", None, Code.MALFORMED_CREDENTIALS),
    (f"Basic {KEY}", None, Code.MALFORMED_CREDENTIALS),
    (KEY, None, Code.MALFORMED_CREDENTIALS),  # no scheme
    ("x-api-key", None, Code.MALFORMED_CREDENTIALS),  # empty key
    ("x-api-key ", None, Code.MALFORMED_CREDENTIALS),
    ("", None, Code.MALFORMED_CREDENTIALS),
    ("   ", None, Code.MALFORMED_CREDENTIALS),
    (None, "", Code.MALFORMED_CREDENTIALS),
    (f"x-api-key {KEY} extra", None, Code.MALFORMED_CREDENTIALS),
    (f"x-api-key {KEY[:-1]}!", None, Code.MALFORMED_CREDENTIALS),
    (f"x-api-key {KEY}\x00", None, Code.MALFORMED_CREDENTIALS),
    ("x-api-key isk_ünïcode", None, Code.MALFORMED_CREDENTIALS),
    ("x-api-key " + "a" * 300, None, Code.MALFORMED_CREDENTIALS),  # over-long
    (None, "a" * 10_000, Code.MALFORMED_CREDENTIALS),
    ([f"x-api-key {KEY}", f"x-api-key {KEY}"], None, Code.MALFORMED_CREDENTIALS),  # repeated
    (None, [KEY, KEY], Code.MALFORMED_CREDENTIALS),
    (f"x-api-key {KEY}".encode(), None, "KEY"),  # raw bytes, as ASGI servers pass them
    (b"x-api-key \xff\xfe", None, Code.MALFORMED_CREDENTIALS),
]


@pytest.mark.parametrize(("authorization", "x_api_key", "expected"), HEADER_TABLE)
def test_header_contract(authorization: object, x_api_key: object, expected: object) -> None:
    result = extract_key(authorization, x_api_key)  # type: ignore[arg-type]
    if expected == "KEY":
        assert result == KEY
    else:
        assert not isinstance(result, str)
        assert result.code is expected


@pytest.mark.parametrize(
    ("candidate", "code"),
    [
        (KEY[:-1] + ("b" if KEY[-1] != "b" else "c"), Code.INVALID_KEY),  # checksum fails
        ("isk_short", Code.INVALID_KEY),
        ("ghp_" + "a" * 36, Code.INVALID_KEY),
        (keyformat.generate(), Code.INVALID_KEY),  # good shape, unknown
    ],
)
def test_look_alike_keys_are_invalid(
    engine: Engine, pepper: bytes, candidate: str, code: Code
) -> None:
    assert Verifier(engine, pepper).verify_headers(f"x-api-key {candidate}").code is code


def test_a_bad_checksum_never_reaches_the_database() -> None:
    from sqlalchemy import create_engine

    unreachable = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    verifier = Verifier(unreachable, b"pepper-for-this-test")
    assert verifier.verify_key(KEY[:-1] + "Z").code is Code.INVALID_KEY
    assert verifier.verify_key("isk_" + "b" * 36).code is Code.INVALID_KEY


def test_every_code_has_a_message_and_status() -> None:
    for code in Code:
        assert MESSAGES[code].endswith(".")
        assert HTTP_STATUS[code] == (200 if code is Code.VALID else 401)


def test_full_contract_against_a_real_key(
    engine: Engine, session: Session, pepper: bytes, now: datetime
) -> None:
    org = make_org(session, now=now)
    with session.begin():
        live = keys.create_key(
            session, org.id, org.admin, name="live", expires=30, pepper=pepper, now=now
        )
        gone = keys.create_key(
            session, org.id, org.admin, name="gone", expires=30, pepper=pepper, now=now
        )
        old = keys.create_key(
            session,
            org.id,
            org.admin,
            name="old",
            expires=1,
            pepper=pepper,
            now=now - timedelta(days=2),
        )
        keys.revoke_key(session, org.admin, gone.id, now=now)
    verifier = Verifier(engine, pepper, clock=lambda: now.timestamp())
    ok = verifier.verify_headers(f"x-api-key {live.key}")
    assert ok.valid and ok.key_id == live.id and ok.org_id == org.id and ok.key_name == "live"
    assert verifier.verify_headers(None, gone.key).code is Code.KEY_REVOKED
    assert verifier.verify_headers(f"X-API-KEY {old.key}").code is Code.KEY_EXPIRED
    assert ok.to_dict()["valid"] is True and "key" not in ok.to_dict()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"x-api-key {KEY}\n", "KEY"),
        (f"Authorization: x-api-key {KEY}", "KEY"),
        (f"X-API-Key: {KEY}", "KEY"),
        (f"{KEY}\n", "KEY"),
        ("", Code.MISSING_CREDENTIALS),
        (f"Bearer {KEY}", Code.MALFORMED_CREDENTIALS),
    ],
)
def test_cli_input_forms(text: str, expected: object) -> None:
    result = key_from_text(text)
    if expected == "KEY":
        assert result == KEY
    else:
        assert not isinstance(result, str) and result.code is expected


header_values = st.one_of(
    st.none(),
    st.text(max_size=400),
    st.binary(max_size=400),
    st.lists(st.one_of(st.text(max_size=80), st.binary(max_size=80)), max_size=3),
    st.builds(lambda s: f"x-api-key {s}", st.text(max_size=60)),
    st.builds(lambda s: "x-api-key isk_" + s, st.text(alphabet="abcXYZ019_", max_size=40)),
)


@pytest.fixture(scope="module")
def template_verifier(sqlite_template: Path) -> Iterator[Verifier]:
    """A verifier over a migrated, empty database (module-scoped for hypothesis)."""
    engine = make_engine(f"sqlite:///{sqlite_template}", immediate=False)
    yield Verifier(engine, b"property-test-pepper")
    engine.dispose()


@settings(max_examples=400, deadline=None)
@given(authorization=header_values, x_api_key=header_values)
def test_no_header_value_makes_verification_raise(
    template_verifier: Verifier, authorization: object, x_api_key: object
) -> None:
    verdict = template_verifier.verify_headers(authorization, x_api_key)  # type: ignore[arg-type]
    found = extract_key(authorization, x_api_key)  # type: ignore[arg-type]
    # the database is empty: the contract's own verdict, or an unknown key
    assert verdict == (found if isinstance(found, Verdict) else Verdict(Code.INVALID_KEY))
