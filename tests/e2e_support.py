"""Helpers for the end-to-end tests: the services as real processes on a real broker."""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from flywheel_fraud.simulator import FraudSimulator
from flywheel_local.stack import LocalStack
from flywheel_shared.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def fraud_spec(name: str = "fraud", **training: Any) -> tuple[ModelSpec, dict[str, Any]]:
    """The example fraud spec, renamed, with test-sized training settings."""
    data = yaml.safe_load((ROOT / "examples" / "fraud" / "flywheel.yaml").read_text())
    data["name"] = name
    data["training"].update(
        {"min_new_rows": 6000, "cooldown_s": 0, "fresh_rows": 0, "window": {"kind": "all"}}
    )
    data["training"].update(training)
    return ModelSpec.model_validate(data), data


class Stack(LocalStack):
    """Registry, ingest and trainer processes sharing one topic prefix and one store.

    The local stack's launcher (``flywheel_local.stack.LocalStack``) with three of its five
    services, a fresh prefix, a fixed token and faster trainer polling; a test that needs
    serving or the monitor adds it with ``process("serving", {...})``.
    """

    def __init__(
        self,
        bootstrap: str,
        tmp: Path,
        database_url: str | None = None,
        trainer_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            run_dir=tmp,
            bootstrap=bootstrap,
            prefix=f"e{uuid.uuid4().hex[:8]}",
            token="test-token",
            env={"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
            services=("registry", "ingest", "trainer"),
            database_url=database_url,
            service_env={
                "trainer": {
                    "FLYWHEEL_TRAINER_SPEC_REFRESH_S": "1",
                    "FLYWHEEL_TRAINER_RETRY_S": "1",
                    **(trainer_env or {}),
                }
            },
        )
        self.tmp = tmp
        self.store = tmp / "store"
        self.registry = self.procs["registry"]
        self.ingest = self.procs["ingest"]
        self.trainer = self.procs["trainer"]


def post_records(stack: Stack, n: int = 6000, seed: int = 6, start: datetime | None = None) -> None:
    """``n`` simulated transactions into ingest over HTTP, 500 a request (each must be 202).

    5% fraud: enough positives in a few thousand rows for a stable ROC AUC (≈ 0.89 here);
    ``start`` sets the first event time (the simulator's default otherwise)."""
    extra = {"start": start} if start is not None else {}
    sim = FraudSimulator(seed=seed, fraud_rate=0.05, **extra)
    for _ in range(0, n, 500):
        req = urllib.request.Request(
            f"{stack.ingest.url}/v1/datasets/transactions/records",
            data=json.dumps(sim.batch(500)).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
