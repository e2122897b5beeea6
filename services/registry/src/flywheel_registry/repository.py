"""SQL of the registry's tables, on a session: rows in, rows out. No rules, no errors, no
events here; a missing row is None."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .db import (
    AliasRow,
    ApprovalRow,
    ArtifactRow,
    AuditRow,
    FactRow,
    ModelRow,
    ProcessedEventRow,
    VersionRow,
)


class Repository:
    """Queries and writes of one session (the caller owns the transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: object) -> None:
        """Insert ``row`` (at the next flush)."""
        self.session.add(row)

    def flush(self) -> None:
        """Send pending changes to the database."""
        self.session.flush()

    # -- models ---------------------------------------------------------------------------

    def model(self, name: str, *, lock: bool = False) -> ModelRow | None:
        """A model's row; ``lock`` takes its row lock (serialising the model's changes)."""
        return self.session.get(ModelRow, name, with_for_update=lock)

    def models(self) -> Sequence[ModelRow]:
        """Every model, by name."""
        return self.session.scalars(select(ModelRow).order_by(ModelRow.name)).all()

    def models_by_update(self) -> Sequence[ModelRow]:
        """Every model, least recently updated first."""
        return self.session.scalars(select(ModelRow).order_by(ModelRow.updated_at)).all()

    def newest_declaring(self, dataset: str) -> ModelRow | None:
        """The most recently updated model whose spec declares ``dataset``."""
        return self.session.scalars(
            select(ModelRow)
            .where(ModelRow.dataset == dataset)
            .order_by(ModelRow.updated_at.desc())
            .limit(1)
        ).first()

    # -- versions -------------------------------------------------------------------------

    def version(self, model: str, version: int) -> VersionRow | None:
        """One version's row."""
        return self.session.scalar(
            select(VersionRow).where(VersionRow.model == model, VersionRow.version == version)
        )

    def version_of_run(self, model: str, run_id: str) -> VersionRow | None:
        """The version a training run registered."""
        return self.session.scalar(
            select(VersionRow).where(VersionRow.model == model, VersionRow.run_id == run_id)
        )

    def versions(self, model: str) -> Sequence[VersionRow]:
        """Every version of ``model``, oldest first."""
        return self.session.scalars(
            select(VersionRow).where(VersionRow.model == model).order_by(VersionRow.version)
        ).all()

    def latest_version(self, model: str) -> int | None:
        """The highest version number of ``model``."""
        return self.session.scalar(
            select(func.max(VersionRow.version)).where(VersionRow.model == model)
        )

    def statuses(self, model: str) -> dict[int, str]:
        """Version number → status."""
        rows = self.session.execute(
            select(VersionRow.version, VersionRow.status).where(VersionRow.model == model)
        )
        return {version: status for version, status in rows}

    def correlation_id(self, model: str, version: int | None) -> str | None:
        """The correlation id of a version's training run."""
        return self.session.scalar(
            select(VersionRow.correlation_id).where(
                VersionRow.model == model, VersionRow.version == version
            )
        )

    # -- aliases and their audit log ------------------------------------------------------

    def alias(self, model: str, alias: str) -> AliasRow | None:
        """Where ``alias`` points, if set."""
        return self.session.get(AliasRow, (model, alias))

    def aliases(self, model: str) -> Sequence[AliasRow]:
        """Every alias of ``model``."""
        return self.session.scalars(select(AliasRow).where(AliasRow.model == model)).all()

    def set_alias(
        self, model: str, alias: str, version: int | None, weight: float | None, at: datetime
    ) -> int | None:
        """Point ``alias`` at ``version`` (None: delete it); returns the version it left."""
        row = self.alias(model, alias)
        previous = row.version if row is not None else None
        if version is None:
            if row is not None:
                self.session.delete(row)
        elif row is None:
            self.session.add(
                AliasRow(model=model, alias=alias, version=version, weight=weight, updated_at=at)
            )
        else:
            row.version, row.weight, row.updated_at = version, weight, at
        self.session.flush()
        return previous

    def production_history(self, model: str) -> list[tuple[str, int | None, int | None]]:
        """(action, from_version, to_version) of every production change, oldest first."""
        rows = self.session.execute(
            select(AuditRow.action, AuditRow.from_version, AuditRow.to_version)
            .where(AuditRow.model == model, AuditRow.alias == "production")
            .order_by(AuditRow.id)
        )
        return [(r.action, r.from_version, r.to_version) for r in rows]

    def audit(self, model: str) -> Sequence[AuditRow]:
        """The alias audit log of ``model`` (its alias changes), newest first."""
        return self.session.scalars(
            select(AuditRow)
            .where(AuditRow.model == model, AuditRow.alias.is_not(None))
            .order_by(AuditRow.id.desc())
        ).all()

    def audit_log(self, model: str | None, token: str | None, limit: int) -> Sequence[AuditRow]:
        """The newest ``limit`` audit rows (of ``model``, by ``token``), newest first."""
        query = select(AuditRow)
        if model is not None:
            query = query.where(AuditRow.model == model)
        if token is not None:
            query = query.where(AuditRow.token == token)
        return self.session.scalars(query.order_by(AuditRow.id.desc()).limit(limit)).all()

    # -- approvals ------------------------------------------------------------------------

    def approvals(self, model: str | None, *, state: str | None) -> Sequence[ApprovalRow]:
        """Approvals (of ``model``, in ``state``; None: all), oldest first."""
        query = select(ApprovalRow)
        if model is not None:
            query = query.where(ApprovalRow.model == model)
        if state is not None:
            query = query.where(ApprovalRow.state == state)
        return self.session.scalars(query.order_by(ApprovalRow.id)).all()

    def audit_of_model(self, model: str) -> Sequence[AuditRow]:
        """Every audit row of ``model``, oldest first."""
        return self.session.scalars(
            select(AuditRow).where(AuditRow.model == model).order_by(AuditRow.id)
        ).all()

    # -- facts (model cards) --------------------------------------------------------------

    def fact(self, event_id: str) -> FactRow | None:
        """The fact a consumed event recorded."""
        return self.session.scalar(select(FactRow).where(FactRow.event_id == event_id))

    def facts(self, model: str, version: int) -> Sequence[FactRow]:
        """The facts about ``version`` and those about the whole model (no version), in the
        order they occurred."""
        return self.session.scalars(
            select(FactRow)
            .where(
                FactRow.model == model,
                or_(FactRow.version == version, FactRow.version.is_(None)),
            )
            .order_by(FactRow.at, FactRow.id)
        ).all()

    # -- artifacts and consumed events ----------------------------------------------------

    def artifact(self, sha256: str) -> ArtifactRow | None:
        """An indexed artifact."""
        return self.session.get(ArtifactRow, sha256)

    def processed(self, event_id: str) -> ProcessedEventRow | None:
        """A consumed event already applied."""
        return self.session.get(ProcessedEventRow, event_id)
