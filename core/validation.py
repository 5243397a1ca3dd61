"""Checks shared by every service for text that comes from outside."""

from __future__ import annotations

import re

from core.errors import ValidationError

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

PASSWORD_MIN = 12
PASSWORD_MAX = 128
PASSWORD_RULES = (
    f"Passwords need {PASSWORD_MIN}–{PASSWORD_MAX} characters, with at least one letter "
    "and one digit or symbol."
)


def display_text(value: object, field: str, *, max_len: int = 100) -> str:
    """Return `value` trimmed if it is 1–max_len printable characters; else raise."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text", field=field)
    text = value.strip()
    if not text:
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(text) > max_len:
        raise ValidationError(
            f"{field} must be at most {max_len} characters (got {len(text)})", field=field
        )
    if not text.isprintable():
        raise ValidationError(f"{field} must contain only printable characters", field=field)
    return text


def email(value: object) -> str:
    """Return the address lower-cased if it looks like one; else raise ValidationError."""
    if not isinstance(value, str):
        raise ValidationError("email must be text", field="email")
    text = value.strip().lower()
    if len(text) > 254 or not _EMAIL.match(text):
        raise ValidationError(f"{value!r} is not a valid email address", field="email")
    return text


def password(value: object) -> str:
    """Return the password if it follows PASSWORD_RULES; else raise saying what is needed."""
    if not isinstance(value, str) or not (PASSWORD_MIN <= len(value) <= PASSWORD_MAX):
        raise ValidationError(PASSWORD_RULES, field="password")
    has_letter = any(c.isalpha() for c in value)
    has_other = any(not c.isalpha() for c in value)
    if not (has_letter and has_other) or not value.isprintable():
        raise ValidationError(PASSWORD_RULES, field="password")
    return value
