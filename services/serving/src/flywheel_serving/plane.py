"""The data plane: one prediction path for every transport (OIP v2 REST, plain JSON).

Picks the version (sticky canary split, or the version asked for), validates the records
against the model's dataset contract, scores them through the adaptive batcher, logs the
predictions, and mirrors the request to the shadow version after answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from flywheel_shared.events import Prediction
from flywheel_shared.privacy import redact_record

from .domain.routing import Route, choose
from .ids import new_id
from .metrics import (
    ERRORS,
    RECORDS,
    REQUEST_SECONDS,
    REQUESTS,
    SHADOW_ERRORS,
    SHADOW_SKIPPED,
)
from .models import Deployment, LoadedModel, ModelManager

log = logging.getLogger(__name__)


class PredictionSink(Protocol):
    """Where predictions go (the Kafka prediction log)."""

    def offer(self, model: str, predictions: Sequence[Prediction]) -> None:
        """Take predictions without blocking."""
        ...


class InferenceError(Exception):
    """A request that cannot be answered: HTTP ``status``, metric ``reason``, message."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.errors = status, reason, message, errors


@dataclass(frozen=True)
class Answer:
    """A served prediction request."""

    model: str
    version: int
    route: Route
    request_id: str
    prediction_ids: list[str]
    outputs: list[dict[str, Any]]


