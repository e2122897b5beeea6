"""The registry's operations as one object, for the app, the consumers and the relay.

Each method is a use case in ``usecases/`` (rules in ``domain/``, SQL in ``repository.py``,
events in ``outbox.py``). Methods are synchronous and safe to call from worker threads.
"""

from __future__ import annotations

from typing import Any

from flywheel_shared.cards import ModelCard
from flywheel_shared.events import RolloutVerdict
from flywheel_shared.registry import (
    AliasState,
    Approval,
    Artifact,
    AuditEntry,
    ModelInfo,
    ModelVersion,
    VersionCreate,
)
from flywheel_shared.spec import DatasetContract, ModelSpec
from flywheel_shared.storage import ObjectStore

from . import outbox
from .domain.aliases import Plan
from .outbox import PendingEvent
from .transactions import Database
from .usecases import aliases, approvals, cards, catalog, facts, verdicts, versions


class RegistryStore(Database):
    """Models, versions, aliases, audit log, artifacts index and outbox."""

    # -- specs, contracts and artifacts ---------------------------------------------------

    def put_spec(self, spec: ModelSpec) -> tuple[ModelInfo, bool]:
        """Create or replace a model's spec; returns the model and whether it is new."""
        return catalog.put_spec(self, spec)

    def list_models(self) -> list[ModelInfo]:
        """Every model (without its spec), by name."""
        return catalog.list_models(self)

    def get_model(self, name: str) -> ModelInfo:
        """One model with its spec and aliases."""
        return catalog.get_model(self, name)

    def get_spec(self, name: str) -> dict[str, Any]:
        """A model's spec as stored (JSON, ``apiVersion`` spelled as in YAML)."""
        return catalog.get_spec(self, name)

    def list_contracts(self) -> list[DatasetContract]:
        """Every dataset contract; when several specs declare a dataset, the newest wins."""
        return catalog.list_contracts(self)

    def get_contract(self, dataset: str) -> DatasetContract:
        """The contract of ``dataset`` from the most recently updated spec declaring it."""
        return catalog.get_contract(self, dataset)

    def record_artifact(self, sha256: str, size: int, uri: str) -> tuple[Artifact, bool]:
        """Index a stored artifact; returns it and whether it is new."""
        return catalog.record_artifact(self, sha256, size, uri)

    def get_artifact(self, sha256: str) -> Artifact:
        """An indexed artifact."""
        return catalog.get_artifact(self, sha256)

    # -- versions -------------------------------------------------------------------------

    def register_version(
        self,
        model: str,
        body: VersionCreate,
        *,
        actor: str = "api",
        rollout: bool = False,
        token: str | None = None,
    ) -> tuple[ModelVersion, bool]:
        """Register a version (next number); the same ``run_id`` returns the existing one.
        ``token``: the name of the bearer token asking, for the audit log (so below)."""
        return versions.register_version(
            self, model, body, actor=actor, rollout=rollout, token=token
        )

    def list_versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model``, oldest first."""
        return versions.list_versions(self, model)

    def get_version(self, model: str, version: int) -> ModelVersion:
        """One version."""
        return versions.get_version(self, model, version)

    def set_status(
        self,
        model: str,
        version: int,
        status: str,
        reason: str = "",
        *,
        actor: str = "api",
        token: str | None = None,
    ) -> ModelVersion:
        """Change a version's status; refuses to retire a version an alias points at."""
        return versions.set_status(self, model, version, status, reason, actor=actor, token=token)

    # -- aliases and verdicts -------------------------------------------------------------

    def move_alias(
        self,
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
        return aliases.move_alias(
            self, model, alias, version, weight=weight, reason=reason, actor=actor, token=token
        )

    def remove_alias(
        self,
        model: str,
        alias: str,
        *,
        reason: str = "",
        actor: str = "api",
        token: str | None = None,
    ) -> None:
        """Remove an alias (NotFound if it is not set)."""
        aliases.remove_alias(self, model, alias, reason=reason, actor=actor, token=token)

    def rollback(
        self, model: str, *, reason: str = "", actor: str = "api", token: str | None = None
    ) -> AliasState:
        """Move production back to the version it served before (per the audit log)."""
        return aliases.rollback(self, model, reason=reason, actor=actor, token=token)

    def history(self, model: str) -> list[AuditEntry]:
        """The alias audit log of ``model``, newest first."""
        return aliases.history(self, model)

    def audit(
        self, *, model: str | None = None, token: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Audited writes (of ``model``, by the token named ``token``), newest first."""
        return aliases.audit(self, model=model, token=token, limit=limit)

    def approve(
        self,
        model: str,
        version: int,
        *,
        reason: str = "",
        actor: str = "api",
        token: str | None = None,
    ) -> Approval:
        """Apply the rollout step ``version`` awaits, re-planned against the current aliases."""
        return approvals.approve(self, model, version, reason=reason, actor=actor, token=token)

    def list_approvals(
        self, *, model: str | None = None, state: str | None = "pending"
    ) -> list[Approval]:
        """Approvals (of ``model``, in ``state``; None: every state), oldest first."""
        return approvals.list_approvals(self, model=model, state=state)

    def apply_verdict(self, verdict: RolloutVerdict) -> Plan:
        """Apply the monitor's verdict per the model's rollout policy, once per event_id."""
        return verdicts.apply_verdict(self, verdict)

    # -- facts and model cards -----------------------------------------------------------

    def record_fact(self, event: facts.FactEvent) -> str:
        """Keep a drift episode, verdict or retrain request for the model cards, once per
        event_id (``recorded``, ``duplicate`` or ``unknown_model``)."""
        return facts.record_fact(self, event)

    def card(self, model: str, version: int, objects: ObjectStore | None = None) -> ModelCard:
        """The model card of a version (the snapshot record read from ``objects``)."""
        return cards.model_card(self, model, version, objects)

    # -- outbox (the relay's port) --------------------------------------------------------

    def pending_events(self, limit: int) -> list[PendingEvent]:
        """Unpublished outbox rows, oldest first."""
        return outbox.pending_events(self, limit)

    def mark_published(self, ids: list[int]) -> None:
        """Record that Kafka acknowledged these outbox rows."""
        outbox.mark_published(self, ids)

    def pending_count(self) -> int:
        """How many outbox rows wait to be published."""
        return outbox.pending_count(self)
