"""Errors of the people domain (all under `core.errors.CoreError`).

PermissionDenied
└── OperatorOnly     permission_denied   only the operator may do this (set a password,
                                         add a member directly, disable an account)
"""

from __future__ import annotations

from core.errors import PermissionDenied


class OperatorOnly(PermissionDenied):
    """Only the operator (the command line without --by) may do this."""

    def __init__(self, what: str) -> None:
        super().__init__("operator", None)
        self.message = f"only the operator may {what}"
        self.args = (self.message,)
