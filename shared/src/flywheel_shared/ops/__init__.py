"""Operator tools behind ``flywheel status`` and ``flywheel trace``.

- :mod:`.status`: one look at the whole platform: each service's health and readiness, the
  consumer lag of every consumer group, the registry's models and the latest decisions of
  the loop read back from Kafka.
- :mod:`.trace`: the timeline of one loop iteration (one ``correlation_id``) across the
  decision topics: data batch → training → version → alias moves → drift → retrain → verdict.
"""

from __future__ import annotations

#: Each service's default HTTP port (``FLYWHEEL_<SERVICE>_PORT``). Ingest and serving both
#: default to 8000: run one of them on another port (and pass its URL) to see both.
SERVICE_PORTS: dict[str, int] = {
    "ingest": 8000,
    "registry": 8100,
    "trainer": 8200,
    "serving": 8000,
    "monitor": 8400,
}
#: Where ``flywheel status`` looks for each service unless told otherwise.
DEFAULT_URLS: dict[str, str] = {n: f"http://127.0.0.1:{p}" for n, p in SERVICE_PORTS.items()}
