"""One training run in its own process: ``python -m flywheel_trainer.worker JOB OUT PARENT_PID``.

Reads the dataset snapshot, cuts the holdout, runs the user's recipe, evaluates challenger and
champion on the same holdout, gates, stores the artifact and a reference sample, and registers
the version. Runs in a separate process so the service's event loop stays responsive, a
recipe can be killed on timeout, and a crash in user code cannot take the service down.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import io
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from flywheel_shared.datasets import read_frame, read_manifest
from flywheel_shared.modelio import FORMAT, dump_model, load_model
from flywheel_shared.registry import (
    Lineage,
    ModelVersion,
    RegistryClient,
    RegistryUnavailable,
    VersionCreate,
)
from flywheel_shared.snapshots import (
    build_snapshot,
    read_snapshot,
    resolve_snapshot,
    write_snapshot,
)
from flywheel_shared.spec import ModelSpec, Window
from flywheel_shared.storage import ObjectStore

from .domain.dataset import Split, training_split, window_segments
from .domain.evaluation import apply_gates, compute_metrics

REFERENCE_ROWS = 2000


class TrainJob(BaseModel):
    """What the service asks a worker to do."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["train", "reproduce"] = "train"
    model: str
    spec: ModelSpec
    run_id: str
    correlation_id: str
    snapshot_id: str | None = Field(None, description="None: the dataset's latest snapshot")
    storage_uri: str
    registry_url: str
    registry_token: str | None = None
    version: int | None = Field(None, description="reproduce: the version to re-run")


class TrainResult(BaseModel):
    """What the worker reports back."""

    status: Literal["registered", "failed", "reproduced"]
    version: int | None = None
    passed: bool = False
    reasons: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    champion_version: int | None = None
    champion_metrics: dict[str, float] | None = None
    snapshot_id: str | None = None
    error: str | None = None
    retryable: bool = False
    seconds: float = 0.0
    lineage: Lineage | None = None


def _resolve(entrypoint: str) -> Callable[..., Any]:
    module_name, func = entrypoint.split(":")
    module = importlib.import_module(module_name)
    fn: Callable[..., Any] = getattr(module, func)
    return fn


def recipe_fingerprint(entrypoint: str) -> tuple[str, str]:
    """(sha256 of the recipe module's source, code version of its package)."""
    fn = _resolve(entrypoint)
    source = inspect.getsource(inspect.getmodule(fn))  # type: ignore[arg-type]
    digest = hashlib.sha256(source.encode()).hexdigest()
    top = entrypoint.split(".")[0].split(":")[0]
    dists = packages_distributions().get(top, [])
    try:
        code = f"{dists[0]}=={version(dists[0])}" if dists else "unpackaged"
    except PackageNotFoundError:
        code = "unpackaged"
    commit = _git_commit(Path(inspect.getfile(fn)).parent)
    return digest, f"{code}+git.{commit}" if commit else code


def _git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def lock_fingerprint() -> str | None:
    """sha256 of the environment's lock file (``FLYWHEEL_LOCK_FILE`` or the nearest uv.lock)."""
    explicit = os.environ.get("FLYWHEEL_LOCK_FILE")
    candidates = (
        [Path(explicit)] if explicit else [p / "uv.lock" for p in [Path.cwd(), *Path.cwd().parents]]
    )
    for path in candidates:
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))


