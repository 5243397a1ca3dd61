"""The product installs as a package: the wheel carries the migrations and the `integration`
command, which works from any directory against a fresh data directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parents[1]


def _requirements(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-r"):
            package, _, version = line.partition("==")
            assert version, f"{name}: {line!r} is not pinned"
            pins[package.split("[")[0].lower()] = version
    return pins


def test_runtime_and_test_requirements_are_pinned_and_kept_apart() -> None:
    runtime = _requirements("requirements.txt")
    dev = _requirements("requirements-dev.txt")
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    assert not {"pytest", "mypy", "ruff", "playwright", "ipykernel", "fastapi", "flask"} & set(
        runtime
    )
    assert not set(runtime) & set(dev)
    assert "requirements-dev.txt" in (ROOT / ".ci" / "run").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [
        d.split(">")[0].split("<")[0].split("[")[0].lower() for d in project["dependencies"]
    ]
    extras = [
        d.split(">")[0].split("[")[0].lower()
        for group in project["optional-dependencies"].values()
        for d in group
    ]
    # Every runtime or extra dependency the package declares is in a pinned file.
    assert set(declared) <= set(runtime)
    assert set(extras) <= set(runtime) | set(dev)
    # A service-only install stays small: the console's libraries are an extra.
    assert not {"streamlit", "pandas", "altair", "duckdb"} & set(declared)


@pytest.mark.slow
def test_the_wheel_installs_and_its_command_runs_from_anywhere(tmp_path: Path) -> None:
    # Build from a copy of what the package is made of, so the checkout stays clean and a
    # file missing from the package data cannot be found in the source tree instead.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "core", src / "core", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("integration_settings-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
    migrations = sorted(p.name for p in (ROOT / "core/migrations/versions").glob("*.py"))
    assert migrations and {f"core/migrations/versions/{m}" for m in migrations} <= names
    assert {"core/migrations/env.py", "core/migrations/script.py.mako"} <= names
    assert "core/orgs/data/common-passwords.txt.gz" in names  # the password check's list
    assert "integration = core.cli:entry_point" in entry_points
    assert not any(n.startswith(("tests/", "pages/", "bench/")) for n in names)

    # A fresh venv holding the pinned requirements: this interpreter's installed set is
    # put on its path by a .pth file (as --system-site-packages would for a base Python),
    # so nothing is downloaded; the wheel goes in with --no-deps.
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "pinned-requirements.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.pop("DATABASE_URL", None)
    env.pop("PYTHONPATH", None)
    env["INTEGRATION_DATA_DIR"] = str(tmp_path / "fresh-data")
    command = str(venv / "bin" / "integration")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command, *args],
            input=stdin,
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: integration ") and "keys" in r.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import core; print(core.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    r = run("init", "--org", "Acme", "--admin", "ann@acme.test", "--password-stdin",
            stdin="password1234\n")  # fmt: skip
    assert r.returncode != 0 and "common" in r.stderr.lower(), r.stderr  # the list was found
    r = run("init", "--org", "Acme", "--admin", "ann@acme.test", "--password-stdin",
            stdin="a-long-passw0rd\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("keys", "list", "--org", "Acme", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    r = run("migrate")
    head = ScriptDirectory(str(ROOT / "core" / "migrations")).get_current_head()
    assert r.returncode == 0 and r.stdout.strip().endswith(f" {head}"), r.stdout + r.stderr
    assert (tmp_path / "fresh-data" / "integration.db").exists()
