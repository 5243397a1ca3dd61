"""Every table, imported in one place so Alembic and tests see the whole schema."""

from core.audit.models import AuditEvent
from core.keys.models import ApiKey, KeyChange
from core.orgs.models import Membership, Organization, User

__all__ = ["ApiKey", "AuditEvent", "KeyChange", "Membership", "Organization", "User"]
