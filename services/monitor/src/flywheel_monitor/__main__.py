"""``python -m flywheel_monitor``: create the topics it reads, then run one faust worker.

Run several (same ``FLYWHEEL_MONITOR_APP_ID``, different ``FLYWHEEL_MONITOR_WORKER_NAME`` and
port) and they split the partitions; SIGTERM drains, commits and leaves the group.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiokafka.errors import KafkaError

from flywheel_shared.kafka.admin import ensure_topics
from flywheel_shared.kafka.problems import connection_problem
from flywheel_shared.logging import setup_logging

from .settings import MonitorSettings

log = logging.getLogger("flywheel_monitor")

TOPICS = (
    "predictions",
    "data.labels",
    "model.version.registered",
    "model.alias.changed",
    "drift.detected",
    "retrain.requested",
    "rollout.verdict",
    "deadletter",
)


async def _internal_topics(settings: MonitorSettings) -> None:
    """Create the repartition and changelog topics before the worker joins its group.

    faust would create them itself, but only after the first partition assignment, which
    then misses them and needs another rebalance.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from .app import changelog_topics, internal_topics

    k = settings.kafka
    admin = AIOKafkaAdminClient(**k.client_kwargs(), client_id="flywheel-monitor-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, settings.partitions, k.replication_factor, topic_configs=configs)
            for names, configs in (
                (internal_topics(settings), {"retention.ms": str(7 * 86400 * 1000)}),
                (changelog_topics(settings), {"cleanup.policy": "compact"}),
            )
            for name in names
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def _ensure_topics(settings: MonitorSettings) -> None:
    # faust creates its internal topics itself, but not the ones it reads: without them it
    # would log "topic not found" forever and consume nothing.
    delay = 0.5
    while True:
        try:
            await ensure_topics(settings.kafka, TOPICS)
            await _internal_topics(settings)
            return
        except (KafkaError, OSError) as exc:
            # "Unable to bootstrap" hides the cause (refused, wrong password, TLS): ask.
            problem = await connection_problem(settings.kafka) or repr(exc)
            log.warning("kafka not reachable yet, retrying", extra={"error": problem})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def main() -> None:
    """Run a monitor worker in the foreground."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = MonitorSettings()
    setup_logging("monitor", settings.log_level, json=settings.log_json)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_ensure_topics(settings))

    import faust

    # Heavy imports before the event loop runs: the drift backends import them lazily, and an
    # import inside an agent blocks every partition of the worker for seconds.
    import river.drift  # noqa: F401
    import scipy.stats  # noqa: F401

    from .drift import alibi_available

    if settings.drift_backend == "alibi" or (
        settings.drift_backend == "auto" and alibi_available()
    ):
        from .drift import alibi_backend  # noqa: F401

    from .app import build

    monitor = build(settings)
    worker = faust.Worker(
        monitor.app,
        loglevel=settings.log_level,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    finally:
        monitor.calibrations.shutdown()


if __name__ == "__main__":
    main()
