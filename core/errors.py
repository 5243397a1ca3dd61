"""The one exception tree of `core`.

    CoreError                      code
    ├── ValidationError            invalid_input         input refused; message says what is allowed
    │   ├── UnknownEventType       unknown_event_type    not a registered platform event type
    │   └── InvalidEventData       invalid_event_data    event data fails its type's JSON Schema
    ├── NotFound                   not_found             not in any organization you belong to
    │   └── UnknownOrganization    unknown_organization  no organization has that id or name
    ├── Conflict                   conflict              the object's state forbids the change
    │   └── IdempotencyConflict    idempotency_conflict  key reused (24 h) for another event
    ├── PermissionDenied           permission_denied     role lacks a permission (names it)
    ├── AuthenticationFailed       authentication_failed sign-in refused (bad email or password)
    ├── RateLimited                rate_limited          too many attempts; retry_after seconds
    └── StorageError               storage_error         the database refused or failed

Every error carries a stable machine `code` and a message safe to show a user: no
secret, no SQL, no stack.
"""

from __future__ import annotations


class CoreError(Exception):
    """Root of every error `core` raises on purpose."""

    code = "core_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class ValidationError(CoreError):
    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownEventType(ValidationError):
    code = "unknown_event_type"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="type")


class InvalidEventData(ValidationError):
    """`path` is a JSON Pointer into the request (``/data/amount``) naming what failed."""

    code = "invalid_event_data"

    def __init__(self, message: str, *, path: str = "/data") -> None:
        super().__init__(message, field="data")
        self.path = path

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "path": self.path}


class NotFound(CoreError):
    code = "not_found"


class UnknownOrganization(NotFound):
    code = "unknown_organization"


class Conflict(CoreError):
    code = "conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class PermissionDenied(CoreError):
    code = "permission_denied"

    def __init__(self, permission: str, role: str | None) -> None:
        who = f"role '{role}'" if role else "a non-member"
        super().__init__(f"permission '{permission}' is required; {who} does not have it")
        self.permission = permission
        self.role = role


class AuthenticationFailed(CoreError):
    code = "authentication_failed"


class RateLimited(CoreError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(CoreError):
    code = "storage_error"
