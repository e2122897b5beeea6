"""FastAPI peers of ``bench/serving.py``: the same skops file, the same DataFrame columns.

Two ASGI apps in one module:

* ``plain``: what a team would write without a platform: load the model once, score each
  request's records with ``predict_proba`` on the event loop, answer JSON. No contract
  validation, no prediction log, no batching.
* ``batched``: the same app with Flywheel's own dynamic batching
  (``flywheel_serving.batching.AdaptiveBatcher``, one executor thread, the same
  ``max_batch_size`` as Flywheel's default, 128): concurrent requests are scored in one
  ``predict_proba`` call. The gap between ``batched`` and Flywheel is the platform's cost
  (BentoML, validation, routing, prediction log), not batching.

``BENCH_MODEL_PATH`` is the skops file, ``BENCH_FEATURES`` the comma-separated feature list,
``BENCH_MAX_BATCH`` the batcher's largest batch. Run with ``bench/peers/nodelay.py`` (uvicorn
workers on a listener that gives accepted sockets ``TCP_NODELAY``).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

from flywheel_serving.batching import AdaptiveBatcher
from flywheel_shared.modelio import load_model

_DATA = Path(os.environ["BENCH_MODEL_PATH"]).read_bytes()
MODEL = load_model(_DATA, hashlib.sha256(_DATA).hexdigest())
FEATURES = os.environ["BENCH_FEATURES"].split(",")
MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "128"))


class PredictRequest(BaseModel):
    """``{"records": [{feature: value, ...}, ...]}``."""

    records: list[dict[str, Any]]


def score(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """P(fraud) per record."""
    proba = MODEL.predict_proba(pd.DataFrame(records, columns=FEATURES))
    return [{"score": float(p)} for p in proba[:, 1]]


plain = FastAPI()


@plain.post("/v1/models/fraud/predict")
async def predict_plain(body: PredictRequest) -> dict[str, Any]:
    """Score the records, one model call per request."""
    return {"predictions": score(body.records)}


batched = FastAPI()
_batcher: AdaptiveBatcher | None = None


@batched.post("/v1/models/fraud/predict")
async def predict_batched(body: PredictRequest) -> dict[str, Any]:
    """Score the records in a batch with the other requests in flight."""
    global _batcher
    if _batcher is None:  # created on the worker's event loop
        _batcher = AdaptiveBatcher(
            score, max_batch_size=MAX_BATCH, executor=ThreadPoolExecutor(max_workers=1)
        )
    return {"predictions": await _batcher.submit(body.records)}
