"""The registry's state in SQL: every change is one transaction with its audit row and events.

Events are not sent from here: they are written to the ``outbox`` table in the same
transaction as the change they announce (a transactional outbox), and ``relay.py``
publishes them. A crash therefore never leaves a change without its event, or an event
without its change.

Methods are synchronous (SQLAlchemy's sync engine) and safe to call from worker threads.
Per-model changes are serialised by locking the model's row (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which is what keeps version numbers dense and
monotonic, and audit ``from_version`` values exact, under concurrent writers.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID, uuid4

import orjson
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flywheel_shared.aliases import VERSION_STATUSES
from flywheel_shared.events import (
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    RolloutVerdict,
    derived_id,
)
from flywheel_shared.registry import (
    AliasState,
    Artifact,
    AuditEntry,
    ModelInfo,
    ModelVersion,
    VersionCreate,
)
from flywheel_shared.spec import DatasetContract, ModelSpec

from .db import (
    READ_ONLY,
    AliasRow,
    ArtifactRow,
    AuditRow,
    ModelRow,
    OutboxRow,
    ProcessedEventRow,
    VersionRow,
    utcnow,
)
from .domain.aliases import (
    ALIASES,
    Change,
    HistoryItem,
    Plan,
    Pointer,
    plan_move,
    plan_verdict,
    previous_production,
)
from .domain.errors import Conflict, Invalid, NotFound, Unprocessable
from .metrics import ALIAS_MOVES, VERDICTS, VERSIONS_REGISTERED

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_CANARY_WEIGHT = 0.1


@dataclass
class _Tx:
    session: Session
    on_commit: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class PendingEvent:
    """An outbox row not yet published."""

    id: int
    event_id: str
    payload: str


def spec_sha256(spec: ModelSpec) -> str:
    """Hash of a spec's canonical JSON (key order and YAML layout do not matter)."""
    data = spec.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _correlation(value: str | None) -> UUID:
    if not value:
        return uuid4()
    try:
        return UUID(value)
    except ValueError:
        return derived_id("correlation", value)


