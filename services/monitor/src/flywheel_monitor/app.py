"""The monitor as a faust-streaming application: the only wiring.

Delivery guarantees (at-least-once in, effectively-once decisions out):

- faust commits an input offset only after the agent finished the message and after the
  producer flushed everything sent so far (table changelogs and our own output), so a crash
  loses nothing: it re-reads from the last commit;
- each per-model state value (``watch`` and ``brain`` tables) carries the last input offset it
  applied, so a message re-read after a crash is not applied twice;
- decisions (``drift.detected``, ``retrain.requested``, ``rollout.verdict``) are sent and
  acknowledged *before* the state that remembers them is written, and carry deterministic
  event ids: a re-run re-sends the same ids, which consumers drop;
- a message that is not an event of its topic (or, on the internal topics, not a message of
  theirs), or whose features or labels break their dataset contract, is dead-lettered at once;
  one whose handling keeps failing is dead-lettered after ``max_attempts``; a registry outage
  is waited out (the partition pauses, nothing is dead-lettered). faust's ``exactly_once``
  guarantee is not used (open bugs).

Topology: ``predictions`` (keyed by model) → drift, estimates, rollout evidence; both
``predictions`` and ``data.labels`` are repartitioned by record id onto ``monitor.join`` for
the label join; every per-model signal goes to ``monitor.signals`` (keyed by model), whose agent
holds the live label metrics, the retrain episodes and the rollout verdicts.

This module only wires: what each agent does with a message is in :mod:`.handlers`, the one
retry/dead-letter path every message takes in :mod:`.dispatch`, decoding in :mod:`.messages`,
registry lookups in :mod:`.lookups`, the HTTP pages in :mod:`.web`.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from flywheel_shared.regcache import RegistryCache
from flywheel_shared.registry import RegistryClient
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.storage import ObjectStore
from flywheel_shared.topics import TopicNamer

from .aliases import AliasChanges
from .calibrations import Calibrations
from .dispatch import Dispatcher
from .handlers import Handlers
from .lookups import Lookups, letter_redactor
from .messages import Unprocessable
from .metrics import LAG
from .runtime import Monitor
from .settings import MonitorSettings
from .web import add_pages

__all__ = [
    "TABLES",
    "Monitor",
    "Unprocessable",
    "app_id",
    "broker_credentials",
    "build",
    "changelog_topics",
    "internal_topics",
]

log = logging.getLogger(__name__)

TABLES = ("watch", "join", "brain")


def app_id(settings: MonitorSettings) -> str:
    """The faust application id (= consumer group; prefixes the changelog topics)."""
    return f"{settings.kafka.topic_prefix}-{settings.app_id}"


def internal_topics(settings: MonitorSettings) -> tuple[str, str]:
    """The repartition topics: the label join (by record id), the signals (by model)."""
    prefix = settings.kafka.topic_prefix
    return f"{prefix}.monitor.join.v1", f"{prefix}.monitor.signals.v1"


def changelog_topics(settings: MonitorSettings) -> list[str]:
    """The tables' changelog topics, as faust names them."""
    return [f"{app_id(settings)}-{t}-changelog" for t in TABLES]


def broker_credentials(k: KafkaSettings) -> Any:
    """The shared Kafka security settings in faust's terms (None: PLAINTEXT)."""
    protocol = k.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = k.ssl_context() if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=k.sasl_password,
        ssl_context=context,
        mechanism=k.sasl_mechanism or "PLAIN",
    )


def _faust_app(settings: MonitorSettings) -> faust.App:
    """The faust app: broker, RocksDB tables, at-least-once processing, raw bytes, web server."""
    k = settings.kafka
    datadir = settings.data_dir / settings.worker_name
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id(settings),
        broker=[f"kafka://{h.strip()}" for h in k.bootstrap.split(",")],
        store="rocksdb://",
        datadir=str(datadir),
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=k.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=k.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(1.0, k.session_timeout_ms / 3000),
        broker_max_poll_records=500,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=k.max_request_bytes,
        producer_max_request_size=k.max_request_bytes,
        producer_compression_type=None if k.compression == "none" else k.compression,
        producer_linger_ms=k.linger_ms,
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_port=settings.port,
        web_bind=settings.host,
        web_host=settings.host,
        autodiscover=False,
        topic_allow_declare=True,
        stream_wait_empty=False,
        broker_credentials=broker_credentials(k),
    )


