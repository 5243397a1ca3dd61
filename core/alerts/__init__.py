"""Expiry and endpoint-health alerts: scans, the console banner's open alerts, e-mail."""

from core.alerts.service import AlertView, open_alerts, scan_endpoints, scan_expiry

__all__ = ["AlertView", "open_alerts", "scan_endpoints", "scan_expiry"]