class RegistryStore:
    """Models, versions, aliases, audit log, artifacts index and outbox."""

    def __init__(self, engine: Engine, *, notify: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self._read_engine = engine.execution_options(**{READ_ONLY: True})
        self.notify = notify
        """Called (from any thread) after a commit that wrote outbox events."""

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        tx = _Tx(Session(self.engine, expire_on_commit=False, autoflush=False))
        with tx.session as session, session.begin():
            yield tx
        for callback in tx.on_commit:
            callback()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._read_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @staticmethod
    def _retry_races(fn: Callable[[], T], attempts: int = 3) -> T:
        # Two first inserts of the same key race (spec, artifact): the loser retries and
        # then finds the winner's row.
        for attempt in range(attempts):
            try:
                return fn()
            except IntegrityError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _lock_model(session: Session, name: str) -> ModelRow:
        row = session.get(ModelRow, name, with_for_update=True)
        if row is None:
            raise NotFound("unknown_model", f"no model '{name}'; PUT its spec first")
        return row

    @staticmethod
    def _model(session: Session, name: str) -> ModelRow:
        row = session.get(ModelRow, name)
        if row is None:
            raise NotFound("unknown_model", f"no model '{name}'")
        return row

    @staticmethod
    def _version_row(session: Session, model: str, version: int) -> VersionRow:
        row = session.scalar(
            select(VersionRow).where(VersionRow.model == model, VersionRow.version == version)
        )
        if row is None:
            raise NotFound("unknown_version", f"model '{model}' has no version {version}")
        return row

    @staticmethod
    def _pointers(session: Session, model: str) -> dict[str, Pointer]:
        rows = session.scalars(select(AliasRow).where(AliasRow.model == model))
        return {r.alias: Pointer(r.version, r.weight) for r in rows}

    @staticmethod
    def _to_version(row: VersionRow) -> ModelVersion:
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

    def _info(self, session: Session, row: ModelRow, *, with_spec: bool) -> ModelInfo:
        latest = session.scalar(
            select(func.max(VersionRow.version)).where(VersionRow.model == row.name)
        )
        aliases = session.scalars(select(AliasRow).where(AliasRow.model == row.name))
        return ModelInfo(
            name=row.name,
            description=row.description,
            spec_sha256=row.spec_sha256,
            latest_version=latest,
            aliases={
                a.alias: AliasState.model_validate(
                    {
                        "alias": a.alias,
                        "version": a.version,
                        "weight": a.weight,
                        "updated_at": a.updated_at,
                    }
                )
                for a in aliases
            },
            spec=ModelSpec.model_validate(row.spec) if with_spec else None,
        )

    def _emit(self, tx: _Tx, event: Event) -> None:
        tx.session.add(
            OutboxRow(
                event_id=str(event.event_id),
                topic=event.topic,
                key=event.key(),
                payload=event.model_dump_json(),
                created_at=utcnow(),
            )
        )
        if self.notify is not None and self.notify not in tx.on_commit:
            tx.on_commit.append(self.notify)

    def _apply(
        self,
        tx: _Tx,
        model: str,
        change: Change,
        *,
        actor: str,
        reason: str,
        action: str,
        cause: str,
    ) -> None:
        """One alias change: the alias row, its audit row and its event, in ``tx``."""
        session, now = tx.session, utcnow()
        row = session.get(AliasRow, (model, change.alias))
        previous = row.version if row is not None else None
        if change.version is None:
            if row is None:
                return
            session.delete(row)
        elif row is None:
            session.add(
                AliasRow(
                    model=model,
                    alias=change.alias,
                    version=change.version,
                    weight=change.weight,
                    updated_at=now,
                )
            )
        else:
            row.version, row.weight, row.updated_at = change.version, change.weight, now
        session.flush()
        session.add(
            AuditRow(
                model=model,
                alias=change.alias,
                from_version=previous,
                to_version=change.version,
                weight=change.weight,
                action=action,
                actor=actor,
                reason=reason,
                at=now,
            )
        )
        about = change.version if change.version is not None else previous
        cid = session.scalar(
            select(VersionRow.correlation_id).where(
                VersionRow.model == model, VersionRow.version == about
            )
        )
        self._emit(
            tx,
            ModelAliasChanged(
                model=model,
                alias=change.alias,
                version=change.version,
                previous_version=previous,
                weight=change.weight,
                reason=reason,
                actor=actor,
                correlation_id=_correlation(cid),
            ),
        )
        facts = {
            "model": model,
            "alias": change.alias,
            "from_version": previous,
            "to_version": change.version,
            "weight": change.weight,
            "actor": actor,
        }
        tx.on_commit.append(ALIAS_MOVES.labels(change.alias, cause).inc)
        tx.on_commit.append(lambda: log.info("alias changed", extra=facts))

    @staticmethod
    def _canary_weight(spec: dict[str, Any], weight: float | None) -> float:
        if weight is not None:
            return weight
        steps = ModelSpec.model_validate(spec).rollout.canary_steps
        return steps[0].weight if steps else DEFAULT_CANARY_WEIGHT

    # -- specs and contracts --------------------------------------------------------------

    def put_spec(self, spec: ModelSpec) -> tuple[ModelInfo, bool]:
        """Create or replace a model's spec; returns the model and whether it is new."""
        data = spec.model_dump(mode="json", by_alias=True)
        digest = spec_sha256(spec)

        def attempt() -> tuple[ModelInfo, bool]:
            with self._write() as tx:
                session, now = tx.session, utcnow()
                row = session.get(ModelRow, spec.name, with_for_update=True)
                created = row is None
                if row is None:
                    row = ModelRow(
                        name=spec.name,
                        description=spec.description,
                        spec=data,
                        spec_sha256=digest,
                        dataset=spec.dataset.name,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(row)
                elif row.spec_sha256 != digest:
                    row.spec, row.spec_sha256, row.updated_at = data, digest, now
                    row.description, row.dataset = spec.description, spec.dataset.name
                session.flush()
                return self._info(session, row, with_spec=True), created

        return self._retry_races(attempt)

    def list_models(self) -> list[ModelInfo]:
        """Every model (without its spec), by name."""
        with self._read() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._info(session, r, with_spec=False) for r in rows]

    def get_model(self, name: str) -> ModelInfo:
        """One model with its spec and aliases."""
        with self._read() as session:
            return self._info(session, self._model(session, name), with_spec=True)

    def get_spec(self, name: str) -> dict[str, Any]:
        """A model's spec as stored (JSON, ``apiVersion`` spelled as in YAML)."""
        with self._read() as session:
            return self._model(session, name).spec

    def list_contracts(self) -> list[DatasetContract]:
        """Every dataset contract; when several specs declare a dataset, the newest wins."""
        with self._read() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.updated_at)).all()
        newest = {r.dataset: r.spec["dataset"] for r in rows}
        return [DatasetContract.model_validate(newest[name]) for name in sorted(newest)]

    def get_contract(self, dataset: str) -> DatasetContract:
        """The contract of ``dataset`` from the most recently updated spec declaring it."""
        with self._read() as session:
            row = session.scalars(
                select(ModelRow)
                .where(ModelRow.dataset == dataset)
                .order_by(ModelRow.updated_at.desc())
                .limit(1)
            ).first()
        if row is None:
            raise NotFound("unknown_dataset", f"no model spec declares dataset '{dataset}'")
        return DatasetContract.model_validate(row.spec["dataset"])

    # -- artifacts ------------------------------------------------------------------------

    def record_artifact(self, sha256: str, size: int, uri: str) -> tuple[Artifact, bool]:
        """Index a stored artifact; returns it and whether it is new."""

        def attempt() -> tuple[Artifact, bool]:
            with self._write() as tx:
                row = tx.session.get(ArtifactRow, sha256)
                if row is not None:
                    return Artifact(sha256=row.sha256, size=row.size, uri=row.uri), False
                tx.session.add(ArtifactRow(sha256=sha256, size=size, uri=uri, created_at=utcnow()))
                tx.session.flush()
                return Artifact(sha256=sha256, size=size, uri=uri), True

        return self._retry_races(attempt)

    def get_artifact(self, sha256: str) -> Artifact:
        """An indexed artifact."""
        with self._read() as session:
            row = session.get(ArtifactRow, sha256)
        if row is None:
            raise NotFound("unknown_artifact", f"no artifact {sha256}")
        return Artifact(sha256=row.sha256, size=row.size, uri=row.uri)

    # -- versions -------------------------------------------------------------------------

    def register_version(
        self, model: str, body: VersionCreate, *, actor: str = "api"
    ) -> tuple[ModelVersion, bool]:
        """Register a version (next number); the same ``run_id`` returns the existing one."""
        with self._write() as tx:
            session = tx.session
            model_row = self._lock_model(session, model)
            existing = session.scalar(
                select(VersionRow).where(
                    VersionRow.model == model, VersionRow.run_id == body.run_id
                )
            )
            if existing is not None:
                return self._to_version(existing), False
            artifact = session.get(ArtifactRow, body.artifact_sha256)
            if artifact is None:
                raise Unprocessable(
                    "unknown_artifact",
                    f"artifact {body.artifact_sha256} is not stored; POST /v1/artifacts first",
                )
            if body.reference_sha256 and session.get(ArtifactRow, body.reference_sha256) is None:
                raise Unprocessable(
                    "unknown_artifact", f"reference sample {body.reference_sha256} is not stored"
                )
            if body.parent_version is not None:
                self._version_row(session, model, body.parent_version)
            latest = session.scalar(
                select(func.max(VersionRow.version)).where(VersionRow.model == model)
            )
            now = utcnow()
            row = VersionRow(
                model=model,
                version=(latest or 0) + 1,
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
            session.add(row)
            session.flush()
            self._emit(
                tx,
                ModelVersionRegistered(
                    model=model,
                    version=row.version,
                    status=body.status,
                    artifact_uri=artifact.uri,
                    artifact_sha256=artifact.sha256,
                    snapshot_id=body.lineage.snapshot_id,
                    metrics=dict(body.metrics),
                    correlation_id=_correlation(body.correlation_id),
                ),
            )
            tx.on_commit.append(VERSIONS_REGISTERED.labels(body.status).inc)
            if body.first_alias is not None and body.status == "candidate":
                weight = (
                    self._canary_weight(model_row.spec, body.first_alias_weight)
                    if body.first_alias == "canary"
                    else None
                )
                reason = f"first alias of version {row.version} (run {body.run_id})"
                for change in plan_move(
                    self._pointers(session, model), body.first_alias, row.version, weight
                ):
                    self._apply(
                        tx,
                        model,
                        change,
                        actor=actor,
                        reason=reason,
                        action="move",
                        cause="registration",
                    )
            result = self._to_version(row)
        log.info(
            "version registered",
            extra={"model": model, "version": result.version, "status": result.status},
        )
        return result, True

    def list_versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model``, oldest first."""
        with self._read() as session:
            self._model(session, model)
            rows = session.scalars(
                select(VersionRow).where(VersionRow.model == model).order_by(VersionRow.version)
            )
            return [self._to_version(r) for r in rows]

    def get_version(self, model: str, version: int) -> ModelVersion:
        """One version."""
        with self._read() as session:
            self._model(session, model)
            return self._to_version(self._version_row(session, model, version))

    def set_status(self, model: str, version: int, status: str, reason: str = "") -> ModelVersion:
        """Change a version's status; refuses to retire a version an alias points at."""
        if status not in VERSION_STATUSES:
            raise Invalid("invalid_status", "status must be candidate, rejected or archived")
        with self._write() as tx:
            session = tx.session
            self._lock_model(session, model)
            row = self._version_row(session, model, version)
            if status != "candidate":
                using = [
                    a for a, p in self._pointers(session, model).items() if p.version == version
                ]
                if using:
                    raise Conflict(
                        "version_in_use",
                        f"version {version} is {', '.join(sorted(using))}; move the alias first",
                    )
            row.status, row.status_reason, row.updated_at = status, reason, utcnow()
            session.flush()
            return self._to_version(row)

    # -- aliases --------------------------------------------------------------------------

    def move_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        weight: float | None = None,
        reason: str = "",
        actor: str = "api",
    ) -> AliasState:
        """Point ``alias`` at ``version`` (audited, announced); a no-op if already there."""
        if alias not in ALIASES:
            raise Invalid("invalid_alias", f"alias must be one of {', '.join(ALIASES)}")
        if weight is not None and alias != "canary":
            raise Invalid("invalid_weight", "only the canary alias takes a weight")
        with self._write() as tx:
            session = tx.session
            model_row = self._lock_model(session, model)
            row = self._version_row(session, model, version)
            if row.status != "candidate":
                raise Conflict(
                    "version_not_servable",
                    f"version {version} is {row.status}; only candidates can take an alias",
                )
            if alias == "canary":
                weight = self._canary_weight(model_row.spec, weight)
            for change in plan_move(self._pointers(session, model), alias, version, weight):
                self._apply(
                    tx, model, change, actor=actor, reason=reason, action="move", cause="api"
                )
            state = session.get(AliasRow, (model, alias))
            assert state is not None
            return AliasState.model_validate(
                {
                    "alias": alias,
                    "version": state.version,
                    "weight": state.weight,
                    "updated_at": state.updated_at,
                }
            )

    def remove_alias(self, model: str, alias: str, *, reason: str = "", actor: str = "api") -> None:
        """Remove an alias (404 if it is not set)."""
        if alias not in ALIASES:
            raise Invalid("invalid_alias", f"alias must be one of {', '.join(ALIASES)}")
        with self._write() as tx:
            self._lock_model(tx.session, model)
            if tx.session.get(AliasRow, (model, alias)) is None:
                raise NotFound("unknown_alias", f"model '{model}' has no {alias} alias")
            self._apply(
                tx,
                model,
                Change(alias, None),
                actor=actor,
                reason=reason,
                action="remove",
                cause="api",
            )

    def rollback(self, model: str, *, reason: str = "", actor: str = "api") -> AliasState:
        """Move production back to the version it served before (per the audit log)."""
        with self._write() as tx:
            session = tx.session
            self._lock_model(session, model)
            pointers = self._pointers(session, model)
            current = pointers["production"].version if "production" in pointers else None
            history = [
                HistoryItem(r.action, r.from_version, r.to_version)
                for r in session.execute(
                    select(AuditRow.action, AuditRow.from_version, AuditRow.to_version)
                    .where(AuditRow.model == model, AuditRow.alias == "production")
                    .order_by(AuditRow.id)
                )
            ]
            statuses = {
                v: status
                for v, status in session.execute(
                    select(VersionRow.version, VersionRow.status).where(VersionRow.model == model)
                )
            }
            target = previous_production(
                history, current, servable=lambda v: statuses.get(v) == "candidate"
            )
            if target is None:
                raise Conflict(
                    "no_previous_version",
                    f"model '{model}' has no earlier production version to roll back to",
                )
            reason = reason or f"rollback from version {current}"
            for change in plan_move(pointers, "production", target, None):
                self._apply(
                    tx,
                    model,
                    change,
                    actor=actor,
                    reason=reason,
                    action="rollback",
                    cause="rollback",
                )
            state = session.get(AliasRow, (model, "production"))
            assert state is not None
            return AliasState.model_validate(
                {
                    "alias": "production",
                    "version": state.version,
                    "weight": state.weight,
                    "updated_at": state.updated_at,
                }
            )

    def history(self, model: str) -> list[AuditEntry]:
        """The alias audit log of ``model``, newest first."""
        with self._read() as session:
            self._model(session, model)
            rows = session.scalars(
                select(AuditRow).where(AuditRow.model == model).order_by(AuditRow.id.desc())
            )
            return [
                AuditEntry.model_validate(
                    {
                        "id": r.id,
                        "model": r.model,
                        "alias": r.alias,
                        "from_version": r.from_version,
                        "to_version": r.to_version,
                        "weight": r.weight,
                        "actor": r.actor,
                        "reason": r.reason,
                        "at": r.at,
                    }
                )
                for r in rows
            ]

    # -- rollout verdicts -----------------------------------------------------------------

    def apply_verdict(self, verdict: RolloutVerdict) -> Plan:
        """Apply the monitor's verdict per the model's rollout policy, once per event_id."""
        event_id = str(verdict.event_id)
        with self._write() as tx:
            session = tx.session
            model_row = session.get(ModelRow, verdict.model, with_for_update=True)
            # Checked after taking the model lock: a concurrent delivery of the same verdict
            # waits for the first and then sees it processed.
            if session.get(ProcessedEventRow, event_id) is not None:
                plan = Plan("duplicate", note="verdict already applied")
            elif model_row is None:
                plan = Plan("unknown_model", note=f"no model '{verdict.model}'")
            else:
                spec = ModelSpec.model_validate(model_row.spec)
                plan = plan_verdict(
                    self._pointers(session, verdict.model),
                    version=verdict.version,
                    alias=verdict.alias,
                    decision=verdict.decision,
                    canary_steps=[s.weight for s in spec.rollout.canary_steps],
                )
                reason = f"rollout verdict {verdict.decision}"
                if verdict.reasons:
                    reason += ": " + "; ".join(verdict.reasons)
                for change in plan.changes:
                    self._apply(
                        tx,
                        verdict.model,
                        change,
                        actor="monitor",
                        reason=reason,
                        action="verdict",
                        cause="verdict",
                    )
            if plan.outcome != "duplicate":
                session.add(
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

    # -- outbox ---------------------------------------------------------------------------

    def pending_events(self, limit: int) -> list[PendingEvent]:
        """Unpublished outbox rows, oldest first."""
        with self._read() as session:
            rows = session.execute(
                select(OutboxRow.id, OutboxRow.event_id, OutboxRow.payload)
                .where(OutboxRow.published_at.is_(None))
                .order_by(OutboxRow.id)
                .limit(limit)
            )
            return [PendingEvent(r.id, r.event_id, r.payload) for r in rows]

    def mark_published(self, ids: list[int]) -> None:
        """Record that Kafka acknowledged these outbox rows."""
        with self._write() as tx:
            tx.session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_(ids), OutboxRow.published_at.is_(None))
                .values(published_at=utcnow())
            )

    def pending_count(self) -> int:
        """How many outbox rows wait to be published."""
        with self._read() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(OutboxRow.published_at.is_(None))
                )
                or 0
            )
