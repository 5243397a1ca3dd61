"""A real HTTP/1.1 webhook receiver on 127.0.0.1 for tests and the benchmark.

It speaks just enough HTTP (keep-alive, Content-Length bodies) to answer each request
the way a `behaviour(received, index)` callable says: a status, headers, a body (any
bytes, any size), a delay, or a connection reset. Run as a script it serves until
SIGTERM and then writes one JSON line per request (webhook-id, receipt time) to a file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REASONS = {200: "OK", 204: "No Content", 301: "Moved", 410: "Gone", 429: "Too Many", 500: "Error"}


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Behaviour = Callable[[Received, int], Reply]


class Receiver:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour: Behaviour = behaviour or (lambda _r, _i: Reply())
        self.requests: list[Received] = []
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> Receiver:
        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            self._ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            server = self._server

            async def close() -> None:
                server.close()
                for task, writer in list(self._conns.items()):
                    writer.transport.abort()
                    task.cancel()
                await asyncio.gather(*self._conns, return_exceptions=True)
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.headers.get("webhook-id", "") for r in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                got = Received(method, path, headers, body, time.time())
                with self._lock:
                    index = len(self.requests)
                    self.requests.append(got)
                reply = self.behaviour(got, index)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if reply.reset:
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                reason = REASONS.get(reply.status, "Status")
                writer.write(
                    f"HTTP/1.1 {reply.status} {reason}\r\nContent-Length: {len(reply.body)}\r\n"
                    f"{extra}\r\n".encode()
                    + reply.body
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._conns.pop(task, None)
            if not writer.transport.is_closing():
                writer.close()


def main() -> None:
    """Serve on 127.0.0.1 (port printed on stdout) until SIGTERM; write receipts to argv[1]."""
    out_path = sys.argv[1]
    receiver = Receiver()

    async def run() -> None:
        await receiver.serve()
        print(f"PORT {receiver.port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(run())
    with open(out_path, "w") as fh:
        for r in receiver.requests:
            fh.write(
                json.dumps({"id": r.headers.get("webhook-id"), "at": r.at, "body": r.body.decode()})
                + "\n"
            )


def webhook_config(**overrides: object) -> object:
    """A WebhookConfig for tests: plain http and loopback allowed, short timeouts."""
    import os

    from core.webhooks.config import WebhookConfig

    values: dict[str, object] = {
        "secret_key": os.urandom(32),
        "allow_http": True,
        "allow_private": True,
        "connect_timeout": 2.0,
        "total_timeout": 3.0,
    }
    values.update(overrides)
    return WebhookConfig(**values)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    main()
