"""The models a replica serves: loaded from the registry, swapped in place when aliases move.

Each served model has a :class:`Deployment`: the loaded versions behind ``production``,
``canary`` (with its weight) and ``shadow``. A deployment is immutable; a change builds the
new one next to the old (downloading and loading any new version first, sha256 checked)
and then replaces it with one assignment, so a request sees either the old or the new
deployment, never a mix, and never waits for a load. Versions no longer behind any alias
are released: requests still holding them finish, then they are garbage.

The registry is the source of truth: an alias event only says "look again" (once per
``event_id``: the registry's outbox publishes at least once, so a move may arrive twice), and
a periodic resync catches anything missed while Kafka was away. Both read it through the shared
:class:`~flywheel_shared.regcache.RegistryCache` with the model marked outdated, so a read
while the registry is away fails (and is retried) instead of answering with the old aliases;
versions and artifacts, immutable, come from the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flywheel_shared.aliases import ALIASES
from flywheel_shared.auth import UnsafeSettings
from flywheel_shared.events import ModelAliasChanged
from flywheel_shared.kafka.consumer import MemoryProcessedIds
from flywheel_shared.modelio import FORMAT, load_model
from flywheel_shared.privacy import personal_fields, require_key
from flywheel_shared.regcache import RegistryCache, RegistryPort
from flywheel_shared.registry import ModelVersion, RegistryError, RegistryUnavailable
from flywheel_shared.spec import FieldType, ModelSpec, UnknownFieldPolicy
from flywheel_shared.tasks import Supervised
from flywheel_shared.validation import ContractValidator

from .batching import AdaptiveBatcher
from .domain.outputs import rows_from_predict, rows_from_proba
from .domain.routing import Route
from .metrics import (
    ALIAS_APPLIED,
    ALIAS_DUPLICATES,
    ALIAS_EVENTS,
    BATCH_SIZE,
    LIVE_VERSION,
    MODEL_LOADS,
    init_model_series,
)

log = logging.getLogger(__name__)


class LoadError(RuntimeError):
    """A version could not be loaded (bad artifact, unsupported format)."""


@dataclass(eq=False)
class LoadedModel:
    """One model version in memory, with its input validator and its batcher."""

    name: str
    version: int
    sha256: str
    features: tuple[str, ...]
    field_types: dict[str, FieldType]
    id_field: str | None
    estimator: Any
    validator: ContractValidator
    personal: frozenset[str] = frozenset()
    """Features the contract marks personal: hashed or dropped in the prediction log."""
    batcher: AdaptiveBatcher = field(init=False)

    def score(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run the model on validated records (called on the model thread)."""
        frame = pd.DataFrame(rows, columns=list(self.features))
        est = self.estimator
        if hasattr(est, "predict_proba"):
            return rows_from_proba(est.predict_proba(frame), list(np.asarray(est.classes_)))
        return rows_from_predict(est.predict(frame))

    def outputs(self) -> list[tuple[str, str]]:
        """Output names and OIP datatypes (for model metadata)."""
        classes = getattr(self.estimator, "classes_", None)
        label = "BYTES"
        if classes is not None:
            kind = np.asarray(classes).dtype.kind
            label = {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64"}.get(kind, "BYTES")
        if not hasattr(self.estimator, "predict_proba"):
            return [("label", label)]
        if classes is not None and len(classes) == 2:
            return [("label", label), ("score", "FP64")]
        return [("label", label), ("probabilities", "FP64")]


@dataclass(frozen=True)
class Deployment:
    """What one model serves right now."""

    name: str
    production: LoadedModel | None = None
    canary: LoadedModel | None = None
    canary_weight: float = 0.0
    shadow: LoadedModel | None = None

    def get(self, alias: Route) -> LoadedModel | None:
        """The version behind an alias."""
        model: LoadedModel | None = getattr(self, alias)
        return model

    def by_version(self, version: int) -> tuple[LoadedModel, Route] | None:
        """A loaded version and the alias it serves under."""
        for alias in ALIASES:
            m = self.get(alias)
            if m is not None and m.version == version:
                return m, alias
        return None

    def versions(self) -> list[int]:
        """Loaded versions, sorted."""
        return sorted({m.version for a in ALIASES if (m := self.get(a)) is not None})

    def summary(self) -> dict[str, Any]:
        """Versions behind the aliases, for status pages and logs."""
        out: dict[str, Any] = {a: (m.version if (m := self.get(a)) else None) for a in ALIASES}
        out["canary_weight"] = self.canary_weight
        return out


class ModelManager:
    """Keeps each served model's deployment in line with the registry's aliases."""

    def __init__(
        self,
        registry: RegistryCache | RegistryPort,
        *,
        models: Sequence[str] = (),
        max_batch_size: int = 128,
        executor: Executor | None = None,
        inline_rows: int = 0,
        resync_s: float = 30.0,
        retry_max_s: float = 10.0,
        on_change: Callable[[], None] | None = None,
        environment: str = "dev",
    ) -> None:
        self.environment = environment
        self.registry = (
            registry
            if isinstance(registry, RegistryCache)
            else RegistryCache(registry, refresh_s=resync_s, name="serving-registry")
        )
        self.models = list(models)
        self.max_batch_size = max_batch_size
        self.executor = executor
        self.inline_rows = inline_rows
        self.on_change = on_change
        """Called after a deployment changed (the runtime freezes the GC heap there)."""
        self.resync_s = resync_s
        self.retry_max_s = retry_max_s
        self.deployments: dict[str, Deployment] = {}
        self._cache: dict[tuple[str, int, str], LoadedModel] = {}
        self._dirty: set[str] = set()
        self._all = True
        self.task = Supervised(  # failures retry with backoff, from 0.2 s to retry_max_s
            "model-sync",
            self._sync_round,
            every_s=resync_s,
            min_backoff_s=0.2,
            max_backoff_s=retry_max_s,
        )
        self.synced = False
        """True once every served model was read from the registry (readiness)."""
        self.last_error: str | None = None
        self._alias_ids = MemoryProcessedIds(capacity=10_000)
        self.alias_applied = 0
        """Alias events of served models acted on (each ``event_id`` once)."""
        self.alias_duplicates = 0
        """Alias events skipped as redeliveries of an ``event_id`` already acted on."""

    # -- what to look at -----------------------------------------------------------------

    def serves(self, name: str) -> bool:
        """True if this replica serves ``name`` (a configured model, or any in all-mode)."""
        return name in self.models if self.models else True

    def mark(self, name: str | None = None) -> None:
        """Re-read ``name`` (None: every model) from the registry soon."""
        if name is None:
            self._all = True
        elif self.serves(name):
            self._dirty.add(name)
        else:
            return
        self.registry.invalidate(name)
        self.task.wake()

    def on_alias(self, event: ModelAliasChanged) -> bool:
        """An alias moved: re-read its model soon (:meth:`mark`), once per ``event_id``.

        A relay that died after Kafka acknowledged a move and before the outbox knew sends it
        again with the same id; that copy is counted and skipped. True if applied.
        """
        if not self.serves(event.model):
            return False
        ALIAS_EVENTS.labels(event.model).inc()
        about = {
            "model": event.model,
            "alias": event.alias,
            "version": event.version,
            "event_id": str(event.event_id),
        }
        if self._alias_ids.seen(event.event_id):
            self.alias_duplicates += 1
            ALIAS_DUPLICATES.labels(event.model).inc()
            log.info("alias event redelivered, skipped", extra=about)
            return False
        self._alias_ids.mark(event.event_id)
        self.alias_applied += 1
        ALIAS_APPLIED.labels(event.model, event.alias).inc()
        log.info("alias moved", extra=about)
        self.mark(event.model)
        return True

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Apply marks and periodic resyncs until cancelled (what ``task`` does in the service)."""
        await self.task.run()

    async def _sync_round(self) -> None:
        if not self._all and not self._dirty:
            # Nothing marked: the periodic resync, from the registry itself.
            self._all = True
            self.registry.invalidate()
        try:
            await self.sync_pending()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise

    async def sync_pending(self) -> None:
        """Sync every marked model (all of them after ``mark(None)``)."""
        if self._all:
            names = self.models or [m.name for m in await self.registry.models()]
            self._dirty.update(names)
            self._all = False
        for name in sorted(self._dirty):
            await self.sync(name)
            self._dirty.discard(name)
        self.synced = True
        self.last_error = None

    async def sync(self, name: str) -> Deployment:
        """Read ``name``'s aliases, load what is new, swap the deployment in one step."""
        try:
            info = await self.registry.model(name)
        except RegistryUnavailable:
            raise
        except RegistryError as exc:
            if exc.status != 404:
                raise
            log.warning("model not in the registry", extra={"model": name})
            return self._swap(Deployment(name))
        spec = info.spec or await self.registry.spec(name)
        loaded: dict[str, LoadedModel | None] = {}
        for alias in ALIASES:
            state = info.aliases.get(alias)
            loaded[alias] = (
                await self._load(name, state.version, spec, info.spec_sha256) if state else None
            )
        canary = info.aliases.get("canary")
        return self._swap(
            Deployment(
                name,
                production=loaded["production"],
                canary=loaded["canary"],
                canary_weight=float(canary.weight or 0.0) if canary else 0.0,
                shadow=loaded["shadow"],
            )
        )

    def _swap(self, new: Deployment) -> Deployment:
        old = self.deployments.get(new.name)
        if old is not None and old.summary() == new.summary():
            same = all(old.get(a) is new.get(a) for a in ALIASES)
            if same:
                return old
        self.deployments[new.name] = new
        live = {id(m) for a in ALIASES if (m := new.get(a)) is not None}
        for key in [k for k, m in self._cache.items() if k[0] == new.name and id(m) not in live]:
            del self._cache[key]
        for alias in ALIASES:
            m = new.get(alias)
            LIVE_VERSION.labels(new.name, alias).set(m.version if m else -1)
        log.info(
            "deployment changed",
            extra={
                "model": new.name,
                "before": old.summary() if old else None,
                "after": new.summary(),
            },
        )
        if self.on_change is not None:
            self.on_change()
        return new

    async def _load(self, name: str, version: int, spec: ModelSpec, spec_sha: str) -> LoadedModel:
        key = (name, version, spec_sha)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:  # production serves no personal fields without a key to hash them with
            require_key(self.environment, [spec.dataset])
        except UnsafeSettings as exc:
            MODEL_LOADS.labels(name, "refused").inc()
            raise LoadError(f"{name} v{version}: {exc}") from None
        mv = await self.registry.version(name, version)
        if mv.artifact_format != FORMAT:
            MODEL_LOADS.labels(name, "unsupported").inc()
            raise LoadError(f"{name} v{version}: artifact format {mv.artifact_format!r}")
        data = await self.registry.artifact(mv.artifact_sha256)
        try:
            estimator = await asyncio.to_thread(load_model, data, mv.artifact_sha256)
        except Exception:
            MODEL_LOADS.labels(name, "failed").inc()
            raise
        model = build_model(name, version, mv.artifact_sha256, estimator, spec, mv)
        model.batcher = AdaptiveBatcher(
            model.score,
            max_batch_size=self.max_batch_size,
            executor=self.executor,
            inline_rows=self.inline_rows,
            on_batch=BATCH_SIZE.labels(name, str(version)).observe,
        )
        self._cache[key] = model
        MODEL_LOADS.labels(name, "ok").inc()
        init_model_series(name)
        log.info("model loaded", extra={"model": name, "version": version, "bytes": len(data)})
        return model


def build_model(
    name: str,
    version: int,
    sha256: str,
    estimator: Any,
    spec: ModelSpec,
    mv: ModelVersion | None = None,
) -> LoadedModel:
    """A :class:`LoadedModel` whose inputs are checked against the spec's dataset contract.

    The features are the ones the version was trained on (its lineage), else the spec's.
    Requests may also carry the dataset's id field (logged for the label join); other
    fields are ignored.
    """
    trained = mv.lineage.params.get("features") if mv is not None else None
    features = tuple(trained) if isinstance(trained, list) else tuple(spec.features)
    contract = spec.dataset
    id_field = contract.id_field if contract.id_field not in features else None
    checked = [*features, *([id_field] if id_field else [])]
    validator = ContractValidator(
        contract,
        fields=checked,
        optional=[id_field] if id_field else [],
        unknown_fields=UnknownFieldPolicy.DROP,
    )
    return LoadedModel(
        name=name,
        version=version,
        sha256=sha256,
        features=features,
        field_types={f: contract.fields[f].type for f in checked},
        id_field=id_field,
        estimator=estimator,
        validator=validator,
        personal=personal_fields(contract) & frozenset(features),
    )
