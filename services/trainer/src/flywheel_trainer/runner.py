"""Start a worker process for a job, with a timeout; optionally one started ahead of time.

A worker's imports (pandas, scikit-learn, pyarrow, ...) take seconds, ten and more on a busy
small machine. ``WarmWorker`` starts the next worker while the service is idle, so it has
imported everything when a job comes; each job still runs in a process of its own, which
exits afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from .worker import TrainJob, TrainResult

Process = asyncio.subprocess.Process


async def _spawn(*args: str, stdin: int | None = None) -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flywheel_trainer.worker",
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_job(job: TrainJob, timeout_s: float, warm: Process | None = None) -> TrainResult:
    """Run ``job`` in ``python -m flywheel_trainer.worker``; kill it past ``timeout_s``.

    ``warm``: a worker started with ``--serve`` that waits for its job on stdin.
    """
    with tempfile.TemporaryDirectory(prefix="flywheel-train-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(job.model_dump_json(by_alias=True))
        if warm is not None:
            proc, given = warm, f"{job_path}\t{out_path}\n".encode()
        else:
            proc = await _spawn(str(job_path), str(out_path), str(os.getpid()))
            given = None
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(given), timeout_s)
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


class Executor(Protocol):
    """Where a training job's process runs (``WarmWorker`` locally, or Kubernetes Jobs)."""

    def prepare(self) -> None: ...

    async def run(self, job: TrainJob, timeout_s: float) -> TrainResult: ...

    async def close(self) -> None: ...


class WarmWorker:
    """Keeps one worker process started and imported ahead of the next job."""

    def __init__(self) -> None:
        self._next: asyncio.Task[Process] | None = None
        self.used = 0  # jobs that found a warm worker (for tests and metrics)

    def prepare(self) -> None:
        """Start the next worker in the background (no-op if one is ready or starting)."""
        if self._next is None:
            self._next = asyncio.create_task(
                _spawn("--serve", str(os.getpid()), stdin=asyncio.subprocess.PIPE)
            )

    async def run(self, job: TrainJob, timeout_s: float) -> TrainResult:
        """Run ``job`` on the warm worker if it is alive, else on a fresh one; then prepare."""
        warm: Process | None = None
        if self._next is not None:
            task, self._next = self._next, None
            with contextlib.suppress(Exception):
                proc = await task
                warm = proc if proc.returncode is None else None
        if warm is not None:
            self.used += 1
        try:
            return await run_job(job, timeout_s, warm)
        finally:
            self.prepare()

    async def close(self) -> None:
        """Stop the worker waiting for a job."""
        task, self._next = self._next, None
        if task is None:
            return
        with contextlib.suppress(Exception):
            proc = await task
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
