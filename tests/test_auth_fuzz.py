"""Thousands of hostile header values through the real server: never a 500, always a code."""

from __future__ import annotations

import contextlib
import json
import random
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.auth.contract import Code
from core.ids import random_b62
from core.keys import format as keyformat
from tests._serve_util import org_with_key, sqlite_database, start_serve

pytestmark = pytest.mark.slow

CONTRACT_CODES = {c.value for c in Code}
_CTL = set(range(0x00, 0x09)) | set(range(0x0A, 0x20)) | {0x7F}


def hostile_values(key: str, rng: random.Random) -> list[list[tuple[bytes, bytes]]]:
    """Return header lists, each one request's Authorization / X-API-Key headers."""
    kb = key.encode()
    near = [
        kb[:-1],
        kb + b"A",
        kb[:-1] + (b"A" if kb[-1:] != b"A" else b"B"),
        kb.lower(),
        kb.upper(),
        b"isk_" + kb[4:][::-1],
        (lambda body: (body + keyformat.checksum(body)).encode())("isk_" + random_b62(30)),
        kb.replace(b"_", b"-"),
        b" " + kb + b"\t",
        kb + b"\x00",
    ]
    schemes = [
        b"x-api-key",
        b"X-API-KEY",
        b"x-api-key:",
        b"xapikey",
        b"Bearer",
        b"Basic",
        b"x-api-key x-api-key",
        b"",
        b"\tx-api-key",
        b"x-api-key\t",
    ]
    out: list[list[tuple[bytes, bytes]]] = []
    for n in near:
        out.append([(b"Authorization", b"x-api-key " + n)])
        out.append([(b"X-API-Key", n)])
    for s in schemes:
        out.append([(b"Authorization", s + b" " + kb)])
    out += [
        [(b"Authorization", b"x-api-key " + kb), (b"Authorization", b"x-api-key " + kb)],
        [(b"X-API-Key", kb), (b"X-API-Key", kb)],
        [(b"X-API-Key", kb), (b"Authorization", b"x-api-key " + near[2])],
        [(b"X-API-Key", kb), (b"Authorization", b"Bearer something")],
        [(b"Authorization", b"x-api-key " + b"A" * 100_000)],
        [(b"X-API-Key", b"isk_" + b"9" * 6_000)],
        [(b"Authorization", "x-api-key isk_ключ🔑".encode())],
        [(b"X-API-Key", "ｉｓｋ＿".encode() + kb[4:])],
    ]
    every_byte = bytes(range(256))
    legal = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
    for i in range(2_500):
        size = rng.choice([1, 5, 40, 41, 200, 300, 2_000])
        alphabet = every_byte if i % 4 == 0 else legal
        value = (
            bytes(rng.choice(alphabet) for _ in range(size)).replace(b"\r", b"").replace(b"\n", b"")
        )
        name = rng.choice([b"Authorization", b"X-API-Key", b"x-api-KEY", b"AUTHORIZATION"])
        prefix = rng.choice([b"", b"x-api-key ", b"X-Api-Key  ", b"isk_"])
        headers = [(name, prefix + value)]
        if rng.random() < 0.2:
            headers.append((rng.choice([b"Authorization", b"X-API-Key"]), value[:50]))
        out.append(headers)
    return out


def send(port: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    lines = [b"GET /v1/whoami HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    raw = b"\r\n".join(lines) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close a huge request early
            sock.sendall(raw)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, body


def test_hostile_headers_never_produce_a_500(sqlite_template: Path, tmp_path: Path) -> None:
    # The server's parsing does not depend on the backend: one SQLite run is enough.
    with sqlite_database(sqlite_template, tmp_path) as (database_url, data_dir, session, pepper):
        _org, new = org_with_key(session, pepper)
    server = start_serve(database_url, data_dir)
    port = int(server.url.rsplit(":", 1)[1])
    cases = hostile_values(new.key, random.Random(20261127))
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda h: send(port, h), cases))
        assert send(port, [(b"Authorization", b"x-api-key " + new.key.encode())])[0] == 200
    finally:
        server.stop()
    parser_rejected = 0
    codes: dict[str, int] = {}
    for headers, (status, body) in zip(cases, results, strict=True):
        assert status != 0 and status < 500, (headers[0][0], status)
        if status == 400:  # refused by the HTTP parser before the app: illegal bytes only
            assert any(_CTL & set(v) or len(v) > 8_000 for _, v in headers), headers
            parser_rejected += 1
            continue
        code = json.loads(body).get("code") if status == 200 else json.loads(body)["error"]["code"]
        if status == 200:
            code = "valid"
        assert code in CONTRACT_CODES, (status, body[:200])
        codes[code] = codes.get(code, 0) + 1
        assert new.key.encode() not in body
    assert len(cases) > 2_000
    assert codes.get("malformed_credentials", 0) > 1_000 and codes.get("invalid_key", 0) > 0
    assert new.key not in server.output()
