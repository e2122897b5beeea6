"""Recipes: quality before and after drift, determinism, and the train(frame, params) contract."""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from flywheel_fraud import recipes
from flywheel_fraud.simulator import Drift, FraudSimulator
from flywheel_shared.spec import ModelSpec, load_spec

SPEC_PATH = Path(__file__).resolve().parents[1] / "flywheel.yaml"
Recipe = Callable[[pd.DataFrame, dict[str, Any]], Any]


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_spec(SPEC_PATH)


@pytest.fixture(scope="module")
def params(spec: ModelSpec) -> dict[str, Any]:
    """What the trainer passes: the spec's recipe params plus label, features and seed."""
    return {
        **spec.recipe.params,
        "label": spec.dataset.label_field,
        "features": list(spec.features),
        "seed": spec.recipe.seed,
    }


def frame(records: list[dict[str, Any]], spec: ModelSpec) -> pd.DataFrame:
    """The training frame: feature columns and the label column only."""
    return pd.DataFrame.from_records(records)[[*spec.features, spec.dataset.label_field]]


def sample(spec: ModelSpec, n: int, seed: int, drift: Drift = "none") -> pd.DataFrame:
    sim = FraudSimulator(seed=seed, drift_at=0, drift=drift)
    return frame(sim.batch(n), spec)


def auc(model: Any, data: pd.DataFrame, spec: ModelSpec) -> float:
    scores = model.predict_proba(data[list(spec.features)])[:, 1]
    return float(roc_auc_score(data[spec.dataset.label_field], scores))


def spec_recipe(spec: ModelSpec) -> Recipe:
    module, name = spec.recipe.entrypoint.split(":")
    fn: Recipe = getattr(importlib.import_module(module), name)
    return fn


@pytest.fixture(scope="module")
def pre_train(spec: ModelSpec) -> pd.DataFrame:
    return sample(spec, 20_000, seed=101)


@pytest.fixture(scope="module")
def pre_test(spec: ModelSpec) -> pd.DataFrame:
    return sample(spec, 20_000, seed=102)


@pytest.fixture(scope="module")
def post_train(spec: ModelSpec) -> pd.DataFrame:
    return sample(spec, 20_000, seed=103, drift="concept")


@pytest.fixture(scope="module")
def post_test(spec: ModelSpec) -> pd.DataFrame:
    return sample(spec, 20_000, seed=104, drift="concept")


@pytest.fixture(scope="module")
def stale_model(spec: ModelSpec, params: dict[str, Any], pre_train: pd.DataFrame) -> Any:
    return spec_recipe(spec)(pre_train, params)


def test_spec_entrypoint_is_logistic_regression(spec: ModelSpec) -> None:
    assert spec_recipe(spec) is recipes.logistic_regression


def test_logistic_regression_learns_pre_drift_fraud(
    spec: ModelSpec, stale_model: Any, pre_test: pd.DataFrame
) -> None:
    assert auc(stale_model, pre_test, spec) >= 0.85


def test_gradient_boosting_learns_pre_drift_fraud(
    spec: ModelSpec, params: dict[str, Any], pre_train: pd.DataFrame, pre_test: pd.DataFrame
) -> None:
    model = recipes.gradient_boosting(pre_train, params)
    assert auc(model, pre_test, spec) >= 0.85


def test_concept_drift_hurts_the_stale_model_and_retraining_recovers(
    spec: ModelSpec,
    params: dict[str, Any],
    stale_model: Any,
    pre_test: pd.DataFrame,
    post_train: pd.DataFrame,
    post_test: pd.DataFrame,
) -> None:
    before = auc(stale_model, pre_test, spec)
    stale = auc(stale_model, post_test, spec)
    retrained = auc(spec_recipe(spec)(post_train, params), post_test, spec)
    assert before - stale >= 0.1
    assert retrained > stale + 0.1
    assert retrained >= 0.80


@pytest.mark.parametrize("recipe", [recipes.logistic_regression, recipes.gradient_boosting])
def test_recipes_are_deterministic_given_the_seed(
    recipe: Recipe, spec: ModelSpec, params: dict[str, Any], pre_train: pd.DataFrame
) -> None:
    train, probe = pre_train.iloc[:5000], pre_train.iloc[5000:6000][list(spec.features)]
    a = recipe(train, params).predict_proba(probe)
    b = recipe(train, params).predict_proba(probe)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("recipe", [recipes.logistic_regression, recipes.gradient_boosting])
def test_model_scores_a_feature_frame(
    recipe: Recipe, spec: ModelSpec, params: dict[str, Any], pre_train: pd.DataFrame
) -> None:
    model = recipe(pre_train.iloc[:5000], params)
    features = list(spec.features)
    probe = pre_train.iloc[:50][features]
    expected = model.predict_proba(probe)
    assert expected.shape == (50, 2)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0)
    shuffled = probe[features[::-1]].assign(transaction_id="tx-x")
    np.testing.assert_allclose(model.predict_proba(shuffled), expected)
    unseen = probe.assign(merchant_category="casino")
    assert np.isfinite(model.predict_proba(unseen)).all()
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(restored.predict_proba(probe), expected)


@pytest.mark.parametrize("recipe", [recipes.logistic_regression, recipes.gradient_boosting])
def test_recipes_reject_unusable_frames(
    recipe: Recipe, params: dict[str, Any], pre_train: pd.DataFrame
) -> None:
    small = pre_train.iloc[:500]
    label = params["label"]
    with pytest.raises(ValueError, match="missing"):
        recipe(small.astype({label: object}).assign(**{label: None}), params)
    with pytest.raises(ValueError, match="both classes"):
        recipe(small.assign(**{label: False}), params)
    with pytest.raises(ValueError, match="lacks columns"):
        recipe(small.drop(columns=["amount"]), params)
