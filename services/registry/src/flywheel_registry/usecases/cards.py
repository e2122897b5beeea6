"""A version's model card: its inputs gathered from the database and the object store."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from flywheel_shared.cards import ModelCard
from flywheel_shared.snapshots import Snapshot, read_snapshot
from flywheel_shared.spec import ModelSpec
from flywheel_shared.storage import ObjectStore

from .. import records
from ..db import utcnow
from ..domain.cards import CardInputs, Fact, build_card
from ..repository import Repository
from ..transactions import Database
from . import lookup

log = logging.getLogger(__name__)
NOT_FOUND = "snapshot record not found"


def model_card(
    db: Database, model: str, version: int, objects: ObjectStore | None = None
) -> ModelCard:
    """The model card of ``version`` (404 ``unknown_model`` / ``unknown_version``); the
    snapshot record is read from ``objects`` when it holds one."""
    with db.read() as session:
        repo = Repository(session)
        model_row = lookup.model(repo, model)
        row = lookup.version(repo, model, version)
        ours = records.version(row)
        spec = ModelSpec.model_validate(model_row.spec)
        aliases = {a.alias: (a.version, a.weight) for a in repo.aliases(model)}
        audit = [records.audit_entry(r) for r in repo.audit_of_model(model)]
        approvals = [
            records.approval(r) for r in repo.approvals(model, state=None) if r.version == version
        ]
        facts = [
            Fact(f.kind, f.version, f.at, f.event_id, dict(f.body))
            for f in repo.facts(model, version)
        ]
    snapshot, note = _snapshot(objects, ours.lineage.dataset, ours.lineage.snapshot_id)
    return build_card(
        CardInputs(
            version=ours,
            spec=spec,
            aliases=aliases,
            audit=audit,
            approvals=approvals,
            facts=facts,
            snapshot=snapshot,
            snapshot_note=note,
            now=utcnow(),
            status_reason=row.status_reason,
        )
    )


def _snapshot(
    objects: ObjectStore | None, dataset: str, snapshot: str
) -> tuple[Snapshot | None, str]:
    if objects is None:
        return None, f"{NOT_FOUND} (no object store)"
    try:
        found = read_snapshot(objects, dataset, snapshot)
    except ValidationError as exc:
        log.warning("unreadable snapshot record", extra={"snapshot": snapshot, "error": str(exc)})
        return None, f"snapshot record unreadable ({exc.error_count()} errors)"
    except ValueError:  # not a snapshot id (e.g. a manifest prefix of another form)
        return None, NOT_FOUND
    return (found, "") if found is not None else (None, NOT_FOUND)
