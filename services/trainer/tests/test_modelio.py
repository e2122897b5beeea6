from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from flywheel_fraud import recipes
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.modelio import UntrustedArtifact, dump_model, load_model
from flywheel_shared.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("recipe", [recipes.logistic_regression, recipes.gradient_boosting])
def test_round_trip_and_tamper_refusal(recipe: object) -> None:
    spec = load_spec(ROOT / "examples" / "fraud" / "flywheel.yaml")
    df = pd.DataFrame(FraudSimulator(seed=3).batch(2000))[[*spec.features, "is_fraud"]]
    params = {**spec.recipe.params, "label": "is_fraud", "features": list(spec.features), "seed": 1}
    model = recipe(df, params)  # type: ignore[operator]
    data = dump_model(model)
    digest = hashlib.sha256(data).hexdigest()
    loaded = load_model(data, digest)
    x = df[list(spec.features)].head(50)
    assert (loaded.predict_proba(x) == model.predict_proba(x)).all()
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(UntrustedArtifact, match="hash mismatch"):
        load_model(tampered, digest)
