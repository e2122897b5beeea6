"""Rows as the API's resources (``flywheel_shared.registry``)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from flywheel_shared.registry import (
    AliasState,
    Approval,
    Artifact,
    AuditEntry,
    ModelInfo,
    ModelVersion,
)
from flywheel_shared.spec import ModelSpec

from .db import AliasRow, ApprovalRow, ArtifactRow, AuditRow, ModelRow, VersionRow
from .domain.aliases import Pointer
from .repository import Repository

R = TypeVar("R", bound=BaseModel)


def _resource(model: type[R], row: object) -> R:
    # A row's columns are named as its resource's fields.
    return model.model_validate(row, from_attributes=True)


def version(row: VersionRow) -> ModelVersion:
    """A version row as a ModelVersion."""
    return _resource(ModelVersion, row)


def alias_state(row: AliasRow) -> AliasState:
    """An alias row as an AliasState."""
    return _resource(AliasState, row)


def audit_entry(row: AuditRow) -> AuditEntry:
    """An audit row as an AuditEntry."""
    return _resource(AuditEntry, row)


def approval(row: ApprovalRow) -> Approval:
    """An approval row as an Approval."""
    return _resource(Approval, row)


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
