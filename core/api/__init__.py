"""The HTTP service: the verify endpoint and the reference API protected by the middleware."""

from core.api.app import ServiceApp, build_app
from core.api.config import ServiceConfig

__all__ = ["ServiceApp", "ServiceConfig", "build_app"]
