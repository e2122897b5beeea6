"""Versions: registration (with its first alias, in the same transaction) and status."""

from __future__ import annotations

import logging

from flywheel_shared.events import ModelVersionRegistered
from flywheel_shared.registry import ModelVersion, VersionCreate
from flywheel_shared.spec import ModelSpec

from .. import outbox, records
from ..db import AuditRow, VersionRow, utcnow
from ..domain.aliases import check_retirable, check_status, first_alias, plan_move
from ..domain.approvals import gated_change
from ..domain.errors import Unprocessable
from ..metrics import VERSIONS_REGISTERED
from ..repository import Repository
from ..transactions import Database
from . import approvals, lookup
from .aliases import apply_changes

log = logging.getLogger(__name__)


def register_version(
    db: Database,
    model: str,
    body: VersionCreate,
    *,
    actor: str = "api",
    rollout: bool = False,
    token: str | None = None,
) -> tuple[ModelVersion, bool]:
    """Register a version (next number); the same ``run_id`` returns the existing one.

    The version takes the ``first_alias`` the body names or, with ``rollout``, the one the
    model's rollout policy starts a candidate at (``domain.aliases.first_alias``); into the
    alias the policy gates (``require_approval``) only once approved.
    """
    with db.write() as tx:
        repo = Repository(tx.session)
        model_row = lookup.locked_model(repo, model)
        existing = repo.version_of_run(model, body.run_id)
        if existing is not None:
            return records.version(existing), False
        artifact = repo.artifact(body.artifact_sha256)
        if artifact is None:
            raise Unprocessable(
                "unknown_artifact",
                f"artifact {body.artifact_sha256} is not stored; POST /v1/artifacts first",
            )
        if body.reference_sha256 and repo.artifact(body.reference_sha256) is None:
            raise Unprocessable(
                "unknown_artifact", f"reference sample {body.reference_sha256} is not stored"
            )
        if body.parent_version is not None:
            lookup.version(repo, model, body.parent_version)
        pointers = records.pointers(repo, model)
        rollout_policy = ModelSpec.model_validate(model_row.spec).rollout
        start = first_alias(
            status=body.status,
            alias=body.first_alias,
            weight=body.first_alias_weight,
            rollout=rollout,
            rollout_first_alias=rollout_policy.first_alias,
            canary_steps=[s.weight for s in rollout_policy.canary_steps],
            serving="production" in pointers,
        )
        now = utcnow()
        row = VersionRow(
            model=model,
            version=(repo.latest_version(model) or 0) + 1,
            run_id=body.run_id,
            status=body.status,
            status_reason="",
            artifact_sha256=artifact.sha256,
            artifact_uri=artifact.uri,
            artifact_format=body.artifact_format,
            reference_sha256=body.reference_sha256,
            metrics=dict(body.metrics),
            champion_metrics=dict(body.champion_metrics) if body.champion_metrics else None,
            gate_reasons=list(body.gate_reasons),
            lineage=body.lineage.model_dump(mode="json"),
            parent_version=body.parent_version,
            training_seconds=body.training_seconds,
            correlation_id=body.correlation_id,
            created_at=now,
            updated_at=now,
        )
        repo.add(row)
        repo.flush()
        outbox.emit(
            tx,
            ModelVersionRegistered(
                model=model,
                version=row.version,
                status=body.status,
                artifact_uri=artifact.uri,
                artifact_sha256=artifact.sha256,
                snapshot_id=body.lineage.snapshot_id,
                metrics=dict(body.metrics),
                correlation_id=outbox.correlation(body.correlation_id),
            ),
        )
        repo.add(
            AuditRow(
                model=model,
                alias=None,
                from_version=None,
                to_version=row.version,
                action="register",
                actor=actor,
                token=token,
                reason=f"registered as {body.status} (run {body.run_id})",
                at=now,
            )
        )
        tx.after_commit(VERSIONS_REGISTERED.labels(body.status).inc)
        if start is not None:
            alias, weight = start
            changes = plan_move(pointers, alias, row.version, weight)
            reason = f"first alias of version {row.version} (run {body.run_id})"
            gated = gated_change(changes, pointers, rollout_policy.require_approval)
            if gated is not None:
                approvals.hold(repo, model, gated, source="registration", reason=reason)
                changes = []
            apply_changes(
                tx,
                repo,
                model,
                changes,
                actor=actor,
                reason=reason,
                action="move",
                cause="registration",
                token=token,
            )
        result = records.version(row)
    log.info(
        "version registered",
        extra={"model": model, "version": result.version, "status": result.status},
    )
    return result, True


def list_versions(db: Database, model: str) -> list[ModelVersion]:
    """Every version of ``model``, oldest first."""
    with db.read() as session:
        repo = Repository(session)
        lookup.model(repo, model)
        return [records.version(r) for r in repo.versions(model)]


def get_version(db: Database, model: str, version: int) -> ModelVersion:
    """One version."""
    with db.read() as session:
        repo = Repository(session)
        lookup.model(repo, model)
        return records.version(lookup.version(repo, model, version))


def set_status(
    db: Database,
    model: str,
    version: int,
    status: str,
    reason: str = "",
    *,
    actor: str = "api",
    token: str | None = None,
) -> ModelVersion:
    """Change a version's status (audited); refuses to retire a version an alias points at."""
    check_status(status)
    with db.write() as tx:
        repo = Repository(tx.session)
        lookup.locked_model(repo, model)
        row = lookup.version(repo, model, version)
        check_retirable(records.pointers(repo, model), version, status)
        before, now = row.status, utcnow()
        row.status, row.status_reason, row.updated_at = status, reason, now
        if before != status:
            repo.add(
                AuditRow(
                    model=model,
                    alias=None,
                    from_version=version,
                    to_version=version,
                    action="status",
                    actor=actor,
                    token=token,
                    reason=f"{before} → {status}" + (f": {reason}" if reason else ""),
                    at=now,
                )
            )
        repo.flush()
        return records.version(row)
