"""The OpenAPI document of the HTTP service.

Each operation lists every answer the service gives, and each error answer the exact codes
it may carry (an ``enum``), so a client can switch on them and a conformance test
(schemathesis against a live `serve`) fails on any answer or code left out. A test also
holds the paths and methods here equal to the service's routes.
"""

from __future__ import annotations

from typing import Any

# The contract's verdict codes (core.auth.contract.Code), the failures first.
KEY_FAILURES = [
    "missing_credentials",
    "malformed_credentials",
    "invalid_key",
    "key_expired",
    "key_revoked",
]
VERDICT_CODES = ["valid", *KEY_FAILURES]
VERIFY_MAX_BODY = 8192  # core.api.app.MAX_BODY
EVENTS_MAX_BODY = 64 * 1024 + 4096  # core.api.events.MAX_EVENT_BODY


def _error(description: str, *codes: str, path: bool = False) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"enum": list(codes)}, "message": {"type": "string"}},
    }
    if path:
        error["properties"]["path"] = {
            "type": "string",
            "description": "JSON Pointer into the request of what failed, e.g. /data/amount",
        }
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["error"], "properties": {"error": error}}
            }
        },
    }


def _json(description: str, schema: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        **extra,
    }


_CHALLENGE = {
    "WWW-Authenticate": {"schema": {"type": "string", "enum": ["x-api-key"]}, "required": True}
}
_BEARER = {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}, "required": True}}
_HTTPS = _error("The request did not arrive over HTTPS (--require-https)", "https_required")
_SERVICE_TOKEN = _error(
    "Missing or wrong `Authorization: Bearer SERVICE_TOKEN`", "invalid_service_token"
)
_SERVICE_TOKEN["headers"] = _BEARER

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Integration Settings service",
        "version": "1",
        "description": (
            "Authenticate requests with `Authorization: x-api-key YOUR_KEY` "
            "(or `X-API-Key: YOUR_KEY`). Failures answer 401 with "
            "`WWW-Authenticate: x-api-key` and an error object. Services in other languages "
            "verify keys and publish the platform's events with the service token "
            "(`Authorization: Bearer INTEGRATION_SERVICE_TOKEN`). Every error answers "
            '`{"error": {"code", "message"}}`; an unknown path answers 404 `not_found`, '
            "another method 405 `method_not_allowed` with `Allow`."
        ),
    },
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "apiKeyAuthorization": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "`x-api-key YOUR_KEY` (the scheme is case-insensitive)",
            },
            "serviceToken": {"type": "http", "scheme": "bearer"},
        },
        "schemas": {
            "Principal": {
                "type": "object",
                "required": ["org", "key_id", "key_name"],
                "properties": {
                    "org": {"type": "string"},
                    "key_id": {"type": "string"},
                    "key_name": {"type": "string"},
                },
            },
            "VerifyRequest": {
                "type": "object",
                "required": ["key"],
                "description": (
                    f"At most {VERIFY_MAX_BODY} bytes. Any string is judged: an over-long or "
                    "malformed key gets the verdict `malformed_credentials`."
                ),
                "properties": {"key": {"type": "string"}},
                "example": {"key": "isk_d9Otaa00Q4XVmRVGDC8OjyjtzIDGbm3Et16e"},
            },
            "VerifyResult": {
                "type": "object",
                "required": ["valid", "code", "message"],
                "properties": {
                    "valid": {"type": "boolean"},
                    "code": {"type": "string", "enum": VERDICT_CODES},
                    "message": {"type": "string"},
                    "key_id": {"type": "string"},
                    "org": {"type": "string"},
                    "key_name": {"type": "string"},
                },
            },
            "EventRequest": {
                "type": "object",
                "required": ["org", "type", "data"],
                "additionalProperties": False,
                "description": (
                    f"At most {EVENTS_MAX_BODY} bytes; `data` must match the type's JSON "
                    "Schema (see `python -m core events list --json`)."
                ),
                "properties": {
                    "org": {
                        "type": "string",
                        "minLength": 1,
                        "description": "the organization's id or name",
                    },
                    "type": {
                        "type": "string",
                        "minLength": 1,
                        "description": "a registered platform event type",
                    },
                    "data": {"type": "object"},
                    "idempotency_key": {
                        "type": ["string", "null"],
                        "minLength": 1,
                        "maxLength": 255,
                        "description": "the same key within 24 hours publishes once; "
                        "null or absent: no key",
                    },
                },
                "example": {
                    "org": "Acme",
                    "type": "invoice.paid",
                    "data": {"invoice_id": "inv_42", "amount": 4200},
                    "idempotency_key": "inv_42-paid",
                },
            },
            "EventAccepted": {
                "type": "object",
                "required": ["event_id", "message_ids", "duplicate"],
                "properties": {
                    "event_id": {"type": "string"},
                    "message_ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "one per subscribed, enabled endpoint (may be empty)",
                    },
                    "duplicate": {
                        "type": "boolean",
                        "description": "true: the answer of the first request with this key",
                    },
                },
            },
            "Health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string"},
                    "usage": {
                        "type": ["object", "null"],
                        "description": "usage-log counters (recorded, written, overflow, …)",
                    },
                    "feed": {
                        "type": ["object", "null"],
                        "description": "key-change feed state (ok, applied, failures, …)",
                    },
                },
            },
        },
    },
    "paths": {
        "/v1/whoami": {
            "get": {
                "operationId": "whoami",
                "summary": "The organization and key the request's API key belongs to",
                "security": [{"apiKey": []}, {"apiKeyAuthorization": []}],
                "responses": {
                    "200": _json("The key is valid", "Principal"),
                    "401": {
                        **_error("No valid key", *KEY_FAILURES),
                        "headers": _CHALLENGE,
                    },
                    "403": _HTTPS,
                    "503": _error(
                        "Keys cannot be checked now (the database or the key-change feed is "
                        "unreachable): refused rather than trusted; retry",
                        "auth_unavailable",
                    ),
                },
            }
        },
        "/v1/keys/verify": {
            "post": {
                "operationId": "verifyKey",
                "summary": "Verify a key for a service written in another language",
                "security": [{"serviceToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/VerifyRequest"}
                        }
                    },
                },
                "responses": {
                    "200": _json("The verdict for the key, valid or not", "VerifyResult"),
                    "400": _error('The body is not {"key": "..."}', "invalid_request"),
                    "401": _SERVICE_TOKEN,
                    "403": _HTTPS,
                    "413": _error(f"The body is over {VERIFY_MAX_BODY} bytes", "request_too_large"),
                    "503": _error(
                        "No INTEGRATION_SERVICE_TOKEN is configured, or keys cannot be checked "
                        "now (retry)",
                        "verify_disabled",
                        "auth_unavailable",
                    ),
                },
            }
        },
        "/v1/events": {
            "post": {
                "operationId": "publishEvent",
                "summary": "Publish a platform event to an organization's subscribed endpoints",
                "security": [{"serviceToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EventRequest"}
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        "Accepted: written to the outbox; the workers deliver it, signed",
                        "EventAccepted",
                    ),
                    "400": _error("The body is not the request's JSON shape", "invalid_request"),
                    "401": _SERVICE_TOKEN,
                    "403": _HTTPS,
                    "404": _error("No organization has that id or name", "unknown_organization"),
                    "409": _error(
                        "The idempotency_key was used in the last 24 hours for another event",
                        "idempotency_conflict",
                    ),
                    "413": _error(f"The body is over {EVENTS_MAX_BODY} bytes", "request_too_large"),
                    "422": _error(
                        "The type is not registered, the data fails its schema (path names "
                        "what failed) or is not allowed, or the idempotency_key is malformed",
                        "unknown_event_type",
                        "invalid_event_data",
                        "invalid_input",
                        path=True,
                    ),
                    "503": _error(
                        "No INTEGRATION_SERVICE_TOKEN is configured, or the database is "
                        "unreachable (retry)",
                        "events_disabled",
                        "events_unavailable",
                        "storage_error",
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness, usage-log counters (overflow included) and feed state",
                "responses": {"200": _json("The service is up", "Health")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
}