def _scores(model: Any, frame: pd.DataFrame) -> np.ndarray:
    proba = np.asarray(model.predict_proba(frame))
    return proba[:, 1] if proba.ndim == 2 else proba


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def reference_sample(spec: ModelSpec, holdout: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """The monitor's drift reference: the holdout's features, label and scores (its last
    :data:`REFERENCE_ROWS`). Personal features are not monitored, so not kept either."""
    kept = [f for f in spec.features if not spec.dataset.fields[f].personal]
    label = spec.dataset.label_field
    return holdout[[*kept, label]].assign(_score=scores).tail(REFERENCE_ROWS)


def fit_and_evaluate(
    spec: ModelSpec, split: Split, entrypoint: str, params: dict[str, Any], seed: int
) -> tuple[Any, dict[str, float], np.ndarray]:
    """Run the recipe on the train frame; metrics and scores on the holdout."""
    label = spec.dataset.label_field
    assert label is not None
    _seed_everything(seed)
    model = _resolve(entrypoint)(split.train, dict(params))
    if not hasattr(model, "predict_proba"):
        raise TypeError(
            f"recipe {entrypoint} returned {type(model).__name__}, which has no predict_proba"
        )
    scores = _scores(model, split.holdout[list(spec.features)])
    metrics = compute_metrics(split.holdout[label].to_numpy(), scores, spec.metrics.compute)
    return model, metrics, scores


async def _champion(
    client: RegistryClient, job: TrainJob, split: Split
) -> tuple[int | None, dict[str, float] | None]:
    info = await client.get_model(job.model)
    prod = info.aliases.get("production")
    if prod is None:
        return None, None
    champ: ModelVersion = await client.get_version(job.model, prod.version)
    data = await client.download_artifact(champ.artifact_sha256)
    model = load_model(data, champ.artifact_sha256)
    label = job.spec.dataset.label_field
    scores = _scores(model, split.holdout[list(job.spec.features)])
    return prod.version, compute_metrics(
        split.holdout[label].to_numpy(), scores, job.spec.metrics.compute
    )


async def train(job: TrainJob) -> TrainResult:
    """A full training run (mode ``train``) or a re-run of a version (mode ``reproduce``)."""
    started = time.perf_counter()
    spec = job.spec
    store = ObjectStore(job.storage_uri)
    async with RegistryClient(job.registry_url, job.registry_token, actor="trainer") as client:
        if job.mode == "reproduce":
            assert job.version is not None
            old = await client.get_version(job.model, job.version)
            lin = old.lineage
            window = Window.model_validate(lin.holdout["window"])
            fraction = float(lin.holdout["holdout_fraction"])
            snapshot, entrypoint, params, seed = lin.snapshot_id, lin.recipe, lin.params, lin.seed
        else:
            snapshot = job.snapshot_id
            window, fraction = spec.training.window, spec.training.holdout_fraction
            entrypoint = spec.recipe.entrypoint
            seed = spec.recipe.seed
            params = {
                **spec.recipe.params,
                "label": spec.dataset.label_field,
                "features": list(spec.features),
                "seed": seed,
            }

        manifest = await asyncio.to_thread(read_manifest, store, spec.dataset.name)
        if snapshot is None:  # the latest: a new snapshot, past-retention segments left out
            record, segments = build_snapshot(manifest, retention_s=spec.dataset.retention_s)
            await asyncio.to_thread(write_snapshot, store, record)
        else:
            stored = await asyncio.to_thread(read_snapshot, store, spec.dataset.name, snapshot)
            if stored is not None and stored.contains_erased:
                raise ValueError(
                    f"snapshot {snapshot} contained records erased since: it cannot be re-read"
                )
            record, segments = await asyncio.to_thread(resolve_snapshot, store, manifest, snapshot)
        snap_id = record.id
        frame = await asyncio.to_thread(read_frame, store, window_segments(segments, window))
        split = training_split(spec, frame, window, fraction)
        model, metrics, scores = await asyncio.to_thread(
            fit_and_evaluate, spec, split, entrypoint, params, seed
        )
        recipe_sha, code_version = recipe_fingerprint(entrypoint)
        lineage = Lineage(
            dataset=spec.dataset.name,
            snapshot_id=snap_id,
            snapshot_rows=record.rows,
            excluded_segments=len(record.excluded),
            excluded_rows=record.excluded_rows,
            window={**split.info, "segments": len(segments)},
            code_version=code_version,
            recipe=entrypoint,
            recipe_sha256=recipe_sha,
            lock_sha256=lock_fingerprint(),
            params=params,
            seed=seed,
            holdout={
                "window": window.model_dump(),
                "holdout_fraction": fraction,
                "rows": len(split.holdout),
            },
        )
        if job.mode == "reproduce":
            return TrainResult(
                status="reproduced",
                version=job.version,
                metrics=metrics,
                snapshot_id=snap_id,
                seconds=time.perf_counter() - started,
                lineage=lineage,
            )

        champion_version, champion_metrics = await _champion(client, job, split)
        gate = apply_gates(spec.metrics.gates, metrics, champion_metrics)
        artifact = await client.upload_artifact(dump_model(model))
        ref = await client.upload_artifact(_parquet(reference_sample(spec, split.holdout, scores)))
        # The registry's rollout policy picks the first alias (and a canary's weight).
        registered = await client.register_version(
            job.model,
            VersionCreate(
                run_id=job.run_id,
                status="candidate" if gate.passed else "rejected",
                artifact_sha256=artifact.sha256,
                artifact_format=FORMAT,
                reference_sha256=ref.sha256,
                metrics=metrics,
                champion_metrics=champion_metrics,
                gate_reasons=gate.reasons,
                lineage=lineage,
                parent_version=champion_version,
                training_seconds=time.perf_counter() - started,
                correlation_id=job.correlation_id,
            ),
            rollout=True,  # the registry's rollout policy gives a candidate its first alias
        )
        return TrainResult(
            status="registered",
            version=registered.version,
            passed=gate.passed,
            reasons=gate.reasons,
            metrics=metrics,
            champion_version=champion_version,
            champion_metrics=champion_metrics,
            snapshot_id=snap_id,
            seconds=time.perf_counter() - started,
            lineage=lineage,
        )


def _exit_with_parent(parent: int) -> None:
    """If the service dies (even by SIGKILL), stop too: no orphan run may register a version.

    ``parent`` comes from the service, so a death during this process's (slow) imports is
    noticed as well.
    """

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    if os.getppid() != parent:
        os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


#: What a warm worker (``--serve``) imports before it waits: what recipes usually need.
PRELOAD = ("sklearn.linear_model", "sklearn.ensemble", "sklearn.pipeline", "sklearn.compose")


def _serve(parent: int) -> list[str] | None:
    """Warm mode: import ahead, then read ``JOB<TAB>OUT`` from stdin (None: nothing came)."""
    for name in (
        *PRELOAD,
        *filter(None, os.environ.get("FLYWHEEL_TRAINER_PRELOAD", "").split(",")),
    ):
        try:
            importlib.import_module(name.strip())
        except ImportError:
            pass
    line = sys.stdin.readline().strip()
    if not line:
        return None
    job_path, out_path = line.split("\t")
    return [job_path, out_path, str(parent)]


def _from_store(prefix: str) -> int:
    """Kubernetes Job mode: ``PREFIX/job.json`` from the store in, ``PREFIX/result.json`` out.

    The store is ``FLYWHEEL_STORAGE_URI``; the registry token (kept out of the stored job)
    comes from ``FLYWHEEL_TRAINER_REGISTRY_TOKEN``.
    """
    store = ObjectStore(os.environ["FLYWHEEL_STORAGE_URI"])
    job = TrainJob.model_validate_json(store.get(f"{prefix}/job.json"))
    if job.registry_token is None and os.environ.get("FLYWHEEL_TRAINER_REGISTRY_TOKEN"):
        job = job.model_copy(
            update={"registry_token": os.environ["FLYWHEEL_TRAINER_REGISTRY_TOKEN"]}
        )
    result = _execute(job)
    store.put(f"{prefix}/result.json", result.model_dump_json().encode())
    return 0 if result.status != "failed" else 1


def _execute(job: TrainJob) -> TrainResult:
    started = time.perf_counter()
    try:
        result = asyncio.run(train(job))
    except RegistryUnavailable as exc:
        result = TrainResult(status="failed", error=str(exc), retryable=True)
    except Exception as exc:
        tb = traceback.format_exc(limit=8)
        result = TrainResult(status="failed", error=f"{type(exc).__name__}: {exc}\n{tb}")
    return result.model_copy(update={"seconds": time.perf_counter() - started})


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) == 2 and args[0] == "--from-store":
        return _from_store(args[1])
    warm = len(args) == 2 and args[0] == "--serve"
    if warm:
        _exit_with_parent(int(args[1]))
        served = _serve(int(args[1]))
        if served is None:
            return 0
        args = served
    if len(args) != 3:
        print(
            "usage: python -m flywheel_trainer.worker JOB.json OUT.json PARENT_PID\n"
            "       python -m flywheel_trainer.worker --serve PARENT_PID  (job on stdin)",
            file=sys.stderr,
        )
        return 2
    if not warm:
        _exit_with_parent(int(args[2]))
    job = TrainJob.model_validate_json(Path(args[0]).read_text())
    Path(args[1]).write_text(_execute(job).model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
