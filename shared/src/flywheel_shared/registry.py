"""The registry's HTTP API as seen by every other service: resource models and a client.

The registry service (``services/registry``) implements this API; the trainer, ingest,
serving and the ``flywheel models`` CLI use :class:`RegistryClient`. Keeping the resource
models here is what lets services talk to the registry without importing it.

Endpoints (JSON unless said otherwise; writes need ``Authorization: Bearer <token>``):

- ``PUT  /v1/models/{name}/spec`` — body: the model spec (YAML or JSON); validated
- ``GET  /v1/models`` · ``GET /v1/models/{name}`` · ``GET /v1/models/{name}/spec``
- ``GET  /v1/datasets`` · ``GET /v1/datasets/{dataset}/contract``
- ``POST /v1/artifacts`` — body: raw bytes; answers ``{sha256, size, uri}``
- ``GET  /v1/artifacts/{sha256}`` — raw bytes, hash checked by the server before sending
- ``POST /v1/models/{name}/versions`` — :class:`VersionCreate`; idempotent by ``run_id``
- ``GET  /v1/models/{name}/versions`` · ``GET /v1/models/{name}/versions/{v}``
- ``PATCH /v1/models/{name}/versions/{v}`` — ``{"status": "archived", "reason": ...}``
- ``PUT  /v1/models/{name}/aliases/{alias}`` — :class:`AliasMove`; ``DELETE`` removes it
- ``POST /v1/models/{name}/rollback`` — ``{"reason": ...}``: production back to its previous version
- ``GET  /v1/models/{name}/history`` — the alias audit log, newest first
- ``GET  /v1/audit?model=&token=&limit=`` — audited writes (naming their token), newest first

- ``GET  /v1/approvals?model=&state=pending`` — rollout steps awaiting approval
- ``POST /v1/models/{name}/versions/{v}/approve`` — ``{"reason": ...}``: apply the held step
- ``GET  /v1/models/{name}/versions/{v}/card`` — the version's model card
  (:class:`flywheel_shared.cards.ModelCard`; Markdown with ``?format=markdown``)

Each write needs a token with a role (see :mod:`flywheel_shared.auth`): ``service`` to put
specs, upload artifacts and register versions; ``operator`` to move or remove aliases, roll
back and change a version's status; ``approver`` to approve a held rollout step. A token
without it gets 403 ``forbidden_role``.

Errors are ``{"detail": str, "code": str}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# Re-exported: every user of the registry API used to import them from here.
from .aliases import Alias as Alias
from .aliases import VersionStatus as VersionStatus
from .integrity import check_sha256, sha256_hex
from .spec import DatasetContract, ModelSpec

if TYPE_CHECKING:
    from .cards import ModelCard


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Lineage(_Model):
    """Everything needed to reproduce a version."""

    dataset: str
    snapshot_id: str
    snapshot_rows: int
    excluded_segments: int = Field(0, description="segments the snapshot left out (retention)")
    excluded_rows: int = Field(0, description="rows in those segments")
    window: dict[str, Any] = Field(default_factory=dict, description="rows used from the snapshot")
    code_version: str = Field(description="git commit or package version of the recipe's code")
    recipe: str = Field(description="'package.module:function'")
    recipe_sha256: str = Field(description="hash of the recipe function's module source")
    lock_sha256: str | None = Field(None, description="hash of uv.lock (the environment)")
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int
    holdout: dict[str, Any] = Field(default_factory=dict, description="how the holdout was cut")


class _RunOutcome(_Model):
    """The fields a registration (:class:`VersionCreate`) and the version it makes
    (:class:`ModelVersion`) share: what the training run measured and came from. A model
    names it before the base holding its own leading fields (pydantic puts the fields of
    the last base first), so that each keeps its field order in JSON and its schema."""

    metrics: dict[str, float] = Field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    gate_reasons: list[str] = Field(default_factory=list)
    lineage: Lineage
    parent_version: int | None = None
    training_seconds: float
    correlation_id: str


class _VersionCreateHead(_Model):
    run_id: str = Field(description="the training run; registering the same run twice is a no-op")
    status: Literal["candidate", "rejected"]
    artifact_sha256: str
    artifact_format: str = Field("skops", description="skops | pickle | ...")
    reference_sha256: str | None = Field(None, description="reference sample (Parquet) for drift")


class VersionCreate(_RunOutcome, _VersionCreateHead):
    """What the trainer sends to register a version."""

    first_alias: Alias | None = Field(None, description="alias to give a candidate at once")
    first_alias_weight: float | None = Field(None, ge=0, le=1)


class _ModelVersionHead(_Model):
    model: str
    version: int
    run_id: str
    status: VersionStatus
    artifact_sha256: str
    artifact_uri: str
    artifact_format: str
    reference_sha256: str | None = None


class ModelVersion(_RunOutcome, _ModelVersionHead):
    """A registered version."""

    created_at: AwareDatetime | datetime


class AliasState(_Model):
    """Where an alias points."""

    alias: Alias
    version: int
    weight: float | None = None
    updated_at: AwareDatetime | datetime


class AliasMove(_Model):
    """Move an alias."""

    version: int
    weight: float | None = Field(None, ge=0, le=1, description="canary traffic share")
    reason: str = ""


AuditAction = Literal["move", "remove", "rollback", "verdict", "register", "status", "approve"]


class AuditEntry(_Model):
    """One write, append-only: an alias change (``alias`` set; the only kind in a model's
    ``history``), or a registration or status change of ``to_version`` (no alias)."""

    id: int
    model: str
    alias: Alias | None
    from_version: int | None
    to_version: int | None
    weight: float | None = None
    action: AuditAction | str = "move"
    actor: str
    token: str | None = Field(
        None,
        description="the name of the bearer token that made the change (never the token); "
        "null for a change no token made (a rollout verdict from Kafka) or an older row",
    )
    reason: str
    at: AwareDatetime | datetime


class Approval(_Model):
    """A rollout step held for a person with the ``approver`` role (the spec's
    ``rollout.require_approval``): ``version`` entering ``alias``."""

    id: int
    model: str
    version: int
    alias: Alias
    weight: float | None = None
    source: Literal["verdict", "registration"] | str = Field(
        description="what asked for the step: a rollout verdict or a registration"
    )
    decision: str | None = Field(None, description="the verdict's decision")
    reason: str = Field(description="why the step was asked for (the verdict's reasons)")
    state: Literal["pending", "approved", "stale"] | str
    requested_at: AwareDatetime | datetime
    decided_at: AwareDatetime | datetime | None = None
    decided_by: str | None = Field(None, description="the name of the approver's token")
    decision_reason: str = ""


class ModelInfo(_Model):
    """A model: its spec and where its aliases point."""

    name: str
    description: str = ""
    spec_sha256: str
    latest_version: int | None = None
    aliases: dict[str, AliasState] = Field(default_factory=dict)
    spec: ModelSpec | None = None


class Artifact(_Model):
    """A stored artifact."""

    sha256: str
    size: int
    uri: str


class RegistryError(RuntimeError):
    """The registry refused a request (4xx) or failed (5xx)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"registry {status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class RegistryUnavailable(RegistryError):
    """The registry could not be reached."""


