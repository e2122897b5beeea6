"""Helpers for the end-to-end tests: the services as real processes on a real broker."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import yaml

from flywheel_devkit.kafka import pick_free_port
from flywheel_devkit.testing.procs import ServiceProcess
from flywheel_shared.spec import ModelSpec
from flywheel_shared.topics import TopicNamer

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


class Stack:
    """Registry, ingest and trainer processes sharing one topic prefix and one store."""

    def __init__(
        self,
        bootstrap: str,
        tmp: Path,
        database_url: str | None = None,
        trainer_env: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.prefix = f"e{uuid.uuid4().hex[:8]}"
        self.topics = TopicNamer(self.prefix)
        self.store = tmp / "store"
        self.token = "test-token"
        common = {
            "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap,
            "FLYWHEEL_KAFKA_TOPIC_PREFIX": self.prefix,
            "FLYWHEEL_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "FLYWHEEL_STORAGE_URI": str(self.store),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        reg_port, ingest_port, trainer_port = pick_free_port(), pick_free_port(), pick_free_port()
        self.registry_url = f"http://127.0.0.1:{reg_port}"
        self.registry = ServiceProcess(
            "flywheel_registry",
            {
                **common,
                "FLYWHEEL_REGISTRY_PORT": str(reg_port),
                "FLYWHEEL_REGISTRY_TOKEN": self.token,
                "FLYWHEEL_REGISTRY_DATABASE_URL": database_url
                or f"sqlite:///{tmp / 'registry.db'}",
                "FLYWHEEL_REGISTRY_RELAY_POLL_S": "0.2",
            },
            reg_port,
            tmp / "registry.log",
        )
        self.ingest = ServiceProcess(
            "flywheel_ingest",
            {
                **common,
                "FLYWHEEL_INGEST_PORT": str(ingest_port),
                "FLYWHEEL_INGEST_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_INGEST_SEGMENT_SECONDS": "1",
            },
            ingest_port,
            tmp / "ingest.log",
        )
        self.trainer = ServiceProcess(
            "flywheel_trainer",
            {
                **common,
                "FLYWHEEL_TRAINER_PORT": str(trainer_port),
                "FLYWHEEL_TRAINER_REGISTRY_URL": self.registry_url,
                "FLYWHEEL_TRAINER_REGISTRY_TOKEN": self.token,
                "FLYWHEEL_TRAINER_SPEC_REFRESH_S": "1",
                "FLYWHEEL_TRAINER_RETRY_S": "1",
                **(trainer_env or {}),
            },
            trainer_port,
            tmp / "trainer.log",
        )

    def stop(self) -> None:
        for proc in (self.trainer, self.ingest, self.registry):
            proc.stop()
