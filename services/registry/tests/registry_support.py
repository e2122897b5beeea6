"""Helpers shared by the registry tests (fixtures are in ``conftest.py``)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from flywheel_shared.registry import Lineage, VersionCreate

ROOT = Path(__file__).resolve().parents[3]
FRAUD_SPEC = (ROOT / "examples" / "fraud" / "flywheel.yaml").read_text()


def spec_text(name: str, *, require_approval: str | None = None) -> str:
    """The fraud example spec under another model name (its rollout gated by approval of
    ``require_approval``, if given)."""
    text = FRAUD_SPEC.replace("\nname: fraud\n", f"\nname: {name}\n", 1)
    if require_approval is not None:
        text = text.replace("\nrollout:\n", f"\nrollout:\n  require_approval: {require_approval}\n")
    return text


def unique(prefix: str = "m") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def version_body(
    run_id: str,
    artifact_sha256: str,
    *,
    status: str = "candidate",
    first_alias: str | None = None,
    weight: float | None = None,
    correlation_id: str | None = None,
    parent_version: int | None = None,
) -> VersionCreate:
    return VersionCreate.model_validate(
        {
            "run_id": run_id,
            "status": status,
            "artifact_sha256": artifact_sha256,
            "metrics": {"roc_auc": 0.9, "pr_auc": 0.5},
            "champion_metrics": {"roc_auc": 0.88},
            "gate_reasons": [] if status == "candidate" else ["roc_auc 0.7 < 0.8"],
            "lineage": Lineage(
                dataset="transactions",
                snapshot_id="snap-" + run_id,
                snapshot_rows=1000,
                window={"kind": "last_rows", "value": 1000},
                code_version="0.1.0",
                recipe="flywheel_fraud.recipes:logistic_regression",
                recipe_sha256="ab" * 32,
                lock_sha256="cd" * 32,
                params={"C": 1.0},
                seed=42,
                holdout={"fraction": 0.2},
            ),
            "parent_version": parent_version,
            "training_seconds": 1.5,
            "correlation_id": correlation_id or str(uuid.uuid4()),
            "first_alias": first_alias,
            "first_alias_weight": weight,
        }
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
