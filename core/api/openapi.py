"""The OpenAPI document of the HTTP service."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_CODES = [
    "valid",
    "missing_credentials",
    "malformed_credentials",
    "invalid_key",
    "key_expired",
    "key_revoked",
]


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Integration Settings service",
        "version": "1",
        "description": (
            "Authenticate requests with `Authorization: x-api-key YOUR_KEY` "
            "(or `X-API-Key: YOUR_KEY`). Failures answer 401 with "
            "`WWW-Authenticate: x-api-key` and an error object."
        ),
    },
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "serviceToken": {"type": "http", "scheme": "bearer"},
        },
        "schemas": {
            "Error": _ERROR,
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
                "properties": {"key": {"type": "string", "maxLength": 4096}},
            },
            "EventRequest": {
                "type": "object",
                "required": ["org", "type", "data"],
                "additionalProperties": False,
                "properties": {
                    "org": {"type": "string", "description": "the organization's id or name"},
                    "type": {"type": "string", "description": "a registered event type"},
                    "data": {"type": "object"},
                    "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            },
            "EventAccepted": {
                "type": "object",
                "required": ["event_id", "message_ids", "duplicate"],
                "properties": {
                    "event_id": {"type": "string"},
                    "message_ids": {"type": "array", "items": {"type": "string"}},
                    "duplicate": {"type": "boolean"},
                },
            },
            "VerifyResult": {
                "type": "object",
                "required": ["valid", "code", "message"],
                "properties": {
                    "valid": {"type": "boolean"},
                    "code": {"type": "string", "enum": _CODES},
                    "message": {"type": "string"},
                    "key_id": {"type": "string"},
                    "org": {"type": "string"},
                    "key_name": {"type": "string"},
                },
            },
        },
    },
    "paths": {
        "/v1/whoami": {
            "get": {
                "summary": "The organization and key the request's API key belongs to",
                "security": [{"apiKey": []}],
                "responses": {
                    "200": {
                        "description": "The key is valid",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Principal"}
                            }
                        },
                    },
                    "401": _err("No valid key: missing, malformed, invalid, expired, revoked"),
                    "403": _err("https_required: the request did not arrive over HTTPS"),
                },
            }
        },
        "/v1/keys/verify": {
            "post": {
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
                    "200": {
                        "description": "The verdict (valid or not) for the key",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/VerifyResult"}
                            }
                        },
                    },
                    "400": _err('invalid_request: the body is not {"key": "..."}'),
                    "401": _err("invalid_service_token: missing or wrong service token"),
                    "413": _err("request_too_large"),
                    "503": _err("verify_disabled: no INTEGRATION_SERVICE_TOKEN configured"),
                },
            }
        },
        "/v1/events": {
            "post": {
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
                    "202": {
                        "description": "Accepted: written to the outbox for delivery",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/EventAccepted"}
                            }
                        },
                    },
                    "400": _err("invalid_request: the body is not the request's shape"),
                    "401": _err("invalid_service_token: missing or wrong service token"),
                    "404": _err("unknown_organization"),
                    "409": _err("idempotency_conflict: the key was used for another event"),
                    "413": _err("request_too_large"),
                    "422": _err(
                        "unknown_event_type, invalid_event_data (with path), invalid_input"
                    ),
                    "503": _err("events_disabled, events_unavailable"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness, usage-log counters (overflow included) and feed state",
                "responses": {"200": {"description": "The service is up"}},
            }
        },
    },
}
