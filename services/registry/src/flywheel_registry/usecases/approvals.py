"""Approval gates: holding an automatic rollout step, approving it, listing what waits."""

from __future__ import annotations

import logging

from flywheel_shared.registry import Approval
from flywheel_shared.spec import ModelSpec

from .. import records
from ..db import ApprovalRow, utcnow
from ..domain.aliases import Change, Decision
from ..domain.approvals import Held, replan
from ..domain.errors import Conflict
from ..repository import Repository
from ..transactions import Database
from . import lookup
from .aliases import apply_changes

log = logging.getLogger(__name__)


def hold(
    repo: Repository,
    model: str,
    change: Change,
    *,
    source: str,
    reason: str,
    decision: Decision | None = None,
    judged_alias: str | None = None,
) -> ApprovalRow:
    """Record ``change`` (a version entering a gated alias) as awaiting approval, in the
    caller's transaction. The same step asked again keeps its one pending row; a pending
    step of another version into the same alias is superseded (stale)."""
    assert change.version is not None
    now = utcnow()
    for row in repo.approvals(model, state="pending"):
        if row.alias != change.alias:
            continue
        if row.version == change.version:
            return row
        _settle(row, "stale", f"superseded by version {change.version}", None)
    row = ApprovalRow(
        model=model,
        version=change.version,
        alias=change.alias,
        weight=change.weight,
        source=source,
        decision=decision,
        judged_alias=judged_alias,
        reason=reason,
        state="pending",
        requested_at=now,
        decision_reason="",
    )
    repo.add(row)
    repo.flush()
    facts = {"model": model, "version": change.version, "alias": change.alias, "source": source}
    log.info("rollout step awaits approval", extra=facts)
    return row


def drop(repo: Repository, model: str, version: int, why: str) -> None:
    """Pending approvals of ``version`` become stale (e.g. a verdict rolled it back)."""
    for row in repo.approvals(model, state="pending"):
        if row.version == version:
            _settle(row, "stale", why, None)


def approve(
    db: Database,
    model: str,
    version: int,
    *,
    reason: str = "",
    actor: str = "api",
    token: str | None = None,
) -> Approval:
    """Apply the step ``version`` waits for, re-planned against the current aliases (audited
    as ``approve`` with the approver's token, announced as any alias change); 409
    ``no_pending_approval`` when nothing waits, ``approval_stale`` when it no longer applies."""
    stale = None
    with db.write() as tx:
        repo = Repository(tx.session)
        model_row = lookup.locked_model(repo, model)
        status = lookup.version(repo, model, version).status
        waiting = [r for r in repo.approvals(model, state="pending") if r.version == version]
        if not waiting:
            raise Conflict(
                "no_pending_approval", f"version {version} of '{model}' awaits no approval"
            )
        row = waiting[-1]
        steps = [s.weight for s in ModelSpec.model_validate(model_row.spec).rollout.canary_steps]
        changes = replan(
            records.pointers(repo, model), held(row), status=status, canary_steps=steps
        )
        if changes is None:
            stale = (
                f"the step of version {version} into {row.alias} no longer applies "
                f"(the version or the aliases changed since {row.requested_at:%Y-%m-%d %H:%M})"
            )
            _settle(row, "stale", stale, token)
        else:
            why = f"approved: {reason}" if reason else "approved"
            apply_changes(
                tx,
                repo,
                model,
                changes,
                actor=actor,
                reason=f"{why} ({row.reason})" if row.reason else why,
                action="approve",
                cause="approval",
                token=token,
            )
            _settle(row, "approved", reason, token)
        repo.flush()
        result = records.approval(row)
    if stale is not None:
        raise Conflict("approval_stale", stale)
    return result


def list_approvals(
    db: Database, *, model: str | None = None, state: str | None = "pending"
) -> list[Approval]:
    """Approvals (of ``model``, in ``state``; None: every state), oldest first."""
    with db.read() as session:
        repo = Repository(session)
        if model is not None:
            lookup.model(repo, model)
        return [records.approval(r) for r in repo.approvals(model, state=state)]


def held(row: ApprovalRow) -> Held:
    """An approval row as the gate rules take it."""
    decision: Decision | None = row.decision  # type: ignore[assignment]
    return Held(row.version, row.alias, row.weight, row.source, decision, row.judged_alias)


def _settle(row: ApprovalRow, state: str, reason: str, token: str | None) -> None:
    row.state, row.decided_at, row.decided_by, row.decision_reason = (
        state,
        utcnow(),
        token,
        reason,
    )
