"""The closed loop end to end, as `make up` runs it, shortened: real Kafka, five real services.

Drift → detection → exactly one retrain → v2 through shadow and canary to all traffic →
accuracy back; one correlation id from the triggering data batch to the verdicts; not one
failed client request.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel_local.record import RunRecord, loop_latency, outcome
from flywheel_local.scenario import Observer, Scenario, bring_up, demo_spec, run
from flywheel_local.stack import SERVICES, LocalStack
from flywheel_shared.events import (
    BatchCommitted,
    ModelAliasChanged,
    RetrainRequested,
    RolloutVerdict,
    TrainingStarted,
)
from flywheel_shared.ops import trace

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(900)
async def test_drift_is_detected_retrained_rolled_out_and_accuracy_recovers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    stack = LocalStack(tmp_path / "run", kafka_bootstrap)
    spec = demo_spec(ROOT)
    rec = RunRecord(model=spec.name, started=time.time())
    lines: list[str] = []
    observer = Observer(stack, rec, lambda e: None)
    try:
        await bring_up(stack, spec, lines.append)
        await observer.start()
        # Generous deadlines: a loaded CI machine slows the stream, not the logic under test.
        sc = Scenario(warmup_s=8, recover_s=8, v1_timeout_s=240, loop_timeout_s=300)
        await run(sc, stack, spec, rec, lines.append)
        lat = loop_latency(rec)
        out = outcome(rec, lat)
        # One retrain for the episode (several findings may confirm it), then v2 everywhere.
        assert out.drift_findings >= 1, "the drift was not detected"
        assert out.retrain_requests == 1
        assert lat is not None and lat.complete and lat.new_version == 2, lat
        assert rec.production() == 2
        # Accuracy (ROC AUC and accuracy at 0.5) fell under the drift and came back.
        assert out.during.roc_auc < out.before.roc_auc - 0.2, out
        assert out.after.roc_auc > out.during.roc_auc + 0.2, out
        # "Came back": within the sampling noise of the two windows (3 standard errors; about
        # 0.1 for ~2,000 labelled answers with a few percent fraud), not a fixed 0.02.
        noise = 3 * math.hypot(out.before.roc_auc_se(), out.after.roc_auc_se())
        assert out.after.roc_auc >= out.before.roc_auc - max(0.02, noise), (out, noise)
        assert out.after.accuracy >= out.before.accuracy - 0.02, out
        assert out.after.n > 500
        assert out.failed_requests == 0, rec.failures
        assert out.requests > 1000

        # The audit trail: one correlation id from the data batch to the verdicts.
        [retrain] = [e for e in rec.of(TrainingStarted) if e.trigger == "retrain"]
        trail = await trace.collect(stack.kafka, correlation_id=retrain.correlation_id)
        kinds = [s.type for s in trail.steps]
        first = {k: kinds.index(k) for k in reversed(kinds)}
        assert first["data.batch.committed"] < first["training.started"]
        assert first["model.version.registered"] < first["model.alias.changed"]
        assert first["model.alias.changed"] < first["retrain.requested"]
        assert first["retrain.requested"] < first["rollout.verdict"]
        events = [s.event for s in trail.steps]
        batches = [e for e in events if isinstance(e, BatchCommitted)]
        assert len(batches) == 1  # the batch that triggered v1
        assert [e.trigger for e in events if isinstance(e, TrainingStarted)] == [
            "new_data",
            "retrain",
        ]
        assert len([e for e in events if isinstance(e, RetrainRequested)]) == 1
        moves = [(e.alias, e.version) for e in events if isinstance(e, ModelAliasChanged)]
        assert [v for alias, v in moves if alias == "production"] == [1, 2]
        assert ("shadow", 2) in moves and ("canary", 2) in moves
        verdicts = [e.decision for e in events if isinstance(e, RolloutVerdict)]
        assert "promote" in verdicts and "rollback" not in verdicts

        # Every metric the alert rules and dashboards name is served by a running service.
        served = await served_metric_names(stack)
        wanted = {m for m in observability().referenced_metrics() if m.startswith("flywheel_")}
        missing = {m for m in wanted if family(m) not in served}
        assert not missing, f"named by rules/dashboards but served by no service: {missing}"
    finally:
        await observer.stop()
        stack.stop()


def observability() -> Any:
    """``deploy/checks/observability.py`` (a script, not a package)."""
    path = ROOT / "deploy" / "checks" / "observability.py"
    spec = importlib.util.spec_from_file_location("observability", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["observability"] = module
    spec.loader.exec_module(module)
    return module


def family(sample: str) -> str:
    """The metric family a sample name belongs to (``x_total`` → ``x``, ``h_bucket`` → ``h``)."""
    for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


async def served_metric_names(stack: LocalStack) -> set[str]:
    """Families on the five services' ``/metrics`` (``# TYPE`` lines: also never observed ones)."""
    names: set[str] = set()
    async with httpx.AsyncClient(timeout=10) as http:
        for name in SERVICES:
            text = (await http.get(stack.url(name) + "/metrics")).text
            for line in text.splitlines():
                if line.startswith("# TYPE "):
                    fam = line.split()[2]
                    names |= {fam, family(fam)}
    return names
