"""Stock BentoML 1.4 peer of ``bench/serving.py``: a batchable API, as BentoML's docs recommend.

``@bentoml.api(batchable=True)``: BentoML's adaptive batching concatenates concurrent
requests' record lists (``batch_dim`` 0), the API builds one DataFrame of the same columns as
every other peer, calls ``predict_proba`` once and BentoML splits the answers back. The same
skops file; no validation, no prediction log.

The input is ``list[dict]`` (as in BentoML's own batchable examples, ``list[str]``), not
``pd.DataFrame``: in BentoML 1.4.40 a batchable DataFrame input never answers, since
``PandasDataFrameContainer.get_batch_size`` returns ``batch.shape`` (a tuple) and the
dispatcher's ``batch_size + next_batch_size`` raises (the request times out after 60 s).

    BENCH_MODEL_PATH=... BENCH_FEATURES=... BENCH_WORKERS=2 \
        bentoml serve bench.peers.bento_service:Fraud --port 8000

Request: ``POST /predict`` with ``{"records": [{feature: value, ...}]}`` (the FastAPI peers'
body); answer: the list of P(fraud), one per record.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import bentoml
import pandas as pd

from flywheel_shared.modelio import load_model

MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "128"))


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "2")))
class Fraud:
    """The fraud pipeline behind one batchable endpoint."""

    def __init__(self) -> None:
        data = Path(os.environ["BENCH_MODEL_PATH"]).read_bytes()
        self.model = load_model(data, hashlib.sha256(data).hexdigest())
        self.features = os.environ["BENCH_FEATURES"].split(",")

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    def predict(self, records: list[dict[str, Any]]) -> list[float]:
        """P(fraud) per record."""
        frame = pd.DataFrame(records, columns=self.features)
        return self.model.predict_proba(frame)[:, 1].tolist()