def build(settings: MonitorSettings) -> Monitor:
    """Create the faust app with its topics, tables, agents, timers and web pages."""
    names = TopicNamer(settings.kafka.topic_prefix)
    app = _faust_app(settings)
    client = RegistryClient(settings.registry_url, settings.registry_token, actor="monitor")
    cache = RegistryCache(client, refresh_s=settings.registry_refresh_s, name="monitor-registry")
    calibrations = Calibrations(
        ObjectStore(settings.storage.uri),
        backend=settings.drift_backend,
        seed=settings.drift_seed,
        n_bootstrap=settings.drift_n_bootstrap,
        workers=settings.calibration_workers,
    )
    mon = Monitor(settings, app, cache, calibrations, names)
    alias_changes = AliasChanges(cache, group=app.conf.id, topic=names("model.alias.changed"))
    P = settings.partitions

    def topic(logical: str) -> faust.TopicT:
        return app.topic(names(logical))

    predictions = topic("predictions")
    labels = topic("data.labels")
    versions = topic("model.version.registered")
    aliases = topic("model.alias.changed")
    out = {
        name: topic(name)
        for name in ("drift.detected", "retrain.requested", "rollout.verdict", "deadletter")
    }
    join = app.topic(
        internal_topics(settings)[0],
        partitions=P,
        internal=True,
        key_serializer="raw",
        value_serializer="raw",
    )
    signals = app.topic(
        internal_topics(settings)[1],
        partitions=P,
        internal=True,
        key_serializer="raw",
        value_serializer="raw",
    )
    watch_table, join_table, brain_table = (
        app.Table(t, partitions=P, key_type=bytes, value_type=bytes) for t in TABLES
    )
    dispatch = Dispatcher(
        app.conf.id, out, mon.recent, settings.max_attempts, redact=letter_redactor(cache)
    )
    handlers = Handlers(
        mon,
        dispatch,
        Lookups(cache, calibrations, mon.correlations),
        alias_changes,
        join=join,
        signals=signals,
        watch_table=watch_table,
        join_table=join_table,
        brain_table=brain_table,
    )

    # One agent per input topic; each message goes through the same retry/dead-letter path.
    for source, agent, handler in (
        (predictions, "predictions", handlers.predictions),
        (labels, "labels", handlers.labels),
        (join, "join", handlers.join_message),
        (signals, "signals", handlers.signal),
        (versions, "versions", handlers.version),
        (aliases, "aliases", handlers.alias),
    ):
        app.agent(source, name=agent)(dispatch.agent(agent, handler))

    @app.timer(settings.join_sweep_s)
    async def sweep_tick() -> None:
        for tp in app.consumer.assignment():
            if tp.topic == join.get_topic_name():
                await join.send(key=None, value=b'{"sweep":1}', partition=tp.partition)

    # -- lifecycle, rebalances, lag -----------------------------------------------------------

    async def _rebalanced(sender: Any, *args: Any, **kwargs: Any) -> None:
        # The tables are the truth after a rebalance: drop what this worker held in memory.
        mon.forget()

    app.on_partitions_revoked.connect(_rebalanced)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(_rebalanced)  # type: ignore[arg-type]

    @app.task
    async def _started() -> None:
        # faust runs app tasks once the tables are recovered (the Worker owns its own
        # on_startup_finished hook, so this is where "ready" is known).
        cache.start()
        mon.started = True
        log.info("monitor ready", extra={"worker": settings.worker_name})

    @app.timer(5.0)
    async def _lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            committed = getattr(consumer, "_committed_offset", {}).get(tp)  # no public accessor
            if hw is not None and committed is not None:
                LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - committed))

    add_pages(mon)
    return mon
