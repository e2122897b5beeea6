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
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flywheel_shared.events import (
    Event,
    LabelsReceived,
    ModelAliasChanged,
    ModelVersionRegistered,
    PredictionsLogged,
    encode_event,
)
from flywheel_shared.kafka.consumer import Poison, dead_letter, decode
from flywheel_shared.regcache import RegistryCache
from flywheel_shared.registry import RegistryClient, RegistryError, RegistryUnavailable
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.spec import DatasetContract, ModelSpec, UnknownFieldPolicy
from flywheel_shared.storage import ObjectStore
from flywheel_shared.topics import TopicNamer
from flywheel_shared.validation import ContractValidator, describe, label_errors

from .aliases import AliasChanges
from .brain import Brain, BrainState
from .calibrations import Calibrations, VersionRef
from .joiner import (
    JoinPartition,
    group_by_model,
    join_partition,
    parse_stored_key,
    stored_key,
)
from .metrics import DEADLETTERED, EVENT_SECONDS, JOIN, JOIN_BACKLOG, JOIN_EXPIRED, LABELS, LAG
from .openapi import document as openapi_document
from .settings import MonitorSettings
from .watch import VersionInfo, Watcher, WatchState, score_of

log = logging.getLogger(__name__)


class Unprocessable(Exception):
    """A well-formed event that can never be processed (e.g. a model the registry lacks)."""


@dataclass
class Monitor:
    """The faust app, its tables and agents, and the services they use."""

    settings: MonitorSettings
    app: faust.App
    cache: RegistryCache
    calibrations: Calibrations
    names: TopicNamer
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    started: bool = False
    watchers: dict[str, Watcher] = field(default_factory=dict)
    watch_mem: dict[str, WatchState] = field(default_factory=dict)
    brain_mem: dict[str, BrainState] = field(default_factory=dict)
    joins: dict[int, JoinPartition] = field(default_factory=dict)
    correlations: dict[tuple[str, int], str] = field(default_factory=dict)


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


