"""WSGI middleware (Flask, Django): authenticate every request with the key contract.

    app.wsgi_app = ApiKeyWSGIMiddleware(app.wsgi_app, verifier, exempt_paths={"/healthz"})

A valid request reaches the app with the principal in ``environ["integration.principal"]``
(Flask: ``request.environ["integration.principal"]``). Failures are answered here with
401, ``WWW-Authenticate: x-api-key`` and ``{"error": {"code", "message"}}``. WSGI servers
join repeated headers with commas, which the contract refuses as malformed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from core.auth.contract import Verdict
from core.auth.https import (
    HTTPS_REQUIRED_CODE,
    HTTPS_REQUIRED_MESSAGE,
    HTTPS_REQUIRED_STATUS,
    HttpsPolicy,
)
from core.auth.principal import (
    AUTHENTICATE_HEADER,
    DEFAULT_EXEMPT_PATHS,
    PRINCIPAL_KEY,
    UNAVAILABLE_CODE,
    UNAVAILABLE_MESSAGE,
    error_json,
    principal_of,
    verdict_body,
)
from core.auth.verifier import Verifier
from core.usage.recorder import MAX_METHOD, MAX_PATH, UsageRecorder

log = logging.getLogger("core.auth")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_REASONS = {401: "401 Unauthorized", 403: "403 Forbidden", 503: "503 Service Unavailable"}


class _Closing:
    """Wrap a response iterable so `on_close` runs when the server closes it."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class ApiKeyWSGIMiddleware:
    """Authenticate each request before the WSGI `app` sees it."""

    def __init__(
        self,
        app: WSGIApp,
        verifier: Verifier,
        *,
        exempt_paths: Iterable[str] = DEFAULT_EXEMPT_PATHS,
        recorder: UsageRecorder | None = None,
        https: HttpsPolicy | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)
        self.recorder = recorder
        self.https = https or HttpsPolicy()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in self.exempt_paths:
            return self.app(environ, start_response)
        started = time.perf_counter()
        host = environ.get("REMOTE_ADDR")
        if self.https.required:
            proto = environ.get("HTTP_X_FORWARDED_PROTO")
            if not self.https.allows(
                environ.get("wsgi.url_scheme", "http"), host, [proto] if proto else []
            ):
                self._record(environ, None, HTTPS_REQUIRED_STATUS, HTTPS_REQUIRED_CODE, started)
                body = error_json(HTTPS_REQUIRED_CODE, HTTPS_REQUIRED_MESSAGE)
                return self._refuse(start_response, HTTPS_REQUIRED_STATUS, body)
        try:
            verdict = self.verifier.verify_headers(
                environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY")
            )
        except Exception as exc:  # the database is unreachable: fail closed, say so
            log.warning("key verification unavailable: %s", type(exc).__name__)
            self._record(environ, None, 503, UNAVAILABLE_CODE, started)
            return self._refuse(
                start_response, 503, error_json(UNAVAILABLE_CODE, UNAVAILABLE_MESSAGE)
            )
        if not verdict.valid:
            self._record(environ, verdict, 401, verdict.code.value, started)
            return self._refuse(start_response, 401, verdict_body(verdict))

        environ[PRINCIPAL_KEY] = principal_of(verdict)
        if self.recorder is None:
            return self.app(environ, start_response)
        status = [500]

        def start_status(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            try:
                status[0] = int(status_line.split(" ", 1)[0])
            except ValueError:
                status[0] = 500
            if exc_info is None:
                return start_response(status_line, headers)
            return start_response(status_line, headers, exc_info)

        try:
            result = self.app(environ, start_status)
        except BaseException:
            self._record(environ, verdict, 500, "valid", started)
            raise
        return _Closing(result, lambda: self._record(environ, verdict, status[0], "valid", started))

    @staticmethod
    def _refuse(start_response: StartResponse, status: int, body: bytes) -> list[bytes]:
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status == 401:
            headers.append(AUTHENTICATE_HEADER)
        start_response(_REASONS[status], headers)
        return [body]

    def _record(
        self,
        environ: dict[str, Any],
        verdict: Verdict | None,
        status: int,
        code: str,
        started: float,
    ) -> None:
        if self.recorder is None:
            return
        self.recorder.add(
            time.perf_counter(),
            started,
            verdict.org_id if verdict else None,
            verdict.key_id if verdict else None,
            environ.get("REQUEST_METHOD", "GET")[:MAX_METHOD],
            environ.get("PATH_INFO", "")[:MAX_PATH],
            status,
            code,
            environ.get("REMOTE_ADDR"),
        )
