"""The README's quick start, run for real: init, create a key, verify it, revoke it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture
def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(DATABASE_URL=database_url, INTEGRATION_DATA_DIR=str(data_dir))
    return env


@pytest.mark.slow
def test_quick_start_from_init_to_revocation(cli_env: dict[str, str]) -> None:
    r = run(
        ["init", "--org", "Acme", "--admin", "ann@acme.test", "--password-stdin"],
        cli_env,
        "a-long-passw0rd\n",
    )
    assert r.returncode == 0, r.stderr
    r = run(
        [
            "keys",
            "create",
            "--org",
            "Acme",
            "--name",
            "Production Server",
            "--expires",
            "30",
            "--by",
            "ann@acme.test",
            "--json",
        ],
        cli_env,
    )
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert {"id", "key", "name", "masked", "expires_at"} <= created.keys()

    r = run(["keys", "verify", "--json"], cli_env, f"x-api-key {created['key']}\n")
    verdict = json.loads(r.stdout)
    assert r.returncode == 0 and verdict["valid"] is True and verdict["key_id"] == created["id"]

    r = run(
        ["keys", "revoke", created["id"], "--by", "ann@acme.test", "--reason", "leaked"], cli_env
    )
    assert r.returncode == 0, r.stderr
    r = run(["keys", "verify", "--json"], cli_env, created["key"])
    assert r.returncode == 1 and json.loads(r.stdout)["code"] == "key_revoked"

    r = run(["keys", "list", "--org", "Acme", "--json"], cli_env)
    (row,) = json.loads(r.stdout)
    assert row["status"] == "revoked" and row["masked"] == created["masked"]
    assert created["key"] not in r.stdout

    r = run(["audit", "verify", "--org", "Acme"], cli_env)
    assert r.returncode == 0 and "intact" in r.stdout


def test_errors_are_one_line_without_traceback(cli_env: dict[str, str]) -> None:
    r = run(["keys", "list", "--org", "Nope"], cli_env)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: organization 'Nope' not found"
    assert "Traceback" not in r.stderr
