"""Console sign-in: first-run setup, password sign-in with per-account rate limiting,
and server-side sessions that survive a browser refresh."""
