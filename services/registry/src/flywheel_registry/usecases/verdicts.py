"""The monitor's rollout verdicts, applied per the model's rollout policy once per event."""

from __future__ import annotations

import logging

from flywheel_shared.events import RolloutVerdict
from flywheel_shared.spec import ModelSpec

from .. import records
from ..db import ProcessedEventRow, utcnow
from ..domain.aliases import Plan, plan_verdict, rollout_reason
from ..domain.approvals import gated_change
from ..metrics import VERDICTS
from ..repository import Repository
from ..transactions import Database
from . import approvals
from .aliases import apply_changes

log = logging.getLogger(__name__)


def apply_verdict(db: Database, verdict: RolloutVerdict) -> Plan:
    """Apply the monitor's verdict per the model's rollout policy, once per event_id; a
    step into the alias the policy gates is held for approval instead."""
    event_id = str(verdict.event_id)
    with db.write() as tx:
        repo = Repository(tx.session)
        model_row = repo.model(verdict.model, lock=True)
        # Checked after taking the model lock: a concurrent delivery of the same verdict
        # waits for the first and then sees it processed.
        if repo.processed(event_id) is not None:
            plan = Plan("duplicate", note="verdict already applied")
        elif model_row is None:
            plan = Plan("unknown_model", note=f"no model '{verdict.model}'")
        else:
            spec = ModelSpec.model_validate(model_row.spec)
            pointers = records.pointers(repo, verdict.model)
            plan = plan_verdict(
                pointers,
                version=verdict.version,
                alias=verdict.alias,
                decision=verdict.decision,
                canary_steps=[s.weight for s in spec.rollout.canary_steps],
            )
            reason = rollout_reason(verdict.decision, verdict.reasons)
            gated = gated_change(plan.changes, pointers, spec.rollout.require_approval)
            if gated is not None:
                held = approvals.hold(
                    repo,
                    verdict.model,
                    gated,
                    source="verdict",
                    reason=reason,
                    decision=verdict.decision,
                    judged_alias=verdict.alias,
                )
                note = f"{gated.alias} needs approval (approval {held.id})"
                plan = Plan("awaiting_approval", note=note)
            elif plan.outcome == "applied" and verdict.decision == "rollback":
                approvals.drop(repo, verdict.model, verdict.version, "rolled back by a verdict")
            apply_changes(
                tx,
                repo,
                verdict.model,
                plan.changes,
                actor="monitor",
                reason=reason,
                action="verdict",
                cause="verdict",
            )
        if plan.outcome != "duplicate":
            repo.add(
                ProcessedEventRow(
                    event_id=event_id,
                    type=verdict.type,
                    outcome=f"{plan.outcome}: {plan.note}" if plan.note else plan.outcome,
                    at=utcnow(),
                )
            )
    VERDICTS.labels(verdict.decision, plan.outcome).inc()
    log.info(
        "rollout verdict handled",
        extra={
            "model": verdict.model,
            "version": verdict.version,
            "decision": verdict.decision,
            "outcome": plan.outcome,
            "note": plan.note,
            "event_id": event_id,
        },
    )
    return plan
