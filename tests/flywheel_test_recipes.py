"""Recipes used only by the end-to-end tests (importable by the trainer's worker process)."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from flywheel_fraud.recipes import logistic_regression


def constant(frame: pd.DataFrame, params: dict[str, Any]) -> Pipeline:
    """A useless model (predicts the base rate): must be gated out."""
    x = frame[params["features"]]
    return Pipeline([("dummy", DummyClassifier(strategy="prior"))]).fit(x, frame[params["label"]])


def slow(frame: pd.DataFrame, params: dict[str, Any]) -> Pipeline:
    """The logistic regression recipe, after a pause (to test what happens mid-training)."""
    time.sleep(float(params.get("sleep_s", 3.0)))
    return logistic_regression(frame, params)