class IntegrityError(RegistryError):
    """An artifact's bytes do not match its sha256."""


class RegistryClient:
    """Async client of the registry API."""

    def __init__(
        self, base_url: str, token: str | None = None, *, timeout: float = 30.0, actor: str = ""
    ) -> None:
        headers = {"user-agent": "flywheel"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if actor:
            headers["x-flywheel-actor"] = actor
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise RegistryUnavailable(0, "unreachable", f"{self.base_url}: {exc!r}") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
                code, detail = body.get("code", "error"), body.get("detail", resp.text)
            except ValueError:
                code, detail = "error", resp.text[:300]
            cls = RegistryUnavailable if resp.status_code in (502, 503, 504) else RegistryError
            raise cls(resp.status_code, str(code), str(detail))
        return resp

    # -- specs and contracts -------------------------------------------------------------

    async def put_spec(self, spec: ModelSpec | str) -> ModelInfo:
        """Create or update a model's spec (a ModelSpec or its YAML text)."""
        if isinstance(spec, ModelSpec):
            name = spec.name
            content = spec.model_dump_json(by_alias=True).encode()
            ctype = "application/json"
        else:
            import yaml

            name = str(yaml.safe_load(spec).get("name"))
            content, ctype = spec.encode(), "application/yaml"
        resp = await self._call(
            "PUT", f"/v1/models/{name}/spec", content=content, headers={"content-type": ctype}
        )
        return ModelInfo.model_validate(resp.json())

    async def list_models(self) -> list[ModelInfo]:
        """Every model."""
        return [ModelInfo.model_validate(m) for m in (await self._call("GET", "/v1/models")).json()]

    async def get_model(self, name: str) -> ModelInfo:
        """One model with its spec and aliases."""
        return ModelInfo.model_validate((await self._call("GET", f"/v1/models/{name}")).json())

    async def get_spec(self, name: str) -> ModelSpec:
        """A model's spec."""
        return ModelSpec.model_validate((await self._call("GET", f"/v1/models/{name}/spec")).json())

    async def get_contract(self, dataset: str) -> DatasetContract:
        """A dataset's contract (declared inside some model's spec)."""
        resp = await self._call("GET", f"/v1/datasets/{dataset}/contract")
        return DatasetContract.model_validate(resp.json())

    async def list_contracts(self) -> list[DatasetContract]:
        """Every dataset contract."""
        resp = await self._call("GET", "/v1/datasets")
        return [DatasetContract.model_validate(c) for c in resp.json()]

    # -- artifacts -----------------------------------------------------------------------

    async def upload_artifact(self, data: bytes) -> Artifact:
        """Store bytes; the registry checks the sha256 we send."""
        digest = sha256_hex(data)
        resp = await self._call(
            "POST",
            "/v1/artifacts",
            content=data,
            headers={"content-type": "application/octet-stream", "x-sha256": digest},
        )
        return Artifact.model_validate(resp.json())

    async def download_artifact(self, sha256: str) -> bytes:
        """Fetch bytes and verify their sha256 before returning them."""
        data = (await self._call("GET", f"/v1/artifacts/{sha256}")).content
        check_sha256(
            data,
            sha256,
            lambda actual: IntegrityError(
                0, "hash_mismatch", f"artifact {sha256} arrived as {actual}"
            ),
        )
        return data

    # -- versions ------------------------------------------------------------------------

    async def register_version(
        self, model: str, body: VersionCreate, *, rollout: bool = False
    ) -> ModelVersion:
        """Register a version (idempotent by ``run_id``). With ``rollout`` the registry's rollout
        policy gives a candidate its first alias (``?rollout=true``; the body names none)."""
        resp = await self._call(
            "POST",
            f"/v1/models/{model}/versions",
            params={"rollout": "true"} if rollout else None,
            content=body.model_dump_json(),
        )
        return ModelVersion.model_validate(resp.json())

    async def list_versions(self, model: str) -> list[ModelVersion]:
        """Every version of a model, oldest first."""
        resp = await self._call("GET", f"/v1/models/{model}/versions")
        return [ModelVersion.model_validate(v) for v in resp.json()]

    async def get_version(self, model: str, version: int) -> ModelVersion:
        """One version."""
        resp = await self._call("GET", f"/v1/models/{model}/versions/{version}")
        return ModelVersion.model_validate(resp.json())

    async def set_status(
        self, model: str, version: int, status: VersionStatus, reason: str = ""
    ) -> ModelVersion:
        """Change a version's status (e.g. archive it)."""
        resp = await self._call(
            "PATCH",
            f"/v1/models/{model}/versions/{version}",
            json={"status": status, "reason": reason},
        )
        return ModelVersion.model_validate(resp.json())

    @overload
    async def card(
        self, model: str, version: int, markdown: Literal[False] = False
    ) -> ModelCard: ...

    @overload
    async def card(self, model: str, version: int, markdown: Literal[True]) -> str: ...

    async def card(self, model: str, version: int, markdown: bool = False) -> ModelCard | str:
        """A version's model card (``markdown``: its Markdown text)."""
        from .cards import ModelCard  # cards.py builds on this module's resources

        path = f"/v1/models/{model}/versions/{version}/card"
        if markdown:
            resp = await self._call("GET", path, headers={"accept": "text/markdown"})
            return resp.text
        return ModelCard.model_validate((await self._call("GET", path)).json())

    # -- aliases -------------------------------------------------------------------------

    async def move_alias(
        self,
        model: str,
        alias: Alias,
        version: int,
        *,
        weight: float | None = None,
        reason: str = "",
    ) -> AliasState:
        """Point ``alias`` at ``version`` (audited, announced on model.alias.changed)."""
        move = AliasMove(version=version, weight=weight, reason=reason)
        resp = await self._call(
            "PUT", f"/v1/models/{model}/aliases/{alias}", content=move.model_dump_json()
        )
        return AliasState.model_validate(resp.json())

    async def remove_alias(self, model: str, alias: Alias, reason: str = "") -> None:
        """Remove an alias."""
        await self._call("DELETE", f"/v1/models/{model}/aliases/{alias}", params={"reason": reason})

    async def rollback(self, model: str, reason: str = "") -> AliasState:
        """Move production back to the version it pointed at before."""
        resp = await self._call("POST", f"/v1/models/{model}/rollback", json={"reason": reason})
        return AliasState.model_validate(resp.json())

    async def history(self, model: str) -> list[AuditEntry]:
        """The alias audit log, newest first."""
        resp = await self._call("GET", f"/v1/models/{model}/history")
        return [AuditEntry.model_validate(e) for e in resp.json()]

    async def approve(self, model: str, version: int, reason: str = "") -> Approval:
        """Approve the rollout step ``version`` awaits (409 ``approval_stale`` when it no
        longer applies, ``no_pending_approval`` when none waits)."""
        resp = await self._call(
            "POST", f"/v1/models/{model}/versions/{version}/approve", json={"reason": reason}
        )
        return Approval.model_validate(resp.json())

    async def approvals(
        self, *, model: str | None = None, state: str | None = "pending"
    ) -> list[Approval]:
        """Approvals (default: the pending ones), oldest first."""
        params = {k: v for k, v in (("model", model), ("state", state or "all")) if v}
        resp = await self._call("GET", "/v1/approvals", params=params)
        return [Approval.model_validate(a) for a in resp.json()]

    async def audit(
        self, *, model: str | None = None, token: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Audited writes (alias changes, registrations, status changes), newest first."""
        params: dict[str, Any] = {"limit": limit}
        if model is not None:
            params["model"] = model
        if token is not None:
            params["token"] = token
        resp = await self._call("GET", "/v1/audit", params=params)
        return [AuditEntry.model_validate(e) for e in resp.json()]