class DataPlane:
    """Answers prediction requests from the live deployments."""

    def __init__(
        self,
        manager: ModelManager,
        sink: PredictionSink,
        *,
        shadow: bool = True,
        max_shadow_pending: int = 512,
    ) -> None:
        self.manager = manager
        self.sink = sink
        self.shadow = shadow
        self.max_shadow_pending = max_shadow_pending
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._series: dict[tuple[str, int, str, str], tuple[Any, Any, Any]] = {}
        """Metric children per (model, version, route, protocol): ``labels()`` hashes and
        locks on every call, a dict lookup does not."""

    def deployment(self, name: str) -> Deployment:
        """The live deployment of ``name``; 404 if not served, 503 while not loaded yet."""
        dep = self.manager.deployments.get(name)
        if dep is not None:
            return dep
        if self.manager.models and name not in self.manager.models:
            raise InferenceError(404, "unknown_model", f"model '{name}' is not served here")
        if not self.manager.synced:
            raise InferenceError(503, "loading", f"model '{name}' is not loaded yet, retry")
        raise InferenceError(404, "unknown_model", f"model '{name}' is not served here")

    def pick(
        self, name: str, routing_key: str, version: int | None = None
    ) -> tuple[LoadedModel, Route, Deployment]:
        """The version that answers: the one asked for, else production or canary by key."""
        dep = self.deployment(name)
        if version is not None:
            found = dep.by_version(version)
            if found is None:
                raise InferenceError(
                    404,
                    "unknown_version",
                    f"version {version} of model '{name}' is not loaded here "
                    f"(loaded: {', '.join(map(str, dep.versions())) or 'none'})",
                )
            return found[0], found[1], dep
        route = choose(routing_key, dep.canary_weight, has_canary=dep.canary is not None)
        model = dep.canary if route == "canary" else dep.production
        if model is None:
            raise InferenceError(
                503, "no_production", f"model '{name}' has no production version yet"
            )
        return model, route, dep

    async def predict(
        self,
        name: str,
        records: Sequence[Any],
        *,
        request_id: str,
        routing_key: str | None = None,
        version: int | None = None,
        picked: tuple[LoadedModel, Route, Deployment] | None = None,
        protocol: str = "json",
    ) -> Answer:
        """Score ``records``; raises :class:`InferenceError` for anything but success.

        ``picked`` is a choice made earlier by :meth:`pick` (the OIP codec needs the
        model's features before it can decode the request).
        """
        started = time.perf_counter()
        try:
            model, route, dep = picked or self.pick(name, routing_key or request_id, version)
            if not records:
                raise InferenceError(400, "empty", "no records to score")
            valid = self._validate(model, records)
            try:
                outputs = await model.batcher.submit(valid)
            except Exception as exc:
                log.exception("model call failed", extra={"model": name, "version": model.version})
                raise InferenceError(
                    500, "model_error", f"model '{name}' v{model.version} failed: {exc!r}"
                ) from exc
        except InferenceError as exc:
            ERRORS.labels(name, exc.reason, str(exc.status)).inc()
            raise
        elapsed = time.perf_counter() - started
        ids = [new_id() for _ in valid]
        self._log(model, route, request_id, ids, valid, outputs, elapsed)
        requests, seconds, scored = self._metrics(name, model.version, route, protocol)
        requests.inc()
        seconds.observe(elapsed)
        scored.inc(len(valid))
        shadow = dep.shadow
        if self.shadow and shadow is not None and shadow is not model:
            if shadow.batcher.pending_rows + len(valid) > self.max_shadow_pending:
                SHADOW_SKIPPED.labels(name).inc()
            else:
                same = shadow.features == model.features and (
                    shadow.validator.contract == model.validator.contract
                )
                task = asyncio.create_task(
                    self._mirror(shadow, request_id, valid if same else list(records))
                )
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)
        return Answer(name, model.version, route, request_id, ids, outputs)

    def _metrics(self, name: str, version: int, route: str, protocol: str) -> tuple[Any, Any, Any]:
        key = (name, version, route, protocol)
        series = self._series.get(key)
        if series is None:
            v = str(version)
            series = (
                REQUESTS.labels(name, v, route, protocol),
                REQUEST_SECONDS.labels(name, v, route),
                RECORDS.labels(name, v, route),
            )
            self._series[key] = series
        return series

    def _validate(self, model: LoadedModel, records: Sequence[Any]) -> list[dict[str, Any]]:
        valid: list[dict[str, Any]] = []
        problems: list[dict[str, Any]] = []
        check = model.validator.check
        for i, record in enumerate(records):
            ok, errors = check(record)
            if ok is None:
                problems.extend({"index": i, "field": e.field, "reason": e.reason} for e in errors)
            else:
                valid.append(ok)
        if problems:
            first = problems[0]
            where = f"record {first['index']}: " if len(records) > 1 else ""
            field = f"field '{first['field']}'" if first["field"] else "record"
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise InferenceError(
                422, "invalid_input", f"{where}{field}: {first['reason']}{more}", problems
            )
        return valid

    def _log(
        self,
        model: LoadedModel,
        route: Route,
        request_id: str,
        ids: list[str],
        records: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
        elapsed: float,
    ) -> None:
        at = datetime.now(UTC)
        latency = round(elapsed * 1000, 3)
        features = model.features
        id_field = model.id_field
        personal = model.personal
        self.sink.offer(
            model.name,
            [
                _prediction(
                    {
                        "prediction_id": pid,
                        "request_id": request_id,
                        "record_id": rec.get(id_field) if id_field else None,
                        "version": model.version,
                        "route": route,
                        "features": _logged({f: rec.get(f) for f in features}, personal),
                        "output": out,
                        "latency_ms": latency,
                        "at": at,
                    }
                )
                for pid, rec, out in zip(ids, records, outputs, strict=True)
            ],
        )

    async def _mirror(self, shadow: LoadedModel, request_id: str, records: list[Any]) -> None:
        started = time.perf_counter()
        try:
            records = self._validate(shadow, records) if shadow.validator else records
            outputs = await shadow.batcher.submit(records)
        except Exception:
            SHADOW_ERRORS.labels(shadow.name).inc()
            log.warning("shadow model call failed", exc_info=True)
            return
        elapsed = time.perf_counter() - started
        ids = [new_id() for _ in records]
        self._log(shadow, "shadow", request_id, ids, records, outputs, elapsed)
        v = str(shadow.version)
        REQUEST_SECONDS.labels(shadow.name, v, "shadow").observe(elapsed)
        RECORDS.labels(shadow.name, v, "shadow").inc(len(records))

    async def drain_shadow(self, timeout: float) -> None:
        """Wait (a little) for mirrored requests still running, at shutdown."""
        if self._shadow_tasks:
            await asyncio.wait(list(self._shadow_tasks), timeout=timeout)


_PREDICTION_FIELDS = frozenset(Prediction.model_fields)
assert not Prediction.__pydantic_post_init__ and not Prediction.__pydantic_root_model__
_new, _set = Prediction.__new__, object.__setattr__


def _logged(features: dict[str, Any], personal: frozenset[str]) -> dict[str, Any]:
    """The features as the prediction log may carry them (personal ones hashed or dropped)."""
    return redact_record(features, personal) if personal else features


def _prediction(values: dict[str, Any]) -> Prediction:
    """``Prediction.model_construct(**values)`` for values naming every field, in field order.

    The same four attributes pydantic's ``model_construct`` sets, without its walk over each
    field's aliases and defaults: a third of the loop's time per row of a 1,000-row request went
    to that walk. ``tests/test_serving_plane.py`` checks it against ``model_construct``.
    """
    m = _new(Prediction)
    _set(m, "__dict__", values)
    _set(m, "__pydantic_fields_set__", set(_PREDICTION_FIELDS))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m
