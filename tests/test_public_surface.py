"""`core`'s public surface: sorted, complete, importable, and free of Streamlit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_every_name_exists() -> None:
    assert core.__all__ == sorted(core.__all__)
    for name in core.__all__:
        assert hasattr(core, name), name


def test_core_never_imports_streamlit() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "core").rglob("*.py")
        if "import streamlit" in p.read_text() or "from streamlit" in p.read_text()
    ]
    assert offenders == []


def test_importing_core_does_not_load_streamlit() -> None:
    code = "import core, sys; print('streamlit' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
