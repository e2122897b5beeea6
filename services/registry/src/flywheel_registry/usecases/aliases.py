"""Alias changes: a move, a removal or a rollback, each audited and announced."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flywheel_shared.events import ModelAliasChanged
from flywheel_shared.registry import AliasState, AuditEntry
from flywheel_shared.spec import ModelSpec

from .. import outbox, records
from ..db import AuditRow, utcnow
from ..domain.aliases import (
    Change,
    HistoryItem,
    canary_weight,
    check_alias,
    check_move,
    check_servable,
    plan_move,
    previous_production,
    rollback_reason,
)
from ..domain.errors import Conflict, NotFound
from ..metrics import ALIAS_MOVES
from ..repository import Repository
from ..transactions import Database, Tx
from . import lookup

log = logging.getLogger(__name__)


def apply_changes(
    tx: Tx,
    repo: Repository,
    model: str,
    changes: Iterable[Change],
    *,
    actor: str,
    reason: str,
    action: str,
    cause: str,
    token: str | None = None,
) -> None:
    """Alias changes in ``tx``, in order, each with its audit row (naming ``token``, the
    name of the bearer token that asked) and event."""
    for change in changes:
        _apply(
            tx,
            repo,
            model,
            change,
            actor=actor,
            reason=reason,
            action=action,
            cause=cause,
            token=token,
        )


def _apply(
    tx: Tx,
    repo: Repository,
    model: str,
    change: Change,
    *,
    actor: str,
    reason: str,
    action: str,
    cause: str,
    token: str | None,
) -> None:
    # The alias row, its audit row and its event (then, after the commit, its metric and
    # log line). Removing an alias that is not set does nothing.
    if change.version is None and repo.alias(model, change.alias) is None:
        return
    now = utcnow()
    previous = repo.set_alias(model, change.alias, change.version, change.weight, now)
    repo.add(
        AuditRow(
            model=model,
            alias=change.alias,
            from_version=previous,
            to_version=change.version,
            weight=change.weight,
            action=action,
            actor=actor,
            token=token,
            reason=reason,
            at=now,
        )
    )
    about = change.version if change.version is not None else previous
    outbox.emit(
        tx,
        ModelAliasChanged(
            model=model,
            alias=change.alias,
            version=change.version,
            previous_version=previous,
            weight=change.weight,
            reason=reason,
            actor=actor,
            correlation_id=outbox.correlation(repo.correlation_id(model, about)),
        ),
    )
    facts = {
        "model": model,
        "alias": change.alias,
        "from_version": previous,
        "to_version": change.version,
        "weight": change.weight,
        "actor": actor,
        "token": token,
    }
    tx.after_commit(ALIAS_MOVES.labels(change.alias, cause).inc)
    tx.after_commit(lambda: log.info("alias changed", extra=facts))


def move_alias(
    db: Database,
    model: str,
    alias: str,
    version: int,
    *,
    weight: float | None = None,
    reason: str = "",
    actor: str = "api",
    token: str | None = None,
) -> AliasState:
    """Point ``alias`` at ``version`` (audited, announced); a no-op if already there."""
    check_move(alias, weight)
    with db.write() as tx:
        repo = Repository(tx.session)
        model_row = lookup.locked_model(repo, model)
        check_servable(version, lookup.version(repo, model, version).status)
        if alias == "canary":
            steps = ModelSpec.model_validate(model_row.spec).rollout.canary_steps
            weight = canary_weight([s.weight for s in steps], weight)
        changes = plan_move(records.pointers(repo, model), alias, version, weight)
        apply_changes(
            tx,
            repo,
            model,
            changes,
            actor=actor,
            reason=reason,
            action="move",
            cause="api",
            token=token,
        )
        state = repo.alias(model, alias)
        assert state is not None
        return records.alias_state(state)


def remove_alias(
    db: Database,
    model: str,
    alias: str,
    *,
    reason: str = "",
    actor: str = "api",
    token: str | None = None,
) -> None:
    """Remove an alias (NotFound if it is not set)."""
    check_alias(alias)
    with db.write() as tx:
        repo = Repository(tx.session)
        lookup.locked_model(repo, model)
        if repo.alias(model, alias) is None:
            raise NotFound("unknown_alias", f"model '{model}' has no {alias} alias")
        apply_changes(
            tx,
            repo,
            model,
            [Change(alias, None)],
            actor=actor,
            reason=reason,
            action="remove",
            cause="api",
            token=token,
        )


def rollback(
    db: Database, model: str, *, reason: str = "", actor: str = "api", token: str | None = None
) -> AliasState:
    """Move production back to the version it served before (per the audit log)."""
    with db.write() as tx:
        repo = Repository(tx.session)
        lookup.locked_model(repo, model)
        pointers = records.pointers(repo, model)
        current = pointers["production"].version if "production" in pointers else None
        history = [HistoryItem(*item) for item in repo.production_history(model)]
        statuses = repo.statuses(model)
        target = previous_production(
            history, current, servable=lambda v: statuses.get(v) == "candidate"
        )
        if target is None:
            raise Conflict(
                "no_previous_version",
                f"model '{model}' has no earlier production version to roll back to",
            )
        apply_changes(
            tx,
            repo,
            model,
            plan_move(pointers, "production", target, None),
            actor=actor,
            reason=rollback_reason(reason, current),
            action="rollback",
            cause="rollback",
            token=token,
        )
        state = repo.alias(model, "production")
        assert state is not None
        return records.alias_state(state)


def history(db: Database, model: str) -> list[AuditEntry]:
    """The alias audit log of ``model``, newest first."""
    with db.read() as session:
        repo = Repository(session)
        lookup.model(repo, model)
        return [records.audit_entry(r) for r in repo.audit(model)]


def audit(
    db: Database, *, model: str | None = None, token: str | None = None, limit: int = 100
) -> list[AuditEntry]:
    """Audited writes (of ``model``, by the token named ``token``), newest first."""
    with db.read() as session:
        repo = Repository(session)
        if model is not None:
            lookup.model(repo, model)
        return [records.audit_entry(r) for r in repo.audit_log(model, token, limit)]
