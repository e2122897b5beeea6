"""What a model's raw output becomes, per record and per output tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def rows_from_proba(proba: Any, classes: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-record outputs of ``predict_proba``.

    Binary classifiers: ``{"label", "score"}`` with score = P(second class, the positive one).
    More classes: ``{"label", "probabilities"}`` in the order of ``classes``.
    """
    p = np.asarray(proba, dtype=np.float64)
    best = p.argmax(axis=1)
    labels = [_native(classes[i]) for i in best.tolist()]
    if p.shape[1] == 2:
        return [
            {"label": label, "score": score}
            for label, score in zip(labels, p[:, 1].tolist(), strict=True)
        ]
    return [
        {"label": label, "probabilities": row}
        for label, row in zip(labels, p.tolist(), strict=True)
    ]


def rows_from_predict(predicted: Any) -> list[dict[str, Any]]:
    """Per-record outputs of ``predict`` (models without probabilities)."""
    return [{"label": _native(v)} for v in np.asarray(predicted).tolist()]
