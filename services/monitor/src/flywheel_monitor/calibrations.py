"""Drift calibrations: computed once per model version, stored, reused by every worker and restart.

Calibrating a detector (bootstrapping thresholds on the version's reference sample) takes seconds
to minutes, so it runs in a separate process, seeded, when a version appears. Its result is stored
in the object store under ``monitor/calibrations/<key>.bin``, where the key is a hash of the
drift configuration and the version's reference sample: every worker, every restart and every
replica reads the same thresholds instead of recalibrating (alibi-detect's own ``load_detector``
would recalibrate with an unseeded RNG).
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd

from flywheel_shared.spec import ModelSpec
from flywheel_shared.storage import ObjectStore

from .drift import Calibration, DriftConfig, calibrate, config_from_spec
from .metrics import CALIBRATION_SECONDS, CALIBRATIONS

log = logging.getLogger(__name__)


def _calibrate_bytes(reference: bytes, config: dict[str, object]) -> bytes:
    """Process-pool entry point: Parquet bytes + config in, calibration bytes out."""
    frame = pd.read_parquet(io.BytesIO(reference))
    return calibrate(frame, DriftConfig.from_dict(config)).to_bytes()


def _warm_up() -> None:
    """Runs first in each pool process: its imports (pandas, scipy, river) cost seconds, paid
    at start-up rather than when the first version needs its detectors. The process also ends
    when the monitor dies, even by SIGKILL (a pool process would otherwise wait forever)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-monitor").start()
    from . import drift  # noqa: F401


@dataclass(frozen=True)
class VersionRef:
    """What calibration needs to know about a version."""

    model: str
    version: int
    spec: ModelSpec
    reference: bytes | None
    """The version's reference sample (Parquet), or None when it has none."""


class Calibrations:
    """Stored calibrations, computed in a process pool when missing (one job per key)."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        backend: str = "auto",
        seed: int = 0,
        n_bootstrap: int | None = None,
        workers: int = 1,
        executor: Executor | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.seed = seed
        self.n_bootstrap = n_bootstrap
        self._executor = executor or ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_warm_up,
        )
        if executor is None:
            self._executor.submit(int)  # start the processes now (a pool starts them lazily)
        self._memory: dict[str, Calibration] = {}
        self._jobs: dict[str, asyncio.Task[Calibration | None]] = {}

    def config(self, spec: ModelSpec) -> DriftConfig:
        """The drift configuration of a spec under this monitor's settings."""
        overrides: dict[str, object] = {}
        if self.n_bootstrap is not None:
            overrides["n_bootstrap"] = self.n_bootstrap
        return config_from_spec(spec, backend=self.backend, seed=self.seed, **overrides)  # type: ignore[arg-type]

    @staticmethod
    def _key(ref: VersionRef, config: DriftConfig) -> str:
        import hashlib

        import orjson

        digest = hashlib.sha256(orjson.dumps(config.to_dict(), option=orjson.OPT_SORT_KEYS))
        digest.update(ref.reference or b"")
        # Named by content: versions sharing a reference and a configuration share it.
        return f"monitor/calibrations/{digest.hexdigest()}.bin"

    def ready(self, ref: VersionRef) -> Calibration | None:
        """The calibration of ``ref`` if it is in memory or stored; else start computing it."""
        if ref.reference is None:
            return None
        config = self.config(ref.spec)
        key = self._key(ref, config)
        if key in self._memory:
            return self._memory[key]
        if key not in self._jobs:
            self._jobs[key] = asyncio.create_task(self._load_or_compute(key, ref, config))
            return None
        job = self._jobs[key]
        if job.done():
            del self._jobs[key]
            if job.cancelled() or job.exception() is not None:
                log.error(
                    "calibration failed; retrying", extra={"key": key}, exc_info=job.exception()
                )
                return None
            cal = job.result()
            if cal is not None:
                self._memory[key] = cal
            return cal
        return None

    async def wait(self, ref: VersionRef, timeout: float = 600.0) -> Calibration | None:
        """Calibrate (or load) ``ref`` and wait for it (used when a version is registered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cal = self.ready(ref)
            if cal is not None or ref.reference is None:
                return cal
            key = self._key(ref, self.config(ref.spec))
            job = self._jobs.get(key)
            if job is not None:
                await asyncio.wait([job], timeout=max(0.0, deadline - time.monotonic()))
        return None

    async def _load_or_compute(self, key: str, ref: VersionRef, config: DriftConfig) -> Calibration:
        stored = await asyncio.to_thread(self._read, key)
        if stored is not None:
            CALIBRATIONS.labels("loaded").inc()
            log.info("calibration loaded", extra={"model": ref.model, "version": ref.version})
            return Calibration.from_bytes(stored)
        assert ref.reference is not None
        started = time.perf_counter()
        log.info(
            "calibrating drift detectors",
            extra={"model": ref.model, "version": ref.version, "backend": config.backend},
        )
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                self._executor, _calibrate_bytes, ref.reference, config.to_dict()
            )
        except Exception:
            # Said at once (the version's rows wait meanwhile); the next look retries.
            CALIBRATIONS.labels("failed").inc()
            log.error(
                "calibration failed",
                extra={"model": ref.model, "version": ref.version, "backend": config.backend},
                exc_info=True,
            )
            raise
        seconds = time.perf_counter() - started
        CALIBRATION_SECONDS.labels(config.backend).observe(seconds)
        CALIBRATIONS.labels("computed").inc()
        await asyncio.to_thread(self.store.put, key, data)
        log.info(
            "calibration stored",
            extra={"model": ref.model, "version": ref.version, "seconds": round(seconds, 2)},
        )
        return Calibration.from_bytes(data)

    def _read(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except FileNotFoundError:
            return None

    def shutdown(self) -> None:
        """Stop the calibration processes."""
        self._executor.shutdown(wait=False, cancel_futures=True)
