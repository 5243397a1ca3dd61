"""Helpers for tests that run `python -m core serve` as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from core.config import Settings
from core.db import make_engine
from core.keys import service as keys
from core.keys.service import NewKey
from core.usage.recorder import UsageRecorder
from tests.factories import OrgFixture, make_org

ROOT = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = "svc-token-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_serve(
    database_url: str,
    data_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    ca: Path | None = None,
) -> Server:
    """Start `python -m core serve` on a free port; return once /healthz answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    env.update(
        DATABASE_URL=database_url,
        INTEGRATION_DATA_DIR=str(data_dir),
        INTEGRATION_SERVICE_TOKEN=SERVICE_TOKEN,
    )
    env.update(extra_env or {})
    port = free_port()
    log = data_dir / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    scheme = "https" if "--ssl-certfile" in args else "http"
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}: {server.output()}")
        try:
            verify = ssl.create_default_context(cafile=ca) if ca else True
            if httpx.get(server.url + "/healthz", timeout=1, verify=verify).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"serve did not start: {server.output()}")


def org_with_key(
    session: Session,
    pepper: bytes,
    *,
    name: str = "Acme",
    expires: str | datetime = "30",
    now: datetime | None = None,
) -> tuple[OrgFixture, NewKey]:
    """Create an organization and one key; return both."""
    org = make_org(session, name, now=now)
    with session.begin():
        new = keys.create_key(
            session,
            org.id,
            org.admin,
            name="Production Server",
            expires=expires,
            pepper=pepper,
            now=now,
        )
    return org, new


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"x-api-key {key}"}


def wait_recorded(recorder: UsageRecorder, n: int, timeout: float = 5.0) -> None:
    """Wait until the recorder has queued `n` records (each is made after its response)."""
    deadline = time.monotonic() + timeout
    while recorder.snapshot()["recorded"] < n and time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def sqlite_database(template: Path, tmp_path: Path) -> Iterator[tuple[str, Path, Session, bytes]]:
    """A migrated SQLite database (copied from the session's template) for tests whose
    subject does not depend on the backend; yield (url, data dir, session, pepper)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    path = data_dir / "integration.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield url, data_dir, session, Settings(data_dir, url).pepper
    finally:
        engine.dispose()
