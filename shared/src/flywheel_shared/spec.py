"""Model specs and the dataset contracts inside them.

A model spec is one YAML document per model (see ``examples/fraud/flywheel.yaml``). It is
declared once and read by every service: ingest validates records against its dataset
contract, the trainer runs its recipe and gates, serving checks inputs, the monitor applies
its drift policy. Nothing in here touches the network.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME, description="lower-case name: [a-z][a-z0-9_-]*")]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldType(StrEnum):
    """Logical type of a dataset field."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"
    CATEGORY = "category"
    DATETIME = "datetime"


class UnknownFieldPolicy(StrEnum):
    """What to do with a record field that the contract does not declare."""

    REJECT = "reject"
    DROP = "drop"
    KEEP = "keep"


class FieldSpec(_Strict):
    """One field of a dataset contract."""

    type: FieldType
    required: bool = Field(True, description="the key must be present in every record")
    nullable: bool = Field(False, description="null is an accepted value")
    min: float | None = Field(None, description="inclusive lower bound (numbers)")
    max: float | None = Field(None, description="inclusive upper bound (numbers)")
    categories: tuple[str, ...] | None = Field(None, description="allowed values (category)")
    max_length: int | None = Field(None, ge=1, description="longest accepted string")
    personal: bool = Field(
        False,
        description="personal data: never logged, hashed or dropped in the prediction log and "
        "dead letters, not monitored for drift (see flywheel_shared.privacy)",
    )
    description: str = ""

    @model_validator(mode="after")
    def _coherent(self) -> FieldSpec:
        numeric = self.type in (FieldType.INT, FieldType.FLOAT)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to int and float fields, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.type is FieldType.CATEGORY and not self.categories:
            raise ValueError("a category field needs a non-empty 'categories' list")
        if self.categories is not None and self.type is not FieldType.CATEGORY:
            raise ValueError("'categories' applies to category fields only")
        return self


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _seconds(value: Any) -> Any:
    """A duration: seconds as a number, or a string such as ``90s``, ``12h``, ``30d``, ``2w``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"cannot read duration {value!r}; write e.g. 3600, '12h' or '30d'")
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    return value


Duration = Annotated[
    float,
    Field(gt=0),
    BeforeValidator(_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ]
        }
    ),
]
"""Seconds (> 0), written as a number or as a string such as ``90s``, ``12h``, ``30d``, ``2w``."""


class BatchChecks(_Strict):
    """Thresholds of the checks comparing a new batch's statistics with a baseline snapshot's
    (the one the production model was trained on)."""

    null_rate_jump: float = Field(
        0.2, ge=0, le=1, description="a field's null rate may rise this much above the baseline's"
    )
    range_excess: float = Field(
        1.0, ge=0, description="numbers may reach this many baseline widths beyond its min/max"
    )
    category_tv: float = Field(
        0.3, ge=0, le=1, description="largest total-variation distance of category shares"
    )
    volume_ratio: tuple[float, float] = Field(
        (0.05, 20.0),
        description="a batch's rows over the baseline's rows per segment must lie in (low, high)",
    )
    label_rate_z: float = Field(
        6.0,
        gt=0,
        description="a label value's share may differ from the baseline's by this many "
        "standard errors (of a batch that size)",
    )
    max_duplicate_ids: int = Field(0, ge=0, description="repeated record ids allowed in a batch")
    min_baseline_rows: int = Field(
        1000, ge=0, description="the baseline checks apply once the baseline has this many rows"
    )

    @model_validator(mode="after")
    def _ordered(self) -> BatchChecks:
        low, high = self.volume_ratio
        if not 0 <= low < high:
            raise ValueError(f"volume_ratio needs 0 <= low < high, not ({low}, {high})")
        return self


class DatasetContract(_Strict):
    """The data contract enforced at the edge by ingest."""

    name: Name
    fields: dict[str, FieldSpec]
    id_field: str = Field(description="unique record id; labels refer to it")
    time_field: str = Field(description="event time of the record (RFC 3339)")
    label_field: str | None = Field(None, description="ground truth; may arrive late")
    unknown_fields: UnknownFieldPolicy = UnknownFieldPolicy.REJECT
    retention_s: Duration | None = Field(
        None,
        description="segments whose newest record is older than this are left out of new "
        "snapshots (seconds, or '30d', '12h'); unset: kept for ever",
    )

    checks: BatchChecks = Field(
        default_factory=BatchChecks, description="thresholds of the new-batch checks"
    )

    @model_validator(mode="after")
    def _known_roles(self) -> DatasetContract:
        for role in ("id_field", "time_field", "label_field"):
            value = getattr(self, role)
            if value is not None and value not in self.fields:
                raise ValueError(f"{role} '{value}' is not one of the declared fields")
            if value is not None and self.fields[value].personal:
                raise ValueError(
                    f"{role} '{value}' cannot be personal: it is written to logs, dead letters "
                    "and the prediction log in clear (use a pseudonymous id)"
                )
        if self.fields[self.time_field].type is not FieldType.DATETIME:
            raise ValueError(f"time_field '{self.time_field}' must have type datetime")
        return self


class Recipe(_Strict):
    """The user's training function and how to run it."""

    entrypoint: str = Field(pattern=r"^[\w.]+:\w+$", description="'package.module:function'")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    timeout_s: float = Field(600, gt=0)


