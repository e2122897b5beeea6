"""Helpers of the serving tests: fraud models, a registry holding them, a serving process."""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from flywheel_devkit.stack import RegistryStack
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.modelio import dump_model
from flywheel_shared.registry import Lineage, RegistryClient, VersionCreate
from flywheel_shared.spec import ModelSpec, load_spec

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "test-token"


def fraud_spec(name: str = "fraud") -> ModelSpec:
    """The example fraud spec under another name."""
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    return spec.model_copy(update={"name": name})


def records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` request records: the model's features plus the transaction id."""
    spec = fraud_spec()
    keep = [*spec.features, spec.dataset.id_field]
    return [{k: r[k] for k in keep} for r in FraudSimulator(seed=seed).batch(n)]


@lru_cache(maxsize=8)
def trained(c: float = 1.0) -> bytes:
    """A skops logistic-regression fraud model (``c`` varies it between versions)."""
    spec = fraud_spec()
    frame = pd.DataFrame(FraudSimulator(seed=3, fraud_rate=0.05).batch(3000))
    params = {"label": "is_fraud", "features": list(spec.features), "seed": 42, "C": c}
    return dump_model(recipes.logistic_regression(frame, params))


async def register(
    reg: RegistryClient,
    model: str,
    data: bytes,
    *,
    alias: str | None = None,
    weight: float | None = None,
) -> int:
    """Upload ``data`` and register it as a new version; optionally point an alias at it."""
    spec = fraud_spec(model)
    art = await reg.upload_artifact(data)
    body = VersionCreate(
        run_id=uuid.uuid4().hex,
        status="candidate",
        artifact_sha256=art.sha256,
        lineage=Lineage(
            dataset="transactions",
            snapshot_id="0" * 64,
            snapshot_rows=3000,
            code_version="test",
            recipe=spec.recipe.entrypoint,
            recipe_sha256=hashlib.sha256(b"recipe").hexdigest(),
            params={"features": list(spec.features)},
            seed=42,
        ),
        training_seconds=1.0,
        correlation_id=str(uuid.uuid4()),
    )
    version = (await reg.register_version(model, body)).version
    if alias is not None:
        await reg.move_alias(model, alias, version, weight=weight)  # type: ignore[arg-type]
    return version


class Registry(RegistryStack):
    """A real registry process on its own topic prefix and store."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        super().__init__(bootstrap, tmp, TOKEN, prefix_letter="s")

    @property
    def proc(self) -> ServiceProcess:
        """The registry's process (not started)."""
        return self.registry

    def serving(self, tmp: Path, *, workers: int = 2, **env: str) -> ServiceProcess:
        """A serving process (not started) reading this registry (its bentoml home in ``tmp``)."""
        return self.process(
            "serving",
            {
                "BENTOML_HOME": str(tmp / "bentoml"),
                "FLYWHEEL_SERVING_WORKERS": str(workers),
                "FLYWHEEL_SERVING_LOG_FLUSH_S": "0.05",
                **env,
            },
        )
