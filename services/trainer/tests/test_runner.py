from __future__ import annotations

from pathlib import Path

from flywheel_shared.spec import load_spec
from flywheel_trainer.runner import run_job
from flywheel_trainer.worker import TrainJob

ROOT = Path(__file__).resolve().parents[3]


async def test_a_run_past_its_timeout_is_killed_and_reported(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    job = TrainJob(
        model="fraud",
        spec=spec,
        run_id="r1",
        correlation_id="c1",
        storage_uri=str(tmp_path),
        registry_url="http://127.0.0.1:9",  # never reached: the worker is killed first
    )
    result = await run_job(job, timeout_s=0.3)
    assert result.status == "failed" and result.error == "recipe timed out after 0.3 s"


async def test_a_worker_that_cannot_reach_the_registry_asks_for_a_retry(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    job = TrainJob(
        mode="reproduce",
        model="fraud",
        spec=spec,
        run_id="r2",
        correlation_id="c2",
        storage_uri=str(tmp_path),
        registry_url="http://127.0.0.1:9",  # nothing listens on port 9 (discard)
        version=1,
    )
    result = await run_job(job, timeout_s=120)
    assert result.status == "failed" and result.retryable, result.error
