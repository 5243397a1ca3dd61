"""Audit errors, below `core.errors.CoreError`:

Conflict
└── ChainBroken   audit_chain_broken   an export of a chain that fails verification
"""

from __future__ import annotations

from core.errors import Conflict


class ChainBroken(Conflict):
    code = "audit_chain_broken"

    def __init__(self, description: str, first_bad_seq: int | None) -> None:
        super().__init__(
            f"{description}; the export was refused (pass allow_broken / --allow-broken to "
            "export it marked as broken on every page)"
        )
        self.first_bad_seq = first_bad_seq
