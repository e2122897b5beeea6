"""Model cards: a version's lineage, gates, rollout, live metrics and drift, from what the
registry keeps (pure: the use case gathers the inputs, :func:`render_markdown` prints it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flywheel_shared.cards import (
    DriftEpisode,
    LiveMetrics,
    ModelCard,
    Retirement,
    RetrainRequest,
    SnapshotSummary,
)
from flywheel_shared.events import CategoricalStats
from flywheel_shared.privacy import WITHHELD, personal_fields
from flywheel_shared.registry import Approval, AuditEntry, ModelVersion
from flywheel_shared.snapshots import Snapshot
from flywheel_shared.spec import Gate, ModelSpec

from .card_markdown import render_markdown

__all__ = ["CardInputs", "Fact", "build_card", "gate_text", "render_markdown"]
PRODUCTION = "production"


@dataclass(frozen=True)
class Fact:
    """A consumed event about a model (``kind``: drift, verdict, retrain)."""

    kind: str
    version: int | None
    at: datetime
    event_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class CardInputs:
    """What a card is built from."""

    version: ModelVersion
    spec: ModelSpec
    aliases: dict[str, tuple[int, float | None]]
    """Where each alias of the model points now (version, weight)."""
    audit: Sequence[AuditEntry]
    """Every audited write of the model, oldest first."""
    approvals: Sequence[Approval]
    """The approvals of this version, oldest first."""
    facts: Sequence[Fact]
    """The facts about the version and the model, in the order they occurred."""
    snapshot: Snapshot | None
    snapshot_note: str
    """Why ``snapshot`` is None (e.g. 'snapshot record not found')."""
    now: datetime
    status_reason: str = ""
    """Why the version has its status (kept beside the version, not in it)."""


def build_card(inputs: CardInputs) -> ModelCard:
    """The model card of ``inputs.version``."""
    v, spec = inputs.version, inputs.spec
    number = v.version
    personal = sorted(personal_fields(spec.dataset))
    intervals = serving_intervals(inputs.audit, number)
    drift = [f for f in inputs.facts if f.kind == "drift" and f.version == number]
    retrain = [
        f
        for f in inputs.facts
        if f.kind == "retrain" and any(_within(f.at, start, end) for start, end in intervals)
    ]
    return ModelCard(
        model=v.model,
        version=number,
        description=spec.description,
        status=v.status,
        status_reason=inputs.status_reason,
        run_id=v.run_id,
        created_at=v.created_at,
        generated_at=inputs.now,
        artifact_sha256=v.artifact_sha256,
        artifact_format=v.artifact_format,
        parent_version=v.parent_version,
        training_seconds=v.training_seconds,
        correlation_id=v.correlation_id,
        lineage=v.lineage,
        snapshot=snapshot_summary(
            v.lineage.snapshot_id, inputs.snapshot, inputs.snapshot_note, set(personal)
        ),
        primary_metric=spec.metrics.primary,
        metrics=v.metrics,
        champion_metrics=v.champion_metrics,
        gates=[gate_text(g) for g in spec.metrics.gates],
        gate_reasons=v.gate_reasons,
        passed_gate=v.status != "rejected",
        aliases={a: w for a, (n, w) in sorted(inputs.aliases.items()) if n == number},
        alias_history=[e for e in inputs.audit if number in (e.from_version, e.to_version)],
        require_approval=spec.rollout.require_approval,
        approvals=list(inputs.approvals),
        live_metrics=[
            LiveMetrics(
                at=f.at,
                alias=str(f.body.get("alias", "")),
                decision=str(f.body.get("decision", "")),
                reasons=list(f.body.get("reasons", [])),
                evidence=dict(f.body.get("evidence", {})),
            )
            for f in inputs.facts
            if f.kind == "verdict" and f.version == number
        ],
        drift_episodes=[DriftEpisode(at=f.at, event_id=f.event_id, **f.body) for f in drift],
        retrain_requests=[RetrainRequest(at=f.at, event_id=f.event_id, **f.body) for f in retrain],
        retired=retirement(inputs, intervals, drift, retrain),
        personal_fields=personal,
    )


def gate_text(gate: Gate) -> str:
    """A gate as written in a spec, e.g. ``roc_auc >= champion - 0.005``."""
    if not gate.vs_champion:
        return f"{gate.metric} {gate.op} {gate.value:g}"
    sign = "-" if gate.value < 0 else "+"
    return f"{gate.metric} {gate.op} champion {sign} {abs(gate.value):g}"


def snapshot_summary(
    snapshot_id: str, record: Snapshot | None, note: str, personal: set[str]
) -> SnapshotSummary:
    """The snapshot record's figures (a personal field's category values withheld)."""
    if record is None:
        return SnapshotSummary(id=snapshot_id, found=False, note=note)
    stats: dict[str, dict[str, Any]] = {}
    for name, stat in sorted(record.stats.items()):
        data = stat.model_dump(mode="json")
        if isinstance(stat, CategoricalStats):
            data["kind"] = "categorical"
            if name in personal:
                data["counts"] = {WITHHELD: sum(stat.counts.values())}
        else:
            data["kind"] = "numeric"
        stats[name] = data
    return SnapshotSummary(
        id=record.id,
        found=True,
        rows=record.rows,
        segments=len(record.segments),
        excluded_segments=len(record.excluded),
        excluded_rows=sum(e.rows for e in record.excluded),
        created_at=record.created_at,
        stats=stats,
    )


Interval = tuple[datetime, datetime | None]


def serving_intervals(audit: Sequence[AuditEntry], version: int) -> list[Interval]:
    """When ``version`` served production (start, end; end None: still serving)."""
    intervals: list[Interval] = []
    start: datetime | None = None
    for entry in audit:
        if entry.alias != PRODUCTION or entry.from_version == entry.to_version:
            continue
        if entry.to_version == version:
            start = _aware(entry.at)
        elif entry.from_version == version and start is not None:
            intervals.append((start, _aware(entry.at)))
            start = None
    if start is not None:
        intervals.append((start, None))
    return intervals


def retirement(
    inputs: CardInputs,
    intervals: list[Interval],
    drift: Sequence[Fact],
    retrain: Sequence[Fact],
) -> Retirement | None:
    """When the version last left production (None while it serves, or never served), and
    the drift episode (else retrain request) during that stint that preceded it."""
    if not intervals or intervals[-1][1] is None:
        return None
    start, end = intervals[-1]
    assert end is not None
    [left] = [
        e
        for e in inputs.audit
        if e.alias == PRODUCTION
        and e.from_version == inputs.version.version
        and e.to_version != e.from_version
        and _aware(e.at) == end
    ][-1:]
    cause, why = None, ""
    before = [f for f in drift if _within(f.at, start, end)]
    if before:
        cause = before[-1]
        features = ", ".join(cause.body.get("features", [])) or "-"
        why = (
            f"retired by drift episode {_when(cause.at)} "
            f"({cause.body.get('detector', '?')} on {features})"
        )
    else:
        asked = [f for f in retrain if _within(f.at, start, end)]
        if asked:
            cause = asked[-1]
            why = f"retired after a retrain request {_when(cause.at)} ({cause.body.get('reason')})"
    replaced = f"replaced by v{left.to_version}" if left.to_version else "removed from production"
    return Retirement(
        at=end,
        by_version=left.to_version,
        action=str(left.action),
        actor=left.actor,
        token=left.token,
        reason=left.reason,
        drift_event_id=cause.event_id if cause is not None else None,
        cause=f"{why}; {replaced}" if why else replaced,
    )


def _within(at: datetime, start: datetime, end: datetime | None) -> bool:
    moment = _aware(at)
    return start <= moment and (end is None or moment <= end)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(value: datetime) -> str:
    return _aware(value).strftime("%Y-%m-%d %H:%M:%S UTC")
