"""The trainer's data plane: triggers in, runs out (events + registered versions)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from uuid import UUID

from prometheus_client import Counter, Histogram

from flywheel_shared.datasets import read_manifest
from flywheel_shared.events import (
    BatchCommitted,
    Event,
    RetrainRequested,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
    derived_id,
)
from flywheel_shared.kafka.consumer import Delivery, TransientError
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.logging import correlation as log_correlation
from flywheel_shared.regcache import RegistryCache
from flywheel_shared.registry import Lineage, RegistryClient, RegistryUnavailable
from flywheel_shared.snapshots import build_snapshot, write_snapshot
from flywheel_shared.spec import ModelSpec
from flywheel_shared.storage import ObjectStore

from .domain.triggers import TrainedState, enough_new_rows, stale
from .runner import Executor, WarmWorker
from .scheduler import Scheduler, Trigger
from .worker import TrainJob, TrainResult

log = logging.getLogger(__name__)
RUNS = Counter("flywheel_trainer_runs_total", "Training runs by outcome", ["model", "outcome"])
GATES = Counter("flywheel_trainer_gate_decisions_total", "Gate decisions", ["model", "decision"])
DURATION = Histogram(
    "flywheel_trainer_run_seconds",
    "Training run duration (worker process, end to end)",
    ["model"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
TRIGGERS = Counter("flywheel_trainer_triggers_total", "Triggers accepted", ["model", "kind"])


def covered_rows(lineage: Lineage) -> int:
    """Rows of the dataset a version's snapshot accounted for: those it trained on and those
    it left out (retention); rows beyond these are new data."""
    return lineage.snapshot_rows + lineage.excluded_rows


class TrainerService:
    """Decides when to train, runs trainings, reports them."""

    def __init__(
        self,
        registry: RegistryClient,
        producer: EventProducer,
        store: ObjectStore,
        *,
        storage_uri: str,
        registry_token: str | None = None,
        spec_refresh_s: float = 30.0,
        retry_s: float = 5.0,
        executor: Executor | None = None,
    ) -> None:
        self.registry = registry
        self.producer = producer
        self.store = store
        self.storage_uri = storage_uri
        self.registry_token = registry_token
        self.cache = RegistryCache(registry, refresh_s=spec_refresh_s, name="trainer-registry")
        self._state: dict[str, TrainedState] = {}
        self.scheduler = Scheduler(self._run, self._cooldown, retry_s=retry_s)
        # Local: the next training's process, imported ahead of time; or Kubernetes Jobs.
        self.workers: Executor = executor or WarmWorker()

    # -- specs and state ------------------------------------------------------------------

    async def specs(self, *, refresh: bool = False) -> dict[str, ModelSpec]:
        """Model specs from the registry (cached for ``spec_refresh_s``, and through outages)."""
        try:
            models = await self.cache.models(fresh=refresh)
        except RegistryUnavailable as exc:
            raise TransientError(f"registry unreachable and no specs cached: {exc}") from exc
        return {m.name: m.spec for m in models if m.spec is not None}

    def _cooldown(self, model: str) -> float:
        info = self.cache.cached_model(model)
        return info.spec.training.cooldown_s if info and info.spec else 0.0

    async def trained_state(self, model: str) -> TrainedState:
        """What the model's latest registered version was trained on."""
        if model not in self._state:
            try:
                versions = await self.registry.list_versions(model)
            except RegistryUnavailable as exc:
                raise TransientError(str(exc)) from exc
            latest = max(versions, key=lambda v: v.version, default=None)
            self._state[model] = (
                TrainedState(covered_rows(latest.lineage), latest.created_at)
                if latest
                else TrainedState()
            )
            if latest is not None:
                # The cooldown outlives a restart: what is left of it since the last version.
                created = latest.created_at
                created = created if created.tzinfo else created.replace(tzinfo=UTC)
                since = (datetime.now(UTC) - created).total_seconds()
                left = self._cooldown(model) - since
                if left > 0:
                    self.scheduler.cool_down_for(model, left)
        return self._state[model]

    # -- triggers -------------------------------------------------------------------------

    async def on_event(self, event: Event, delivery: Delivery) -> None:
        """Consumer handler for ``data.batch.committed`` and ``retrain.requested``."""
        if isinstance(event, BatchCommitted):
            await self.on_batch_committed(event, delivery)
        elif isinstance(event, RetrainRequested):
            await self.on_retrain_requested(event, delivery)

    async def on_batch_committed(self, event: BatchCommitted, delivery: Delivery) -> None:
        """New data: train every model of this dataset that has enough new rows."""
        specs = await self.specs()
        for name, spec in specs.items():
            if spec.dataset.name != event.dataset:
                continue
            state = await self.trained_state(name)
            if enough_new_rows(spec.training, state, event.total_rows) or self.scheduler.busy(name):
                # While a run is in progress, new data coalesces into its one follow-up run.
                self._submit(name, "new_data", event, delivery)
                self.scheduler.poke(name)  # a retrain waiting for fresh data may go now

    async def on_retrain_requested(self, event: RetrainRequested, delivery: Delivery) -> None:
        """Drift, decay or a person asked for a retrain."""
        specs = await self.specs()
        if event.model not in specs:
            specs = await self.specs(refresh=True)
        if event.model not in specs:
            raise ValueError(f"retrain requested for unknown model '{event.model}'")
        kind = "manual" if event.requested_by not in ("monitor", "trainer") else "retrain"
        min_rows = 0
        fresh = specs[event.model].training.fresh_rows
        if kind == "retrain" and fresh:
            # Retraining at once would fit the data the drifting model was trained on: wait
            # until ``fresh_rows`` rows arrived after the request.
            dataset = specs[event.model].dataset.name
            manifest = await asyncio.to_thread(read_manifest, self.store, dataset)
            min_rows = manifest.total_rows + fresh
        self._submit(event.model, kind, event, delivery, min_rows=min_rows)

    async def check_staleness(self) -> None:
        """Train models past their ``max_staleness_s`` that have any new rows."""
        now = datetime.now(UTC)
        for name, spec in (await self.specs()).items():
            if spec.training.max_staleness_s is None or self.scheduler.busy(name):
                continue
            manifest = await asyncio.to_thread(read_manifest, self.store, spec.dataset.name)
            if stale(spec.training, await self.trained_state(name), now, manifest.total_rows):
                cid = derived_id("staleness", name, manifest.snapshot_id())
                self.scheduler.submit(name, Trigger("staleness", cid, cid))
                TRIGGERS.labels(name, "staleness").inc()

    def _submit(
        self, model: str, kind: str, event: Event, delivery: Delivery, *, min_rows: int = 0
    ) -> None:
        TRIGGERS.labels(model, kind).inc()
        self.scheduler.submit(
            model,
            Trigger(
                kind, event.event_id, event.correlation_id, delivery.tp, delivery.offset, min_rows
            ),
        )

    # -- runs -----------------------------------------------------------------------------

    async def _run(self, model: str, triggers: list[Trigger]) -> bool:
        spec = (await self.specs())[model]
        manifest = await asyncio.to_thread(read_manifest, self.store, spec.dataset.name)
        # The run's data: every segment now listed, less those past the dataset's retention.
        record, _ = build_snapshot(manifest, retention_s=spec.dataset.retention_s)
        snapshot = record.id
        kinds = {t.kind for t in triggers}
        need = max(t.min_rows for t in triggers)
        if manifest.total_rows < need:
            log.info(
                "retrain waits for fresh data",
                extra={"model": model, "rows": manifest.total_rows, "needs": need},
            )
            return False
        if kinds <= {"new_data"}:
            # Data that arrived during the previous run coalesced into this one; it may
            # already be covered by what that run trained on.
            try:
                state = await self.trained_state(model)
            except TransientError:
                return False
            if not enough_new_rows(spec.training, state, manifest.total_rows):
                log.info(
                    "no training needed: too few rows since the last training",
                    extra={"model": model, "rows": manifest.total_rows, "trained_rows": state.rows},
                )
                return True
        run_id = str(
            derived_id("training", model, snapshot, *sorted(str(t.event_id) for t in triggers))
        )
        kind = next(
            k
            for k in ("manual", "retrain", "new_data", "staleness")
            if k in kinds or k == "staleness"
        )
        # The run continues the loop iteration of its most significant trigger: a retrain
        # carries the drifted version's correlation id, data that piled up meanwhile does not.
        correlation = next(
            (t.correlation_id for t in triggers if t.kind == kind), triggers[0].correlation_id
        )
        # Every log line of this run carries the loop iteration's correlation id.
        with log_correlation(correlation):
            await asyncio.to_thread(write_snapshot, self.store, record)
            try:
                existing = [
                    v for v in await self.registry.list_versions(model) if v.run_id == run_id
                ]
            except RegistryUnavailable:
                return False
            if existing:
                log.info(
                    "run already registered; skipping", extra={"model": model, "run_id": run_id}
                )
                return True
            await self.producer.publish(
                TrainingStarted(
                    event_id=derived_id("training.started", run_id),
                    correlation_id=correlation,
                    model=model,
                    run_id=run_id,
                    trigger=kind,
                    snapshot_id=snapshot,
                )
            )
            job = TrainJob(
                model=model,
                spec=spec,
                run_id=run_id,
                correlation_id=str(correlation),
                snapshot_id=snapshot,
                storage_uri=self.storage_uri,
                registry_url=self.registry.base_url,
                registry_token=self.registry_token,
            )
            log.info(
                "training", extra={"model": model, "run_id": run_id, "triggers": len(triggers)}
            )
            result = await self.workers.run(job, spec.recipe.timeout_s)
            DURATION.labels(model).observe(result.seconds)
            if result.status == "failed" and result.retryable:
                log.warning(
                    "training deferred: registry unavailable",
                    extra={"model": model, "error": result.error},
                )
                return False
            await self._report(model, run_id, correlation, result)
            return True

    async def _report(
        self, model: str, run_id: str, correlation: UUID, result: TrainResult
    ) -> None:
        if result.status == "registered":
            RUNS.labels(model, "passed" if result.passed else "rejected").inc()
            GATES.labels(model, "passed" if result.passed else "rejected").inc()
            assert result.lineage is not None
            self._state[model] = TrainedState(covered_rows(result.lineage), datetime.now(UTC))
            await self.producer.publish(
                TrainingCompleted(
                    event_id=derived_id("training.completed", run_id),
                    correlation_id=correlation,
                    model=model,
                    run_id=run_id,
                    version=result.version,
                    metrics=result.metrics,
                    champion_metrics=result.champion_metrics,
                    passed_gate=result.passed,
                    gate_reasons=result.reasons,
                    duration_s=result.seconds,
                )
            )
            log.info(
                "training completed",
                extra={
                    "model": model,
                    "version": result.version,
                    "passed": result.passed,
                    "metrics": result.metrics,
                },
            )
        else:
            RUNS.labels(model, "failed").inc()
            await self.producer.publish(
                TrainingFailed(
                    event_id=derived_id("training.failed", run_id),
                    correlation_id=correlation,
                    model=model,
                    run_id=run_id,
                    error=(result.error or "unknown error")[:4000],
                )
            )
            log.error(
                "training failed", extra={"model": model, "error": (result.error or "")[:500]}
            )
