"""The baseline of ``bench/serving.py``: a plain FastAPI app serving the same model file.

What a team would write without Flywheel: load the skops file once, score each request's
records with ``predict_proba``, answer JSON. No contract validation, no prediction log, no
batching. ``BENCH_MODEL_PATH`` is the model file, ``BENCH_FEATURES`` its comma-separated
feature list. Run: ``uvicorn bench.serving_fastapi_app:app --workers N``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

from flywheel_shared.modelio import load_model

_DATA = Path(os.environ["BENCH_MODEL_PATH"]).read_bytes()
MODEL = load_model(_DATA, hashlib.sha256(_DATA).hexdigest())
FEATURES = os.environ["BENCH_FEATURES"].split(",")
app = FastAPI()


class PredictRequest(BaseModel):
    """``{"records": [{feature: value, ...}, ...]}``."""

    records: list[dict[str, Any]]


@app.post("/v1/models/fraud/predict")
async def predict(body: PredictRequest) -> dict[str, Any]:
    """Score the records."""
    proba = MODEL.predict_proba(pd.DataFrame(body.records, columns=FEATURES))
    return {"predictions": [{"score": float(p)} for p in proba[:, 1]]}
