"""Both notebooks execute top to bottom, without errors and without a network: on the demo
data set, on an organization with no keys, and with a past END date; they are committed
with their outputs stripped."""

from __future__ import annotations

import gc
import json
import os
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from sqlalchemy.orm import Session

from core.config import Settings
from core.db import make_engine, migrate
from core.demo import DemoOptions, build_demo
from core.orgs import service as orgs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["usage_analysis.ipynb", "audit_trail.ipynb"]
EMPTY_ORG = "Empty Co"
PAST_END = (datetime.now(UTC) - timedelta(days=20)).date().isoformat()
CASES = {"demo": {}, "empty": {"ORGANIZATION": EMPTY_ORG}, "past": {"END": PAST_END}}


def _collect_kernel_sockets() -> None:
    """Finalize the kernel client's ZeroMQ sockets now, rather than in some later test.

    jupyter_client leaves its channel sockets for the garbage collector, whose ResourceWarning
    would otherwise surface as an error in whichever test happens to trigger collection.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A demo data set on SQLite (the embedded default), ending today, as a kernel would see it."""
    data_dir = tmp_path_factory.mktemp("nbdata")
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/integration.db")
    engine = make_engine(settings.database_url)
    migrate(engine)
    build_demo(engine, settings, DemoOptions(orgs=2, keys=10, events=60_000, days=60, seed=5))
    with Session(engine) as s, s.begin():  # an organization with people but no key, no call
        orgs.create_organization(s, EMPTY_ORG, "owner@empty.example", "correct-horse-42")
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(INTEGRATION_DATA_DIR=str(data_dir), DATABASE_URL=settings.database_url)
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernelspec that runs this interpreter (the project's venv), whatever else is installed."""
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / "integration-venv"
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Integration venv", "language": "python"})
    )
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert any(c.cell_type == "markdown" and "Conclusions" in c.source for c in nb.cells)


def _with_parameters(nb: nbformat.NotebookNode, values: dict[str, str]) -> None:
    """Set parameters the way papermill would: by assignment in the parameters cell."""
    cell = nb.cells[1]
    assert "parameters" in cell.metadata.get("tags", [])
    for name, value in values.items():
        lines = cell.source.splitlines()
        hits = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        assert hits, name
        lines[hits[0]] = f"{name} = {value!r}"
        cell.source = "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, case, demo_env, kernel_specs) -> None:
    path = ROOT / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    _with_parameters(nb, CASES[case])
    km = KernelManager(kernel_name="integration-venv", kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb, km=km, timeout=240, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute(env=demo_env)
    finally:
        del client, km
        _collect_kernel_sockets()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    text = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    rich = json.dumps([o.get("data", {}) for o in outputs])
    assert "cdn.jsdelivr" not in rich and "vegaEmbed" not in rich  # nothing loads from a network
    charts = [o for o in outputs if "image/png" in o.get("data", {})]
    if case == "empty":
        assert f"{EMPTY_ORG} (" in text and "No data:" in text
    else:
        assert len(charts) >= 3, text  # charts rendered to PNG in the kernel
        assert "Northwind Traders" in text or "Globex Logistics" in text
    if case == "past":
        assert f"to {PAST_END} (UTC" in text
    if name == "usage_analysis.ipynb":
        assert "Roll now" in text and "Tell the owners" in text and "Probing from outside" in text
        if case == "demo":
            assert "× its baseline" in text  # the planted spike is in the default window
            assert "was refused" in text and "@" in text.split("Tell the owners")[1]
        if case == "empty":
            assert f"No data: {EMPTY_ORG} has no API keys" in text
            assert f"No data: {EMPTY_ORG} made no calls in the period" in text
    else:
        assert "Accounts under attack" in text and "Evidence:" in text
        if case != "empty":
            assert "PASS: audit chain intact" in text