_GATE = re.compile(r"^\s*(\w+)\s*(>=|<=|>|<)\s*(champion\s*[-+]\s*)?([0-9.eE+-]+)\s*$")


class Gate(_Strict):
    """One gate: an absolute threshold, or a margin against the champion.

    Written in YAML as a short string, e.g. ``roc_auc >= 0.80`` or
    ``roc_auc >= champion - 0.005``.
    """

    metric: str
    op: Literal[">=", "<=", ">", "<"]
    value: float
    vs_champion: bool = False

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        m = _GATE.match(data)
        if not m:
            raise ValueError(f"cannot read gate {data!r}; write e.g. 'roc_auc >= 0.8'")
        metric, op, champ, number = m.groups()
        value = float(number)
        if champ and champ.replace(" ", "").endswith("-"):
            value = -value
        return {"metric": metric, "op": op, "value": value, "vs_champion": bool(champ)}


class Metrics(_Strict):
    """Metrics to compute on the holdout, the primary one, and the gates."""

    primary: str = "roc_auc"
    compute: tuple[str, ...] = ("roc_auc", "pr_auc", "log_loss", "accuracy", "ece")
    gates: tuple[Gate, ...] = ()


class Window(_Strict):
    """Which rows of the dataset snapshot a training run uses."""

    kind: Literal["all", "last_rows", "last_seconds"] = "all"
    value: float | None = None


class Training(_Strict):
    """When to train, and on what."""

    min_new_rows: int = Field(1000, ge=1)
    cooldown_s: float = Field(
        60, ge=0, description="between two runs that new data or staleness triggers"
    )
    fresh_rows: int = Field(
        0,
        ge=0,
        description="a retrain the monitor requests first waits for this many rows to arrive "
        "(data from after the drift); 0: train at once",
    )
    max_staleness_s: float | None = Field(None, gt=0)
    window: Window = Window()
    holdout_fraction: float = Field(0.2, gt=0, lt=1)


class CanaryStep(_Strict):
    """One step of a progressive rollout."""

    weight: float = Field(gt=0, le=1)
    min_requests: int = Field(200, ge=1)
    min_duration_s: float = Field(60, ge=0)