def build(settings: MonitorSettings) -> Monitor:
    """Create the faust app with its topics, tables, agents, timers and web pages."""
    k = settings.kafka
    names = TopicNamer(k.topic_prefix)
    datadir = settings.data_dir / settings.worker_name
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
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

    # -- helpers ----------------------------------------------------------------------------

    async def publish(events: list[Event]) -> None:
        """Send decisions and wait for the broker's acknowledgement of each."""
        futures = []
        for ev in events:
            futures.append(await out[ev.topic].send(key=ev.key().encode(), value=encode_event(ev)))
            mon.recent.appendleft(
                {
                    "type": ev.topic,
                    "model": ev.key(),
                    "event_id": str(ev.event_id),
                    **{
                        f: getattr(ev, f)
                        for f in ("version", "decision", "reason", "features")
                        if hasattr(ev, f)
                    },
                }
            )
        for fut in futures:
            await fut

    async def send_dead_letter(event: Any, error: str, attempts: int) -> None:
        msg = event.message
        letter = dead_letter(
            group=app.conf.id,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=event.value or b"",
            error=error,
            attempts=attempts,
        )
        await (await out["deadletter"].send(key=None, value=encode_event(letter)))
        DEADLETTERED.labels(msg.topic).inc()
        log.warning(
            "record dead-lettered",
            extra={
                "topic": msg.topic,
                "partition": msg.partition,
                "offset": msg.offset,
                "error": error[:300],
            },
        )

    async def guarded(agent: str, event: Any, fn: Callable[[], Awaitable[None]]) -> None:
        """Run one message's work: retry, wait out outages, dead-letter what cannot be done."""
        attempt, backoff = 0, 0.5
        started = time.perf_counter()
        while True:
            attempt += 1
            try:
                await fn()
                EVENT_SECONDS.labels(agent).observe(time.perf_counter() - started)
                return
            except RegistryUnavailable as exc:
                log.warning("registry unavailable; waiting", extra={"error": str(exc)})
                attempt -= 1
            except Unprocessable as exc:
                await send_dead_letter(event, str(exc), attempt)
                return
            except Poison:
                raise  # not an event at all: no retry helps
            except Exception as exc:  # a bug or bad data: retry, then dead-letter
                if attempt >= settings.max_attempts:
                    log.error("handler failed, dead-lettering", exc_info=True)
                    await send_dead_letter(event, f"{type(exc).__name__}: {exc}", attempt)
                    return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def decoded(event: Any, cls: type[Event]) -> Event:
        ev = decode(event.value or b"", event.message.topic, names)  # raises Poison
        if not isinstance(ev, cls):  # its topic's class: only if the topics were miswired
            raise Poison(f"expected {cls.__name__} on {event.message.topic}, got {ev.topic}")
        return ev

    def loaded(event: Any, what: str, valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """An internal topic's message: a JSON object of the shape the monitor writes there."""
        try:
            body = orjson.loads(event.value or b"")
        except orjson.JSONDecodeError as exc:
            raise Poison(f"undecodable {what}: {exc}") from exc
        if not isinstance(body, dict) or not valid(body):
            raise Poison(f"not a {what}: {bytes(event.value or b'')[:200]!r}")
        return body

    def is_join(body: dict[str, Any]) -> bool:
        if set(body) == {"sweep"}:
            return True
        p, lab = body.get("p", []), body.get("l", [])
        return (
            bool(body)
            and set(body) <= {"p", "l"}
            and isinstance(p, list)
            and isinstance(lab, list)
            and all(isinstance(i, list) and len(i) == 8 for i in p)
            and all(isinstance(i, list) and len(i) == 4 for i in lab)
        )

    def is_signal(body: dict[str, Any]) -> bool:
        return isinstance(body.get("model"), str) and body.get("kind") in (
            "finding",
            "joined",
            "arms",
        )

    async def contract_of(dataset: str) -> DatasetContract:
        try:
            return await cache.contract(dataset)
        except RegistryUnavailable:
            raise
        except RegistryError as exc:
            if exc.status == 404:
                raise Unprocessable(f"dataset {dataset!r} is not in the registry") from exc
            raise

    checks: dict[str, tuple[ModelSpec, ContractValidator]] = {}

    def check_features(ev: PredictionsLogged, spec: ModelSpec) -> None:
        """Serving logs features that passed the contract: others come from a broken producer
        and would feed the drift detectors garbage. Missing or null features are tolerated
        (an older version may have fewer); a wrong type, range or category is not."""
        held = checks.get(ev.model)
        if held is None or held[0] is not spec:
            names = [f for f in spec.features if f in spec.dataset.fields]
            validator = ContractValidator(
                spec.dataset,
                fields=names,
                optional=names,
                unknown_fields=UnknownFieldPolicy.DROP,
            )
            held = checks[ev.model] = (spec, validator)
        outcome = held[1].validate([p.features for p in ev.predictions], keep_rejected=False)
        if outcome.rejections:
            raise Unprocessable(
                f"features break the contract of dataset '{spec.dataset.name}': "
                + describe(outcome.rejections, what="prediction")
            )

    async def spec_of(model: str) -> Any:
        try:
            return await cache.spec(model)
        except RegistryUnavailable:
            raise
        except RegistryError as exc:
            if exc.status == 404:
                raise Unprocessable(f"model {model!r} is not in the registry") from exc
            raise

    async def version_info(model: str, spec: Any, vs: set[int]) -> dict[int, VersionInfo]:
        info: dict[int, VersionInfo] = {}
        cached = cache.cached_model(model)
        canary = cached.aliases.get("canary") if cached else None
        for v in vs:
            try:
                mv = await cache.version(model, v)
            except RegistryUnavailable:
                raise
            except RegistryError as exc:
                if exc.status == 404:
                    raise Unprocessable(f"{model} version {v} is not in the registry") from exc
                raise
            ref = await cache.artifact(mv.reference_sha256) if mv.reference_sha256 else None
            cal = calibrations.ready(VersionRef(model, v, spec, ref))
            step = 0
            if canary is not None and canary.version == v and canary.weight is not None:
                weights = [s.weight for s in spec.rollout.canary_steps]
                step = min(
                    range(len(weights)), key=lambda i: abs(weights[i] - canary.weight), default=0
                )
            mon.correlations[(model, v)] = mv.correlation_id
            info[v] = VersionInfo(correlation_id=mv.correlation_id, calibration=cal, step=step)
        return info

    # -- predictions: drift, estimates, rollout evidence; repartition for the join ------------

    async def _predictions_message(event: Any) -> None:
        ev = decoded(event, PredictionsLogged)
        assert isinstance(ev, PredictionsLogged)
        spec = await spec_of(ev.model)
        check_features(ev, spec)
        # The join first: it is idempotent, so it is sent again on every redelivery.
        parts: dict[int, list[list[Any]]] = {}
        dataset = spec.dataset.name
        for p in ev.predictions:
            if p.record_id is None:
                continue
            item = [
                dataset,
                p.record_id,
                ev.model,
                p.version,
                p.route,
                score_of(p.output),
                p.at.timestamp(),
                p.prediction_id,
            ]
            parts.setdefault(join_partition(dataset, p.record_id, P), []).append(item)
        for part, items in parts.items():
            await join.send(key=None, value=orjson.dumps({"p": items}), partition=part)
        msg = event.message
        key = ev.model.encode()
        state = mon.watch_mem.get(ev.model)
        if state is None:
            raw = watch_table.get(key)
            state = WatchState.from_bytes(raw) if raw else WatchState()
        tp = str(msg.partition)
        if state.applied.get(tp, -1) >= msg.offset:
            return  # applied before a crash: the state already holds it
        info = await version_info(ev.model, spec, {p.version for p in ev.predictions})
        watcher = mon.watchers.setdefault(ev.model, Watcher(ev.model))
        result = watcher.apply(state, list(ev.predictions), spec, info)
        await publish(list(result.drift))
        sp = zlib.crc32(key) % P
        for sig in result.signals:
            await signals.send(
                key=key, value=orjson.dumps({**sig, "model": ev.model}), partition=sp
            )
        state.applied[tp] = msg.offset
        watch_table[key] = state.to_bytes()
        mon.watch_mem[ev.model] = state

    # -- labels: repartition by record id -----------------------------------------------------

    async def _labels_message(event: Any) -> None:
        ev = decoded(event, LabelsReceived)
        assert isinstance(ev, LabelsReceived)
        errors = label_errors(await contract_of(ev.dataset), ev.labels)
        if errors:
            raise Unprocessable(
                f"labels break the contract of dataset '{ev.dataset}': " + " | ".join(errors[:5])
            )
        LABELS.labels(ev.dataset).inc(len(ev.labels))
        parts: dict[int, list[list[Any]]] = {}
        for lab in ev.labels:
            if lab.record_id is None:
                continue
            observed = (lab.observed_at or ev.occurred_at).timestamp()
            parts.setdefault(join_partition(ev.dataset, lab.record_id, P), []).append(
                [ev.dataset, lab.record_id, lab.label, observed]
            )
        for part, items in parts.items():
            await join.send(key=None, value=orjson.dumps({"l": items}), partition=part)

    # -- the join -----------------------------------------------------------------------------

    def _join_state(part: int) -> JoinPartition:
        """This partition's join index, rebuilt from the stored messages when not in memory."""
        jp = mon.joins.get(part)
        if jp is not None:
            return jp
        jp = JoinPartition(part)
        stored = []
        for key, raw in join_table.items():
            p, offset = parse_stored_key(key)
            if p == part:
                stored.append((offset, raw))
        for offset, raw in sorted(stored):
            body = orjson.loads(raw)
            jp.apply(body)
            jp.stored[offset] = body["t"]
        if stored:
            log.info("join state rebuilt", extra={"partition": part, "messages": len(stored)})
        mon.joins[part] = jp
        return jp

    async def _join_message(event: Any) -> None:
        body = loaded(event, "join message", is_join)
        msg = event.message
        part = msg.partition
        jp = _join_state(part)
        if "sweep" in body:
            for offset in jp.expire(settings.join_ttl_s):
                del join_table[stored_key(part, offset)]
                JOIN_EXPIRED.inc()
            JOIN_BACKLOG.labels(str(part)).set(jp.waiting())
            return
        key = stored_key(part, msg.offset)
        if msg.offset in jp.stored:
            # Stored before a crash: send again what it produced (dropped if already seen).
            raw = join_table.get(key)
            pairs = [tuple(x) for x in orjson.loads(raw)["j"]] if raw else []
        else:
            pairs = jp.apply(body)
            n_preds, n_labels = len(body.get("p", ())), len(body.get("l", ()))
            JOIN.labels("prediction", "received").inc(n_preds)
            JOIN.labels("label", "received").inc(n_labels)
            JOIN.labels("pair", "joined").inc(len(pairs))
        for model, items in group_by_model(pairs).items():
            mkey = model.encode()
            await signals.send(
                key=mkey,
                value=orjson.dumps(
                    {"kind": "joined", "model": model, "items": items, "src": [part, msg.offset]}
                ),
                partition=zlib.crc32(mkey) % P,
            )
        if msg.offset not in jp.stored:
            latest = jp.latest(body)
            jp.stored[msg.offset] = latest
            join_table[key] = orjson.dumps({**body, "j": pairs, "t": latest})

    @app.timer(settings.join_sweep_s)
    async def sweep_tick() -> None:
        for tp in app.consumer.assignment():
            if tp.topic == join.get_topic_name():
                await join.send(key=None, value=b'{"sweep":1}', partition=tp.partition)

    # -- signals: live metrics, retrain episodes, verdicts ------------------------------------

    async def _signal_message(event: Any) -> None:
        sig = loaded(event, "signal", is_signal)
        model = sig["model"]
        spec = await spec_of(model)
        key = model.encode()
        state = mon.brain_mem.get(model)
        if state is None:
            raw = brain_table.get(key)
            state = BrainState.from_bytes(raw) if raw else BrainState()
        msg = event.message
        tp = str(msg.partition)
        if state.applied.get(tp, -1) >= msg.offset:
            return
        brain = Brain(
            model,
            hold_interval_s=settings.verdict_hold_interval_s,
            correlation_of=lambda v: _correlation(model, v),
        )
        decisions = brain.apply(state, sig, spec)
        await publish(decisions)
        state.applied[tp] = msg.offset
        brain_table[key] = state.to_bytes()
        mon.brain_mem[model] = state

    def _correlation(model: str, version: int) -> str | None:
        return mon.correlations.get((model, version))

    # -- registry events: refresh the cache, calibrate new versions ----------------------------

    async def _version_message(event: Any) -> None:
        ev = decoded(event, ModelVersionRegistered)
        assert isinstance(ev, ModelVersionRegistered)
        cache.on_event(ev)
        if ev.status == "rejected":
            return
        spec = await spec_of(ev.model)
        mv = await cache.version(ev.model, ev.version)
        ref = await cache.artifact(mv.reference_sha256) if mv.reference_sha256 else None
        # Start calibrating now, so the version is watched from its first prediction.
        calibrations.ready(VersionRef(ev.model, ev.version, spec, ref))

    async def _alias_message(event: Any) -> None:
        ev = decoded(event, ModelAliasChanged)
        assert isinstance(ev, ModelAliasChanged)
        alias_changes.apply(ev)  # once per event_id: a redelivered move is counted, skipped

    def _consumer(
        agent: str, fn: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        async def consume(stream: Any) -> None:
            async for event in stream.events():
                await process(event, agent, fn)

        consume.__name__ = consume.__qualname__ = f"on_{agent}"
        return consume

    async def process(event: Any, agent: str, fn: Callable[[Any], Awaitable[None]]) -> None:
        try:
            await guarded(agent, event, lambda: fn(event))
        except Poison as exc:
            await send_dead_letter(event, str(exc), 1)

    # One agent per input topic; each message goes through the same retry/dead-letter path.
    for source, agent, handler in (
        (predictions, "predictions", _predictions_message),
        (labels, "labels", _labels_message),
        (join, "join", _join_message),
        (signals, "signals", _signal_message),
        (versions, "versions", _version_message),
        (aliases, "aliases", _alias_message),
    ):
        app.agent(source, name=agent)(_consumer(agent, handler))

    # -- lifecycle, rebalances, lag -----------------------------------------------------------

    def _forget() -> None:
        mon.watch_mem.clear()
        mon.brain_mem.clear()
        mon.joins.clear()
        for w in mon.watchers.values():
            w.forget()

    async def _rebalanced(sender: Any, *args: Any, **kwargs: Any) -> None:
        # The tables are the truth after a rebalance: drop what this worker held in memory.
        _forget()

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

    # -- HTTP ---------------------------------------------------------------------------------

    @app.page("/healthz")
    async def healthz(self: Any, request: Any) -> Any:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: Any, request: Any) -> Any:
        problems = {}
        if not mon.started:
            problems["kafka"] = "starting (joining the group, recovering tables)"
        elif app.rebalancing:
            problems["kafka"] = "rebalancing"
        registry = cache.alive()
        if registry:
            problems["registry"] = registry
        if problems:
            return self.json({"status": "unready", "checks": problems}, status=503)
        return self.json({"status": "ready"})

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/v1/status")
    async def status(self: Any, request: Any) -> Any:
        models = {}
        for model, st in mon.watch_mem.items():
            models[model] = {
                "production": st.production,
                "versions": {
                    v: {
                        "pending_rows": len(vw.pending),
                        "calibrated": vw.detector_state is not None,
                        "last_alert_at": vw.alert_at,
                    }
                    for v, vw in st.versions.items()
                },
                "rollouts": {
                    a: {
                        "version": arm.version,
                        "step": arm.step,
                        "requests": arm.candidate.requests,
                    }
                    for a, arm in st.arms.items()
                },
            }
        assignment = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
        return self.json(
            {
                "worker": settings.worker_name,
                "assignment": assignment,
                "models": models,
                "recent_decisions": list(mon.recent),
            }
        )

    api_document = openapi_document()

    @app.page("/openapi.json")
    async def openapi(self: Any, request: Any) -> Any:
        return self.json(api_document)

    return mon
