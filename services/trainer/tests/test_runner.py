from __future__ import annotations

from pathlib import Path

from flywheel_shared.spec import load_spec
from flywheel_trainer.runner import WarmWorker, run_job
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


async def test_a_warm_worker_runs_the_next_job_and_a_fresh_one_is_prepared(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")

    def job(n: int) -> TrainJob:
        return TrainJob(
            mode="reproduce",
            model="fraud",
            spec=spec,
            run_id=f"w{n}",
            correlation_id=f"c{n}",
            storage_uri=str(tmp_path),
            registry_url="http://127.0.0.1:9",
            version=1,
        )

    workers = WarmWorker()
    workers.prepare()
    first = await workers.run(job(1), timeout_s=120)
    assert workers.used == 1  # the job went to the process started ahead of time
    assert first.status == "failed" and first.retryable, first.error  # the same as a cold run
    assert workers._next is not None  # the next one is already starting
    second = await workers.run(job(2), timeout_s=120)
    assert workers.used == 2 and second.retryable
    waiting = await workers._next
    await workers.close()
    assert waiting.returncode is not None  # nothing is left behind
