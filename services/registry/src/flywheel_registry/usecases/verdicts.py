"""The monitor's rollout verdicts, applied per the model's rollout policy once per event."""

from __future__ import annotations

import logging

from flywheel_shared.events import RolloutVerdict
from flywheel_shared.spec import ModelSpec

from .. import records
from ..db import ProcessedEventRow, utcnow
from ..domain.aliases import Plan, plan_verdict, rollout_reason
from ..metrics import VERDICTS
from ..repository import Repository
from ..transactions import Database
from .aliases import apply_changes

log = logging.getLogger(__name__)


def apply_verdict(db: Database, verdict: RolloutVerdict) -> Plan:
    """Apply the monitor's verdict per the model's rollout policy, once per event_id."""
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
            plan = plan_verdict(
                records.pointers(repo, verdict.model),
                version=verdict.version,
                alias=verdict.alias,
                decision=verdict.decision,
                canary_steps=[s.weight for s in spec.rollout.canary_steps],
            )
            apply_changes(
                tx,
                repo,
                verdict.model,
                plan.changes,
                actor="monitor",
                reason=rollout_reason(verdict.decision, verdict.reasons),
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
