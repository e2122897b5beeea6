"""Plain-Python rules of the registry: alias moves, verdict policy, rollback. No I/O here."""
