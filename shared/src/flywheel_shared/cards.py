"""A version's model card: what the registry knows about it, as one resource.

``GET /v1/models/{name}/versions/{v}/card`` answers a :class:`ModelCard` (JSON) or its
Markdown (``Accept: text/markdown`` or ``?format=markdown``); the registry builds it from
the version, the model's spec, the audit log, the approvals, the dataset snapshot record and
the facts it consumed (drift, rollout verdicts, retrain requests).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .registry import Approval, AuditEntry, Lineage

When = AwareDatetime | datetime


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SnapshotSummary(_Model):
    """The dataset snapshot a version trained on, as its record describes it."""

    id: str
    found: bool = Field(description="whether the snapshot record is in the object store")
    note: str = Field("", description="why the record is missing, if it is")
    rows: int | None = None
    segments: int | None = None
    excluded_segments: int | None = None
    excluded_rows: int | None = None
    created_at: When | None = None
    stats: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="merged per-field statistics (a personal field's categories are withheld)",
    )


class LiveMetrics(_Model):
    """A rollout verdict about this version: the live metrics the monitor judged it on."""

    at: When
    alias: str
    decision: str
    reasons: list[str] = Field(default_factory=list)
    evidence: dict[str, float] = Field(default_factory=dict)


class DriftEpisode(_Model):
    """A ``drift.detected`` while this version served."""

    at: When
    event_id: str
    detector: str
    features: list[str] = Field(default_factory=list)
    statistics: dict[str, float] = Field(default_factory=dict)
    p_values: dict[str, float] = Field(default_factory=dict)
    threshold: float | None = None
    window: int | None = None


class RetrainRequest(_Model):
    """A ``retrain.requested`` of the model while this version served production."""

    at: When
    event_id: str
    reason: str
    requested_by: str = ""
    cause_event_id: str | None = None


class Retirement(_Model):
    """When this version left production, for which version, and what preceded it."""

    at: When
    by_version: int | None = Field(description="the version production moved to (None: removed)")
    action: str
    actor: str
    token: str | None = None
    reason: str = ""
    drift_event_id: str | None = Field(
        None, description="the drift episode (or retrain request) that preceded it"
    )
    cause: str = Field("", description="e.g. 'retired by drift episode 2026-12-04 03:10 (...)'")


class ModelCard(_Model):
    """Everything the registry knows about one version."""

    model: str
    version: int
    description: str = ""
    status: str
    status_reason: str = ""
    run_id: str
    created_at: When
    generated_at: When
    artifact_sha256: str
    artifact_format: str
    parent_version: int | None = None
    training_seconds: float
    correlation_id: str
    lineage: Lineage
    snapshot: SnapshotSummary
    primary_metric: str
    metrics: dict[str, float] = Field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    gates: list[str] = Field(default_factory=list, description="the spec's gates, as written")
    gate_reasons: list[str] = Field(default_factory=list)
    passed_gate: bool
    aliases: dict[str, float | None] = Field(
        default_factory=dict, description="the aliases pointing at it now (alias → weight)"
    )
    alias_history: list[AuditEntry] = Field(
        default_factory=list, description="audited writes concerning it, oldest first"
    )
    require_approval: str | None = None
    approvals: list[Approval] = Field(default_factory=list)
    live_metrics: list[LiveMetrics] = Field(default_factory=list)
    drift_episodes: list[DriftEpisode] = Field(default_factory=list)
    retrain_requests: list[RetrainRequest] = Field(default_factory=list)
    retired: Retirement | None = None
    personal_fields: list[str] = Field(default_factory=list)
