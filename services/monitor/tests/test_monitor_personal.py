"""Personal features in the monitor: not monitored for drift, not checked (serving logs their
hash), and dead letters about them redacted."""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from flywheel_monitor.dispatch import Dispatcher
from flywheel_monitor.drift import config_from_spec
from flywheel_monitor.lookups import FeatureChecks, letter_redactor
from flywheel_monitor.messages import Unprocessable
from flywheel_shared import privacy
from flywheel_shared.events import Prediction, PredictionsLogged, encode_event, parse_event
from flywheel_shared.spec import ModelSpec, load_spec

SPEC = Path(__file__).resolve().parents[3] / "examples" / "fraud" / "flywheel.yaml"
SECRET = "grocery"  # the personal category value


def personal_spec() -> ModelSpec:
    data = load_spec(SPEC).model_dump(by_alias=True)
    data["dataset"]["fields"]["merchant_category"]["personal"] = True
    return ModelSpec.model_validate(data)


def logged(spec: ModelSpec, **features: Any) -> PredictionsLogged:
    return PredictionsLogged(
        model=spec.name,
        predictions=[
            Prediction(
                prediction_id="p",
                request_id="r",
                version=1,
                route="production",
                features=features,
                output={"score": 0.1},
                latency_ms=1.0,
                at=datetime.now(UTC),
            )
        ],
    )


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(privacy.KEY_VARIABLE, "monitor-test")
    privacy.reset_key()
    yield
    privacy.reset_key()


def test_personal_features_are_not_monitored_for_drift() -> None:
    spec = personal_spec()
    cfg = config_from_spec(spec, backend="permissive")
    assert "merchant_category" not in cfg.features
    assert set(cfg.features) == set(spec.features) - {"merchant_category"}


def test_a_hashed_personal_feature_passes_the_contract_check() -> None:
    spec = personal_spec()
    checks = FeatureChecks()
    checks.check(logged(spec, merchant_category=privacy.keyed_hash(SECRET), amount=1.0), spec)
    with pytest.raises(Unprocessable, match="amount"):
        checks.check(logged(spec, merchant_category="x", amount=-1.0), spec)


async def test_a_dead_letter_about_personal_features_is_redacted() -> None:
    spec = personal_spec()
    cache = SimpleNamespace(cached_specs=lambda: [spec])
    deadletter = SimpleNamespace(sent=[])

    async def send(*, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        deadletter.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    deadletter.send = send
    dispatch = Dispatcher(
        "g",
        {"deadletter": deadletter},
        deque(maxlen=4),
        1,
        redact=letter_redactor(cache),  # type: ignore[arg-type, dict-item]
    )
    value = encode_event(logged(spec, merchant_category=SECRET, amount=-1.0))
    message = SimpleNamespace(topic="t.predictions.v1", partition=0, offset=3, key=None)
    await dispatch.send_dead_letter(
        SimpleNamespace(value=value, message=message), f"bad {SECRET!r}", 1
    )
    [sent] = deadletter.sent
    letter = parse_event(sent)
    payload = base64.b64decode(letter.value_b64)  # type: ignore[attr-defined]
    assert SECRET.encode() not in payload and SECRET not in letter.error  # type: ignore[attr-defined]
    features = orjson.loads(payload)["predictions"][0]["features"]
    assert features == {"merchant_category": privacy.keyed_hash(SECRET), "amount": -1.0}
    # Not JSON at all: the payload is dropped, the reason kept.
    await dispatch.send_dead_letter(
        SimpleNamespace(value=b"{" + SECRET.encode(), message=message), "undecodable event", 1
    )
    letter = parse_event(deadletter.sent[1])
    assert letter.value_b64 == "" and letter.error.startswith("undecodable event")  # type: ignore[attr-defined]
