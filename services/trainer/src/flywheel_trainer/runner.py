"""Start a worker process for a job, with a timeout."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from .worker import TrainJob, TrainResult


async def run_job(job: TrainJob, timeout_s: float) -> TrainResult:
    """Run ``job`` in ``python -m flywheel_trainer.worker``; kill it past ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="flywheel-train-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(job.model_dump_json(by_alias=True))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flywheel_trainer.worker",
            str(job_path),
            str(out_path),
            str(os.getpid()),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return TrainResult(status="failed", error=f"recipe timed out after {timeout_s:g} s")
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        if not out_path.exists():
            tail = stderr.decode(errors="replace")[-2000:]
            return TrainResult(
                status="failed", error=f"worker exited with {proc.returncode}: {tail}"
            )
        return TrainResult.model_validate_json(out_path.read_text())
