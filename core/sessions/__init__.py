"""Console sessions (HttpOnly cookie, handoff, idle and absolute timeouts), throttled
password sign-in with burst-aggregated audit, and first-run setup."""
