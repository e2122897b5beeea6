"""Rows as the API's resources (``flywheel_shared.registry``)."""

from __future__ import annotations

from flywheel_shared.registry import AliasState, Artifact, AuditEntry, ModelInfo, ModelVersion
from flywheel_shared.spec import ModelSpec

from .db import AliasRow, ArtifactRow, AuditRow, ModelRow, VersionRow
from .domain.aliases import Pointer
from .repository import Repository


def version(row: VersionRow) -> ModelVersion:
    """A version row as a ModelVersion."""
    return ModelVersion.model_validate(
        {
            "model": row.model,
            "version": row.version,
            "run_id": row.run_id,
            "status": row.status,
            "artifact_sha256": row.artifact_sha256,
            "artifact_uri": row.artifact_uri,
            "artifact_format": row.artifact_format,
            "reference_sha256": row.reference_sha256,
            "metrics": row.metrics,
            "champion_metrics": row.champion_metrics,
            "gate_reasons": row.gate_reasons,
            "lineage": row.lineage,
            "parent_version": row.parent_version,
            "training_seconds": row.training_seconds,
            "correlation_id": row.correlation_id,
            "created_at": row.created_at,
        }
    )


def alias_state(row: AliasRow) -> AliasState:
    """An alias row as an AliasState."""
    return AliasState.model_validate(
        {
            "alias": row.alias,
            "version": row.version,
            "weight": row.weight,
            "updated_at": row.updated_at,
        }
    )


def audit_entry(row: AuditRow) -> AuditEntry:
    """An audit row as an AuditEntry."""
    return AuditEntry.model_validate(
        {
            "id": row.id,
            "model": row.model,
            "alias": row.alias,
            "from_version": row.from_version,
            "to_version": row.to_version,
            "weight": row.weight,
            "actor": row.actor,
            "reason": row.reason,
            "at": row.at,
        }
    )


def artifact(row: ArtifactRow) -> Artifact:
    """An artifact row as an Artifact."""
    return Artifact(sha256=row.sha256, size=row.size, uri=row.uri)


def model_info(repo: Repository, row: ModelRow, *, with_spec: bool) -> ModelInfo:
    """A model with its latest version number and aliases (and its spec)."""
    return ModelInfo(
        name=row.name,
        description=row.description,
        spec_sha256=row.spec_sha256,
        latest_version=repo.latest_version(row.name),
        aliases={a.alias: alias_state(a) for a in repo.aliases(row.name)},
        spec=ModelSpec.model_validate(row.spec) if with_spec else None,
    )


def pointers(repo: Repository, model: str) -> dict[str, Pointer]:
    """Where each alias of ``model`` points, as the alias rules take it."""
    return {r.alias: Pointer(r.version, r.weight) for r in repo.aliases(model)}