class Rollout(_Strict):
    """How a candidate that passed the gate reaches production."""

    first_alias: Literal["shadow", "canary", "production"] = "shadow"
    shadow_min_requests: int = Field(500, ge=0)
    canary_steps: tuple[CanaryStep, ...] = (CanaryStep(weight=0.1), CanaryStep(weight=0.5))
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_latency_p99_ms: float = Field(50, gt=0)
    max_score_distance: float = Field(0.2, ge=0, description="distance to champion's scores")
    min_metric_delta: float = Field(-0.01, description="candidate - champion, once labels arrive")
    require_approval: Literal["canary", "production"] | None = Field(
        None,
        description="a version entering this alias automatically (a rollout verdict or a "
        "registration) waits for a person with the approver role; null: fully automatic",
    )


class Drift(_Strict):
    """How the monitor detects drift on the prediction stream."""

    mode: Literal["online", "batch"] = "online"
    continuous: Literal["cvm", "ks"] = "cvm"
    binary: Literal["fet", "chi2"] = "fet"
    categorical: Literal["chi2", "tabular"] = "chi2"
    window: int = Field(500, ge=10, description="batch window or online window size")
    ert: int = Field(2000, ge=100, description="expected run time (online detectors)")
    p_value: float = Field(0.01, gt=0, lt=1)
    cooldown_s: float = Field(600, ge=0)
    features: tuple[str, ...] | None = Field(None, description="default: all model features")


LiveMetric = Literal["accuracy", "roc_auc"]


def _default_floors() -> dict[LiveMetric, float]:
    return {"roc_auc": 0.70}


class Monitoring(_Strict):
    """Live performance floors: a realised (labels) or estimated (scores only) drop below a floor
    requests a retrain, like drift does."""

    min_metric: dict[LiveMetric, float] = Field(
        default_factory=_default_floors,
        description="floor per live metric over the sliding window",
    )
    window_s: float = Field(3600, gt=0, description="sliding event-time window of live metrics")
    bucket_s: float = Field(60, gt=0, description="event-time bucket width (window granularity)")
    lateness_s: float = Field(
        60, ge=0, description="a bucket closes once event time passed its end by this much"
    )
    min_labels: int = Field(200, ge=1, description="labelled predictions a window needs first")
    min_predictions: int = Field(500, ge=1, description="predictions an estimate needs first")
    estimated: bool = Field(True, description="apply the floors to label-free estimates too")


class ModelSpec(_Strict):
    """A model, declared once: its data contract, features, recipe, gates and policies."""

    api_version: Literal["flywheel/v1"] = Field("flywheel/v1", alias="apiVersion")
    kind: Literal["ModelSpec"] = "ModelSpec"
    name: Name
    description: str = ""
    dataset: DatasetContract
    features: tuple[str, ...]
    recipe: Recipe
    metrics: Metrics = Metrics()
    training: Training = Training()
    rollout: Rollout = Rollout()
    drift: Drift = Drift()
    monitoring: Monitoring = Monitoring()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _features_exist(self) -> ModelSpec:
        roles = {self.dataset.id_field, self.dataset.time_field, self.dataset.label_field}
        for f in self.features:
            if f not in self.dataset.fields:
                raise ValueError(f"feature '{f}' is not a field of dataset '{self.dataset.name}'")
            if f in roles:
                raise ValueError(f"feature '{f}' is the dataset's id, time or label field")
        if self.dataset.label_field is None:
            raise ValueError("a model's dataset needs a label_field to train on")
        for f in self.drift.features or ():
            spec = self.dataset.fields.get(f)
            if spec is not None and spec.personal:
                raise ValueError(
                    f"drift feature '{f}' is personal: personal features are not monitored"
                )
        return self


class SpecError(ValueError):
    """A spec file could not be read or is not valid."""


def load_spec(source: str | Path | bytes) -> ModelSpec:
    """Read a model spec from a YAML file path or YAML text, with a readable error."""
    try:
        text = Path(source).read_text() if isinstance(source, Path) else source
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read spec: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError("a spec must be a YAML mapping")
    try:
        return ModelSpec.model_validate(data)
    except ValueError as exc:
        raise SpecError(f"invalid spec: {exc}") from exc
