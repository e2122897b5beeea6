"""Training recipes for the fraud example.

A recipe is a plain function ``train(frame, params) -> estimator`` named in the model spec
(``recipe.entrypoint: flywheel_fraud.recipes:logistic_regression``). The contract:

* ``frame`` is a :class:`pandas.DataFrame` holding only the model's feature columns and the
  label column, one labelled row per record (no missing labels). Column kinds are read from
  the dtypes: ``bool`` columns are used as 0/1, other numeric columns as numbers, and
  ``object`` / ``string`` / ``category`` columns as categories.
* ``params`` is the spec's ``recipe.params`` plus three keys set by the trainer:
  ``"label"`` (name of the label column), ``"features"`` (list of feature column names, in
  model order) and ``"seed"`` (int, for every source of randomness). Keys a recipe does not
  know are ignored.
* The return value is a fitted scikit-learn :class:`~sklearn.pipeline.Pipeline` whose
  ``predict_proba`` takes a DataFrame with the feature columns (any order, extra columns
  ignored) and returns ``[P(not fraud), P(fraud)]`` per row. It contains only scikit-learn
  objects, so it can be pickled and served without this package.

Given the same frame and params, a recipe returns the same model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler


def _split(frame: pd.DataFrame, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    label = params["label"]
    features = list(params["features"])
    missing = [c for c in [*features, label] if c not in frame.columns]
    if missing:
        raise ValueError(f"training frame lacks columns {missing}")
    y = frame[label]
    if y.isna().any():
        raise ValueError(f"label column '{label}' has {int(y.isna().sum())} missing values")
    y = y.astype(bool).astype(np.int64)
    if y.nunique() < 2:
        raise ValueError(f"label column '{label}' needs both classes to train")
    return frame[features], y


def _kinds(x: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """Split columns into (numeric, bool, categorical) by dtype."""
    numeric: list[str] = []
    boolean: list[str] = []
    categorical: list[str] = []
    for name, dtype in x.dtypes.items():
        column = str(name)
        if pd.api.types.is_bool_dtype(dtype):
            boolean.append(column)
        elif pd.api.types.is_numeric_dtype(dtype):
            numeric.append(column)
        else:
            categorical.append(column)
    return numeric, boolean, categorical


def logistic_regression(frame: pd.DataFrame, params: dict[str, Any]) -> Pipeline:
    """Standardised numbers, one-hot categories and 0/1 bools into a logistic regression.

    Params: ``C`` (inverse regularisation, default 1.0), ``max_iter`` (default 1000),
    ``class_weight`` (``null`` or ``"balanced"``, default ``null``).
    """
    x, y = _split(frame, params)
    numeric, boolean, categorical = _kinds(x)
    prepare = ColumnTransformer(
        [
            ("numeric", StandardScaler(), numeric),
            ("bool", "passthrough", boolean),
            (
                "category",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            ),
        ],
        remainder="drop",
    )
    model = LogisticRegression(
        C=float(params.get("C", 1.0)),
        max_iter=int(params.get("max_iter", 1000)),
        class_weight=params.get("class_weight"),
        random_state=int(params["seed"]),
    )
    pipeline = Pipeline([("prepare", prepare), ("model", model)])
    pipeline.fit(x, y)
    return pipeline


def gradient_boosting(frame: pd.DataFrame, params: dict[str, Any]) -> Pipeline:
    """Histogram gradient boosting with native categorical splits.

    Params: ``learning_rate`` (default 0.1), ``max_iter`` (default 200), ``max_leaf_nodes``
    (default 31), ``min_samples_leaf`` (default 40), ``l2_regularization`` (default 0.0),
    ``early_stopping`` (default true; holds out 10% of the rows, drawn with the seed).
    """
    x, y = _split(frame, params)
    numeric, boolean, categorical = _kinds(x)
    prepare = ColumnTransformer(
        [
            (
                "category",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                categorical,
            ),
            ("rest", "passthrough", numeric + boolean),
        ],
        remainder="drop",
    )
    model = HistGradientBoostingClassifier(
        learning_rate=float(params.get("learning_rate", 0.1)),
        max_iter=int(params.get("max_iter", 200)),
        max_leaf_nodes=int(params.get("max_leaf_nodes", 31)),
        min_samples_leaf=int(params.get("min_samples_leaf", 40)),
        l2_regularization=float(params.get("l2_regularization", 0.0)),
        early_stopping=bool(params.get("early_stopping", True)),
        categorical_features=list(range(len(categorical))) or None,
        random_state=int(params["seed"]),
    )
    pipeline = Pipeline([("prepare", prepare), ("model", model)])
    pipeline.fit(x, y)
    return pipeline
