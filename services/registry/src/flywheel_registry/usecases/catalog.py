"""Specs, the dataset contracts they declare, and the artifacts index."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from flywheel_shared.registry import Artifact, ModelInfo
from flywheel_shared.spec import DatasetContract, ModelSpec

from .. import records
from ..db import ArtifactRow, ModelRow, utcnow
from ..domain.errors import NotFound
from ..repository import Repository
from ..transactions import Database, retry_races
from . import lookup


def spec_sha256(spec: ModelSpec) -> str:
    """Hash of a spec's canonical JSON (key order and YAML layout do not matter)."""
    data = spec.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def put_spec(db: Database, spec: ModelSpec) -> tuple[ModelInfo, bool]:
    """Create or replace a model's spec; returns the model and whether it is new."""
    data = spec.model_dump(mode="json", by_alias=True)
    digest = spec_sha256(spec)

    def attempt() -> tuple[ModelInfo, bool]:
        with db.write() as tx:
            repo, now = Repository(tx.session), utcnow()
            row = repo.model(spec.name, lock=True)
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
                repo.add(row)
            elif row.spec_sha256 != digest:
                row.spec, row.spec_sha256, row.updated_at = data, digest, now
                row.description, row.dataset = spec.description, spec.dataset.name
            repo.flush()
            return records.model_info(repo, row, with_spec=True), created

    return retry_races(attempt)


def list_models(db: Database) -> list[ModelInfo]:
    """Every model (without its spec), by name."""
    with db.read() as session:
        repo = Repository(session)
        return [records.model_info(repo, r, with_spec=False) for r in repo.models()]


def get_model(db: Database, name: str) -> ModelInfo:
    """One model with its spec and aliases."""
    with db.read() as session:
        repo = Repository(session)
        return records.model_info(repo, lookup.model(repo, name), with_spec=True)


def get_spec(db: Database, name: str) -> dict[str, Any]:
    """A model's spec as stored (JSON, ``apiVersion`` spelled as in YAML)."""
    with db.read() as session:
        return lookup.model(Repository(session), name).spec


def list_contracts(db: Database) -> list[DatasetContract]:
    """Every dataset contract; when several specs declare a dataset, the newest wins."""
    with db.read() as session:
        rows = Repository(session).models_by_update()
    newest = {r.dataset: r.spec["dataset"] for r in rows}
    return [DatasetContract.model_validate(newest[name]) for name in sorted(newest)]


def get_contract(db: Database, dataset: str) -> DatasetContract:
    """The contract of ``dataset`` from the most recently updated spec declaring it."""
    with db.read() as session:
        row = Repository(session).newest_declaring(dataset)
    if row is None:
        raise NotFound("unknown_dataset", f"no model spec declares dataset '{dataset}'")
    return DatasetContract.model_validate(row.spec["dataset"])


def record_artifact(db: Database, sha256: str, size: int, uri: str) -> tuple[Artifact, bool]:
    """Index a stored artifact; returns it and whether it is new."""

    def attempt() -> tuple[Artifact, bool]:
        with db.write() as tx:
            repo = Repository(tx.session)
            row = repo.artifact(sha256)
            if row is not None:
                return records.artifact(row), False
            row = ArtifactRow(sha256=sha256, size=size, uri=uri, created_at=utcnow())
            repo.add(row)
            repo.flush()
            return records.artifact(row), True

    return retry_races(attempt)


def get_artifact(db: Database, sha256: str) -> Artifact:
    """An indexed artifact."""
    with db.read() as session:
        row = Repository(session).artifact(sha256)
    if row is None:
        raise NotFound("unknown_artifact", f"no artifact {sha256}")
    return records.artifact(row)
