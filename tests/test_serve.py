"""`python -m core serve` as a real subprocess, driven with httpx over loopback."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.keys import service as keys
from core.usage.schema import glob_pattern, usage_root
from tests._serve_util import ROOT, SERVICE_TOKEN, auth, org_with_key, start_serve

pytestmark = pytest.mark.slow


def parquet_rows(data_dir: Path, where: str = "true") -> int:
    if not list(usage_root(data_dir).glob("date=*/*.parquet")):
        return 0
    sql = (
        f"SELECT count(*) FROM read_parquet('{glob_pattern(data_dir)}', hive_partitioning=true) "
        f"WHERE {where}"
    )
    return int(duckdb.sql(sql).fetchall()[0][0])


def test_whoami_verify_health_and_openapi(
    database_url: str, data_dir: Path, session: Session, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    server = start_serve(database_url, data_dir)
    try:
        with httpx.Client(base_url=server.url) as c:
            r = c.get("/v1/whoami", headers=auth(new.key))
            assert r.json() == {"org": org.id, "key_id": new.id, "key_name": "Production Server"}
            r = c.get("/v1/whoami", headers={"Authorization": "Bearer x"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "x-api-key"
            assert r.json()["error"]["code"] == "malformed_credentials"

            svc = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
            r = c.post("/v1/keys/verify", json={"key": new.key}, headers=svc)
            assert r.status_code == 200
            assert r.json() == {
                "valid": True,
                "code": "valid",
                "message": "The API key is valid.",
                "key_id": new.id,
                "org": org.id,
                "key_name": "Production Server",
            }
            r = c.post(
                "/v1/keys/verify",
                json={"key": new.key[:-1] + ("0" if new.key[-1] != "0" else "1")},
                headers=svc,
            )
            assert r.status_code == 200
            assert r.json() == {
                "valid": False,
                "code": "invalid_key",
                "message": "The API key is not valid.",
            }
            r = c.post("/v1/keys/verify", json={"key": new.key})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_service_token"
            r = c.post(
                "/v1/keys/verify",
                json={"key": new.key},
                headers={"Authorization": "Bearer " + "x" * 30},
            )
            assert r.status_code == 401
            r = c.post("/v1/keys/verify", content=b"{not json", headers=svc)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
            r = c.post("/v1/keys/verify", content=b"x" * 10_000, headers=svc)
            assert r.status_code == 413

            health = c.get("/healthz").json()
            assert health["status"] == "ok" and health["usage"]["overflow"] == 0
            assert health["feed"]["ok"] is True
            stats = subprocess.run(
                [sys.executable, "-m", "core", "usage", "stats", "--server", server.url],
                env={**os.environ, "INTEGRATION_DATA_DIR": str(data_dir)},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert stats.returncode == 0, stats.stderr
            assert "overflow=0" in stats.stdout and "write_failed=0" in stats.stdout
            doc = c.get("/openapi.json").json()
            assert {"/v1/whoami", "/v1/keys/verify", "/healthz"} <= set(doc["paths"])
            assert c.get("/nowhere", headers=auth(new.key)).status_code == 404
            r = c.post("/v1/whoami", headers=auth(new.key))
            assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    finally:
        assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    assert new.key not in server.output()
    # whoami ok + refused, 2 verify calls with a verdict, 404 and 405 with a valid key; the
    # routes report their own status to the middleware (no `send` wrapper): each is right
    rows = duckdb.sql(
        f"SELECT method, path, status, code FROM read_parquet('{glob_pattern(data_dir)}',"
        " hive_partitioning=true) ORDER BY ts"
    ).fetchall()
    assert rows == [
        ("GET", "/v1/whoami", 200, "valid"),
        ("GET", "/v1/whoami", 401, "malformed_credentials"),
        ("POST", "/v1/keys/verify", 200, "valid"),
        ("POST", "/v1/keys/verify", 200, "invalid_key"),
        ("GET", "/nowhere", 404, "valid"),
        ("POST", "/v1/whoami", 405, "valid"),
    ]
    assert keys.list_keys(session, org.id, org.admin)[0].usage_count == 4


def test_a_key_expiring_between_two_requests_is_refused(
    database_url: str, data_dir: Path, session: Session, pepper: bytes
) -> None:
    server = start_serve(database_url, data_dir, args=("--no-usage",))
    # the key is made once the server answers, so a slow start cannot outlive it
    expires = utcnow().replace(microsecond=0) + timedelta(seconds=3)
    _org, new = org_with_key(session, pepper, expires=expires)
    try:
        assert httpx.get(server.url + "/v1/whoami", headers=auth(new.key)).status_code == 200
        time.sleep(max(0.0, expires.timestamp() - time.time()) + 0.01)
        r = httpx.get(server.url + "/v1/whoami", headers=auth(new.key))
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
    finally:
        server.stop()


def _load(url: str, key: str, stop: threading.Event, log: list[float]) -> None:
    """Send requests until the server goes away; log the time each response arrived."""
    with httpx.Client(base_url=url, timeout=5) as c:
        while not stop.is_set():
            try:
                r = c.get("/v1/whoami", headers=auth(key))
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                log.append(time.time())


def _run_load(
    url: str, key: str, seconds: float
) -> tuple[threading.Event, list[float], list[threading.Thread]]:
    stop = threading.Event()
    log: list[float] = []
    threads = [threading.Thread(target=_load, args=(url, key, stop, log)) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    return stop, log, threads


def test_sigterm_during_load_loses_no_usage_record(
    database_url: str, data_dir: Path, session: Session, pepper: bytes
) -> None:
    org, new = org_with_key(session, pepper)
    server = start_serve(
        database_url, data_dir, extra_env={"INTEGRATION_USAGE_FLUSH_SECONDS": "30"}
    )
    stop, log, threads = _run_load(server.url, new.key, 1.5)
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(10)
    assert len(log) > 50
    assert parquet_rows(data_dir, "code = 'valid' AND status = 200") == len(log)
    assert keys.list_keys(session, org.id, org.admin)[0].usage_count == len(log)


def test_kill_9_loses_at_most_the_last_flush_interval(
    database_url: str, data_dir: Path, session: Session, pepper: bytes
) -> None:
    interval = 0.2
    _org, new = org_with_key(session, pepper)
    server = start_serve(
        database_url, data_dir, extra_env={"INTEGRATION_USAGE_FLUSH_SECONDS": str(interval)}
    )
    stop, log, threads = _run_load(server.url, new.key, 2.0)
    killed_at = time.time()
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    files = sorted(usage_root(data_dir).glob("date=*/*.parquet"))
    assert files
    for f in files:  # every visible file is whole
        pq.read_table(f)
    recorded = parquet_rows(data_dir, "status = 200")
    # Answered more than one flush interval (plus time to write) before the kill: on disk.
    surely_flushed = sum(1 for t in log if t < killed_at - interval - 0.5)
    in_flight = 4  # one request per client thread may be recorded but never answered
    assert surely_flushed <= recorded <= len(log) + in_flight, (surely_flushed, len(log))


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"INTEGRATION_SERVICE_TOKEN": "short"}, "INTEGRATION_SERVICE_TOKEN must be at least"),
        (("--ssl-certfile", "cert.pem"), {}, "--ssl-certfile and --ssl-keyfile go together"),
        (("--trusted-proxy", "proxy.local"), {}, "is not an IP address or network"),
        ((), {"INTEGRATION_USAGE_FLUSH_SECONDS": "0"}, "must be between"),
        ((), {"INTEGRATION_REQUIRE_HTTPS": "maybe"}, "INTEGRATION_REQUIRE_HTTPS must be"),
    ],
)
def test_serve_refuses_bad_options_with_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_")}
    full_env.update(INTEGRATION_DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    full_env.update(env)
    r = subprocess.run(
        [sys.executable, "-m", "core", "serve", "--port", "1", *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr


def test_serve_over_tls_with_https_required(
    database_url: str, data_dir: Path, session: Session, pepper: bytes, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    _org, new = org_with_key(session, pepper)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--require-https", "--no-usage")
    server = start_serve(database_url, data_dir, args=args, ca=cert)
    try:
        tls = ssl.create_default_context(cafile=cert)
        r = httpx.get(server.url + "/v1/whoami", headers=auth(new.key), verify=tls)
        assert r.status_code == 200 and r.json()["key_id"] == new.id
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not even spoken on this port
            httpx.get(server.url.replace("https:", "http:") + "/v1/whoami", headers=auth(new.key))
    finally:
        server.stop()
    assert new.key not in server.output()
