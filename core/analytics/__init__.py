"""Analytics shared by the console and the notebooks: DuckDB over the usage log and audit log.

Every function is scoped to one organization and returns a pandas DataFrame.

Usage log (Parquet; `data_dir` is the settings' data directory):
    calls_over_time, top_keys, error_rates, latency_percentiles, anomalies, key_usage
Usage of no organization (the operator's view): unattributed_refusals
Keys (SQL rows checked against the actor's role, joined with the log):
    key_inventory, idle_keys, unused_keys, expiring_keys, usage_mismatches, stale_key_calls
Audit log (SQL rows read through SQLAlchemy, grouped in DuckDB):
    audit_events, audit_table, audit_activity, signin_failures
Helpers for notebooks: organizations, duckdb_connection (UTC), usage_files, has_usage,
usage_problems (corrupt or truncated files, skipped everywhere), day_window
"""

from core.analytics._duck import (
    COUNTED_CODES,
    GRAINS,
    day_window,
    has_usage,
    usage_files,
    usage_problem_notice,
    usage_problems,
)
from core.analytics._duck import connect as duckdb_connection
from core.analytics.audit import audit_activity, audit_events, audit_table, signin_failures
from core.analytics.keys import (
    expiring_keys,
    idle_keys,
    key_inventory,
    stale_key_calls,
    unused_keys,
    usage_mismatches,
)
from core.analytics.orgs import organizations
from core.analytics.usage import (
    anomalies,
    calls_over_time,
    error_rates,
    key_usage,
    latency_percentiles,
    top_keys,
    unattributed_refusals,
)
from core.usage.schema import glob_pattern as usage_glob

__all__ = [
    "COUNTED_CODES",
    "GRAINS",
    "anomalies",
    "audit_activity",
    "audit_events",
    "audit_table",
    "calls_over_time",
    "day_window",
    "duckdb_connection",
    "error_rates",
    "expiring_keys",
    "has_usage",
    "idle_keys",
    "key_inventory",
    "key_usage",
    "latency_percentiles",
    "organizations",
    "signin_failures",
    "stale_key_calls",
    "top_keys",
    "unattributed_refusals",
    "unused_keys",
    "usage_files",
    "usage_glob",
    "usage_mismatches",
    "usage_problem_notice",
    "usage_problems",
]
