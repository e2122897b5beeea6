"""Plain-Python rules of the registry: alias checks and moves, where a registration starts
its rollout, verdict policy, rollback. No I/O here."""
