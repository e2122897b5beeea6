"""The quarantine's baseline: the production model's snapshot, following alias moves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from flywheel_ingest.contracts import RegistryContracts, StaticContracts
from flywheel_ingest.quarantine import Baselines
from flywheel_shared.datasets import Manifest
from flywheel_shared.registry import AliasState, ModelInfo, ModelVersion, RegistryUnavailable
from flywheel_shared.snapshots import Snapshot, write_snapshot
from flywheel_shared.spec import DatasetContract, load_spec
from flywheel_shared.storage import ObjectStore

ROOT = Path(__file__).resolve().parents[3]
SPEC = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SNAPS = {1: "1" * 64, 2: "2" * 64}


class Registry:
    """One model of ``transactions``; ``production`` is its production version."""

    def __init__(self) -> None:
        self.production = 1
        self.down = False

    async def list_models(self) -> list[ModelInfo]:
        if self.down:
            raise RegistryUnavailable(0, "unreachable", "connection refused")
        alias = AliasState(alias="production", version=self.production, updated_at=NOW)
        return [ModelInfo(name="fraud", spec_sha256="s", aliases={"production": alias}, spec=SPEC)]

    async def get_version(self, model: str, version: int) -> ModelVersion:
        lineage = {"dataset": "transactions", "snapshot_id": SNAPS[version], "snapshot_rows": 1}
        lineage |= {"seed": 1, "code_version": "c", "recipe": "m:f", "recipe_sha256": "x"}
        return ModelVersion.model_validate(
            {"model": model, "version": version, "run_id": "r", "status": "candidate"}
            | {"artifact_sha256": "a" * 64, "artifact_uri": "mem://a", "artifact_format": "skops"}
            | {"lineage": lineage, "training_seconds": 1.0, "correlation_id": "c"}
            | {"created_at": NOW}
        )


async def test_the_baseline_follows_production_and_outlives_a_registry_outage(
    tmp_path: Path,
) -> None:
    store = ObjectStore(str(tmp_path))
    for version, rows in ((1, 5000), (2, 8000)):
        snap = Snapshot(
            id=SNAPS[version],
            dataset="transactions",
            segments=["a", "b"],
            rows=rows,
            created_at=NOW,
        )
        write_snapshot(store, snap)
    registry, now = Registry(), [0.0]
    baselines = Baselines(
        RegistryContracts(registry),  # type: ignore[arg-type]
        store,
        refresh_s=5,
        clock=lambda: now[0],
    )
    empty = Manifest(dataset="transactions")
    found = await baselines.get("transactions", empty)
    assert found is not None and found[0] == SNAPS[1]
    assert (found[1].rows, found[1].segments) == (5000, 2)
    registry.production = 2
    now[0] = 4.0  # within refresh_s: the cached answer
    assert (await baselines.get("transactions", empty) or ("",))[0] == SNAPS[1]
    now[0] = 5.0
    found = await baselines.get("transactions", empty)
    assert found is not None and found[0] == SNAPS[2] and found[1].rows == 8000
    registry.down = True
    now[0] = 20.0
    assert (await baselines.get("transactions", empty) or ("",))[0] == SNAPS[2]
    assert await baselines.get("other", empty) is None  # no model of that dataset


async def test_without_a_registry_there_is_no_baseline(
    tmp_path: Path, contract: DatasetContract
) -> None:
    baselines = Baselines(StaticContracts([contract]), ObjectStore(str(tmp_path)))
    assert await baselines.get("tx", Manifest(dataset="tx")) is None
