"""What the agents ask the registry (through its cache), and the feature contract check.

A registry 404 means the event can never be processed (:class:`.messages.Unprocessable`:
dead-lettered); an outage (``RegistryUnavailable``) is raised as is and waited out.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flywheel_shared.events import PredictionsLogged
from flywheel_shared.privacy import LetterRedactor, has_personal
from flywheel_shared.regcache import RegistryCache
from flywheel_shared.registry import RegistryError, RegistryUnavailable
from flywheel_shared.spec import DatasetContract, ModelSpec, UnknownFieldPolicy
from flywheel_shared.validation import ContractValidator, describe

from .calibrations import Calibrations, VersionRef
from .messages import Unprocessable
from .watch import VersionInfo

T = TypeVar("T")


async def required(lookup: Awaitable[T], missing: str) -> T:
    """The registry's answer; a 404 raises :class:`Unprocessable` ("<missing> is not in ...")."""
    try:
        return await lookup
    except RegistryUnavailable:
        raise
    except RegistryError as exc:
        if exc.status == 404:
            raise Unprocessable(f"{missing} is not in the registry") from exc
        raise


@dataclass
class Lookups:
    """The registry cache and the calibrations, as the agents use them."""

    cache: RegistryCache
    calibrations: Calibrations
    correlations: dict[tuple[str, int], str]  # (model, version) → correlation id, filled here

    async def contract_of(self, dataset: str) -> DatasetContract:
        return await required(self.cache.contract(dataset), f"dataset {dataset!r}")

    async def spec_of(self, model: str) -> Any:
        return await required(self.cache.spec(model), f"model {model!r}")

    async def version_info(self, model: str, spec: Any, vs: set[int]) -> dict[int, VersionInfo]:
        """Per version: its correlation id, its calibration (if ready) and its canary step."""
        cache = self.cache
        info: dict[int, VersionInfo] = {}
        cached = cache.cached_model(model)
        canary = cached.aliases.get("canary") if cached else None
        for v in vs:
            mv = await required(cache.version(model, v), f"{model} version {v}")
            ref = await cache.artifact(mv.reference_sha256) if mv.reference_sha256 else None
            cal = self.calibrations.ready(VersionRef(model, v, spec, ref))
            step = 0
            if canary is not None and canary.version == v and canary.weight is not None:
                weights = [s.weight for s in spec.rollout.canary_steps]
                step = min(
                    range(len(weights)), key=lambda i: abs(weights[i] - canary.weight), default=0
                )
            self.correlations[(model, v)] = mv.correlation_id
            info[v] = VersionInfo(correlation_id=mv.correlation_id, calibration=cal, step=step)
        return info


@dataclass
class FeatureChecks:
    """Serving logs features that passed the contract: others come from a broken producer
    and would feed the drift detectors garbage. Missing or null features are tolerated
    (an older version may have fewer); a wrong type, range or category is not. Personal
    features are not checked: serving logs their keyed hash, or nothing."""

    _held: dict[str, tuple[ModelSpec, ContractValidator]] = field(default_factory=dict)

    def check(self, ev: PredictionsLogged, spec: ModelSpec) -> None:
        """Raise :class:`Unprocessable` if a prediction's features break the contract."""
        held = self._held.get(ev.model)
        if held is None or held[0] is not spec:
            # Personal features arrive hashed or dropped (see flywheel_shared.privacy).
            names = [
                f
                for f in spec.features
                if f in spec.dataset.fields and not spec.dataset.fields[f].personal
            ]
            validator = ContractValidator(
                spec.dataset,
                fields=names,
                optional=names,
                unknown_fields=UnknownFieldPolicy.DROP,
            )
            held = self._held[ev.model] = (spec, validator)
        outcome = held[1].validate([p.features for p in ev.predictions], keep_rejected=False)
        if outcome.rejections:
            raise Unprocessable(
                f"features break the contract of dataset '{spec.dataset.name}': "
                + describe(outcome.rejections, what="prediction")
            )


def letter_redactor(cache: RegistryCache) -> LetterRedactor:
    """Dead letters without personal values: a ``predictions`` event's contract is its
    model's dataset, a ``data.labels`` event's its dataset (as the cache knows them)."""

    def contract_of(obj: dict[str, Any]) -> DatasetContract | None:
        specs = cache.cached_specs()
        model, dataset = obj.get("model"), obj.get("dataset")
        for spec in specs:
            if spec.name == model or spec.dataset.name == dataset:
                return spec.dataset
        return None

    def any_personal() -> bool:
        return any(has_personal(spec.dataset) for spec in cache.cached_specs())

    return LetterRedactor(contract_of, any_personal)
