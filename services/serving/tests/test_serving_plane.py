"""Unit tests of the model manager, data plane, prediction log and HTTP transports (fakes)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from serving_support import fraud_spec, records, trained

from flywheel_serving.api import create_app
from flywheel_serving.models import ModelManager
from flywheel_serving.plane import DataPlane, InferenceError, _prediction
from flywheel_serving.predlog import PredictionLog
from flywheel_shared.events import (
    ModelAliasChanged,
    Prediction,
    PredictionsLogged,
    encode_event,
    parse_event,
)
from flywheel_shared.registry import (
    AliasState,
    Lineage,
    ModelInfo,
    ModelVersion,
    RegistryError,
    RegistryUnavailable,
)
from flywheel_shared.spec import ModelSpec

NOW = datetime.now(UTC)


class FakeRegistry:
    """Models, versions and artifacts in memory; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.spec = fraud_spec()
        self.artifacts: dict[str, bytes] = {}
        self.versions: dict[int, ModelVersion] = {}
        self.aliases: dict[str, AliasState] = {}
        self.down = False
        self.downloads = 0

    def add(self, data: bytes) -> int:
        sha = hashlib.sha256(data).hexdigest()
        self.artifacts[sha] = data
        v = len(self.versions) + 1
        self.versions[v] = ModelVersion(
            model="fraud",
            version=v,
            run_id=f"r{v}",
            status="candidate",
            artifact_sha256=sha,
            artifact_uri=f"mem://{sha}",
            artifact_format="skops",
            lineage=Lineage(
                dataset="transactions",
                snapshot_id="s",
                snapshot_rows=1,
                code_version="t",
                recipe="m:f",
                recipe_sha256="x",
                params={"features": list(self.spec.features)},
                seed=1,
            ),
            training_seconds=1,
            correlation_id="c",
            created_at=NOW,
        )
        return v

    def point(self, alias: str, version: int | None, weight: float | None = None) -> None:
        if version is None:
            self.aliases.pop(alias, None)
        else:
            self.aliases[alias] = AliasState(
                alias=alias,  # type: ignore[arg-type]
                version=version,
                weight=weight,
                updated_at=NOW,
            )

    def _check(self) -> None:
        if self.down:
            raise RegistryUnavailable(0, "unreachable", "down")

    async def list_models(self) -> list[ModelInfo]:
        return [await self.get_model("fraud")]

    async def get_model(self, name: str) -> ModelInfo:
        self._check()
        if name != "fraud":
            raise RegistryError(404, "not_found", name)
        return ModelInfo(name=name, spec_sha256="s1", aliases=dict(self.aliases), spec=self.spec)

    async def get_spec(self, name: str) -> ModelSpec:
        return self.spec

    async def get_version(self, model: str, version: int) -> ModelVersion:
        self._check()
        return self.versions[version]

    async def download_artifact(self, sha256: str) -> bytes:
        self._check()
        self.downloads += 1
        return self.artifacts[sha256]


class ListSink:
    def __init__(self) -> None:
        self.items: list[tuple[str, Prediction]] = []

    def offer(self, model: str, predictions: Sequence[Prediction]) -> None:
        self.items.extend((model, p) for p in predictions)


@pytest.fixture
def registry() -> FakeRegistry:
    reg = FakeRegistry()
    reg.add(trained(1.0))
    reg.add(trained(0.01))
    reg.point("production", 1)
    return reg


async def test_sync_loads_aliases_and_swaps_in_one_step_releasing_the_old(
    registry: FakeRegistry,
) -> None:
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    first = manager.deployments["fraud"]
    assert manager.synced and first.production and first.production.version == 1
    registry.point("production", 2)
    registry.point("shadow", 1)
    manager.mark("fraud")
    await manager.sync_pending()
    second = manager.deployments["fraud"]
    assert second.summary() == {"production": 2, "canary": None, "shadow": 1, "canary_weight": 0}
    assert second.shadow is first.production  # already loaded: reused, not downloaded again
    assert registry.downloads == 2
    registry.point("shadow", None)
    manager.mark("fraud")
    await manager.sync_pending()
    assert [k[1] for k in manager._cache] == [2]  # v1 released
    # The registry going away changes nothing that is loaded.
    registry.down = True
    manager.mark("fraud")
    with pytest.raises(RegistryUnavailable):
        await manager.sync_pending()
    assert manager.deployments["fraud"].production.version == 2  # type: ignore[union-attr]


async def test_an_alias_move_redelivered_with_its_event_id_is_applied_once(
    registry: FakeRegistry,
) -> None:
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    registry.point("canary", 2, weight=0.25)
    move = ModelAliasChanged(model="fraud", alias="canary", version=2, weight=0.25)
    assert manager.on_alias(move) and manager._dirty == {"fraud"}
    await manager.sync_pending()
    # The relay's second copy: same event, other Kafka record.
    again = ModelAliasChanged.model_validate_json(move.model_dump_json())
    assert not manager.on_alias(again) and not manager._dirty
    assert not manager.on_alias(ModelAliasChanged(model="other", alias="canary", version=1))
    assert (manager.alias_applied, manager.alias_duplicates) == (1, 1)
    assert manager.deployments["fraud"].summary()["canary"] == 2
    assert manager.on_alias(ModelAliasChanged(model="fraud", alias="canary", version=None))


async def test_unreachable_registry_at_start_means_not_ready_until_it_answers(
    registry: FakeRegistry,
) -> None:
    registry.down = True
    manager = ModelManager(registry, models=["fraud"], retry_max_s=0.05)
    task = asyncio.create_task(manager.run())
    await asyncio.sleep(0.2)
    assert not manager.synced and "down" in (manager.last_error or "")
    registry.down = False
    for _ in range(100):
        if manager.synced:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    assert manager.synced and manager.deployments["fraud"].production is not None


async def test_plane_routes_validates_logs_and_mirrors(registry: FakeRegistry) -> None:
    registry.point("canary", 2, weight=0.5)
    registry.point("shadow", 2)
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    sink = ListSink()
    plane = DataPlane(manager, sink)
    answers = [await plane.predict("fraud", records(2), request_id=f"req-{i}") for i in range(40)]
    routes = {a.route for a in answers}
    assert routes == {"production", "canary"}
    assert all((a.version == 2) == (a.route == "canary") for a in answers)
    again = await plane.predict("fraud", records(1), request_id="req-7")
    assert again.version == answers[7].version
    await plane.drain_shadow(2)
    served = [p for _, p in sink.items if p.route != "shadow"]
    shadowed = [p for _, p in sink.items if p.route == "shadow"]
    assert len(served) == 81 and {p.request_id for p in served} >= {"req-0", "req-39"}
    # The shadow is not mirrored to itself: requests the canary (= shadow version) answered.
    assert len(shadowed) == 2 * sum(a.route == "production" for a in answers) + (
        1 if again.route == "production" else 0
    )
    assert served[0].record_id and set(served[0].features) == set(fraud_spec().features)

    with pytest.raises(InferenceError) as bad:
        await plane.predict("fraud", [{**records(1)[0], "hour": 24}], request_id="x")
    assert bad.value.status == 422 and "'hour'" in bad.value.message
    with pytest.raises(InferenceError) as unknown:
        await plane.predict("other", records(1), request_id="x")
    assert unknown.value.status == 404
    pinned = await plane.predict("fraud", records(1), request_id="x", version=1)
    assert pinned.version == 1 and pinned.route == "production"


class FlakyProducer:
    def __init__(self) -> None:
        self.started = True
        self.fail = False
        self.sent: list[PredictionsLogged] = []

    async def publish_all(self, events: Sequence[PredictionsLogged]) -> None:
        if self.fail:
            raise ConnectionError("kafka away")
        self.sent.extend(events)


def _pred(i: int) -> Prediction:
    return Prediction(
        prediction_id=str(i),
        request_id=str(i),
        version=1,
        route="production",
        features={"a": i},
        output={"score": 0.5},
        latency_ms=1.0,
        at=NOW,
    )


async def test_prediction_log_batches_and_drops_when_full_without_blocking() -> None:
    producer = FlakyProducer()
    plog = PredictionLog(producer, capacity=10, batch=4, flush_s=0.01, max_backoff_s=0.02)
    task = asyncio.create_task(plog.run())
    plog.offer("fraud", [_pred(i) for i in range(6)])
    for _ in range(100):
        if plog.sent == 6:
            break
        await asyncio.sleep(0.01)
    assert plog.sent == 6 and [len(e.predictions) for e in producer.sent] == [4, 2]
    producer.fail = True
    plog.offer("fraud", [_pred(i) for i in range(8)])
    await asyncio.sleep(0.05)
    plog.offer("fraud", [_pred(i) for i in range(8)])  # 8 + 8 > 10: 6 dropped, counted
    assert plog.dropped == 6 and plog.depth == 10
    producer.fail = False
    for _ in range(200):
        if plog.depth == 0:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert plog.sent == 16
    ids = [e.event_id for e in producer.sent]
    assert len(ids) == len(set(ids))


class SlowProducer:
    """Acknowledges nothing until ``back`` is set (a broker away), like the idempotent producer:
    a send is kept and delivered once the broker returns, however long the caller waited."""

    def __init__(self) -> None:
        self.started = True
        self.back = asyncio.Event()
        self.delivered: list[PredictionsLogged] = []
        self.calls = 0

    async def publish_all(self, events: Sequence[PredictionsLogged]) -> None:
        self.calls += 1
        await self.back.wait()
        self.delivered.extend(events)


async def test_a_backlog_built_during_a_send_goes_out_whole_in_the_next() -> None:
    producer = SlowProducer()
    plog = PredictionLog(producer, capacity=100, batch=4, flush_s=0.01)
    task = asyncio.create_task(plog.run())
    try:
        plog.offer("fraud", [_pred(i) for i in range(2)])
        for _ in range(200):
            if producer.calls == 1:
                break
            await asyncio.sleep(0.01)
        plog.offer("fraud", [_pred(i) for i in range(2, 40)])  # 38 while the first is away
        producer.back.set()
        for _ in range(200):
            if plog.sent == 40:
                break
            await asyncio.sleep(0.01)
        assert plog.sent == 40 and plog.dropped == 0
        assert producer.calls == 2  # the 38 in one send: 10 events of at most 4
        assert [len(e.predictions) for e in producer.delivered[1:]] == [4] * 9 + [2]
    finally:
        task.cancel()


async def test_a_send_that_timed_out_is_waited_for_again_not_sent_twice() -> None:
    producer = SlowProducer()
    plog = PredictionLog(
        producer, capacity=10, batch=4, flush_s=0.01, send_timeout_s=0.02, max_backoff_s=0.02
    )
    task = asyncio.create_task(plog.run())
    try:
        plog.offer("fraud", [_pred(i) for i in range(3)])
        for _ in range(200):  # let several attempts time out
            if plog.task.restarts >= 3:
                break
            await asyncio.sleep(0.01)
        assert plog.task.restarts >= 3 and "TimeoutError" in str(plog.task.last_error)
        assert plog.sent == 0 and plog.depth == 3 and producer.calls == 1
        producer.back.set()
        for _ in range(200):
            if plog.sent == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert plog.sent == 3 and plog.depth == 0
    assert producer.calls == 1  # one send, waited for across the timeouts
    assert [p.prediction_id for e in producer.delivered for p in e.predictions] == ["0", "1", "2"]


class FakeRuntime:
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def ready(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"ready": True}


async def test_http_transports_answer_and_report_errors_in_protocol_format(
    registry: FakeRegistry,
) -> None:
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    rt = FakeRuntime(DataPlane(manager, ListSink()))
    app = create_app(lambda: rt)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.post(
            "/v1/models/fraud/predict", json={"records": records(1)}, headers={"x-request-id": "a"}
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "a"
        assert r.headers["x-flywheel-model-version"] == "1" and r.json()["version"] == 1
        r = await client.post("/v1/models/fraud/predict", content=b"{")
        assert r.status_code == 400 and r.json()["code"] == "invalid_json"
        r = await client.post("/v2/models/fraud/infer", json={"inputs": [1]})
        assert r.status_code == 400 and list(r.json()) == ["error"]
        r = await client.get("/v2/models/fraud/versions/7/ready")
        assert r.status_code == 404 and "7" in r.json()["error"]
        r = await client.get("/v2")
        assert r.json()["name"] == "flywheel-serving"
    none_app = create_app(lambda: None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=none_app), base_url="http://t"
    ) as client:
        assert (await client.get("/v2/health/ready")).status_code == 503
        r = await client.post("/v1/models/fraud/predict", json={"records": records(1)})
        assert r.status_code == 503


async def test_with_a_token_predictions_need_it_and_probes_stay_open(
    registry: FakeRegistry,
) -> None:
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    rt = FakeRuntime(DataPlane(manager, ListSink()))
    app = create_app(lambda: rt, token="serve-me")
    body = {"records": records(1)}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.post("/v1/models/fraud/predict", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["code"] == "unauthorized"
        r = await client.post(
            "/v2/models/fraud/infer", json={"inputs": []}, headers={"authorization": "Bearer x"}
        )
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert (await client.get("/v1/status")).status_code == 401
        ok = await client.post(
            "/v1/models/fraud/predict", json=body, headers={"authorization": "Bearer serve-me"}
        )
        assert ok.status_code == 200 and ok.json()["version"] == 1
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2/models/fraud")).status_code == 200


async def test_the_openapi_document_covers_every_route_for_the_models_served(
    registry: FakeRegistry,
) -> None:
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    app = create_app(lambda: FakeRuntime(DataPlane(manager, ListSink())), token="serve-me")
    routes = {(m, r.path) for r in app.routes for m in getattr(r, "methods", ())} - {
        ("HEAD", r.path) for r in app.routes
    }
    auth = {"authorization": "Bearer serve-me"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        doc = (await client.get("/openapi.json")).json()
        assert {(m.upper(), p) for p, item in doc["paths"].items() for m in item} == routes
        predict = doc["paths"]["/v1/models/{name}/predict"]["post"]
        assert predict["parameters"][0]["schema"] == {"type": "string", "enum": ["fraud"]}
        spec = fraud_spec()
        record = doc["components"]["schemas"]["PredictRequest"]["properties"]["records"]["items"]
        assert set(record["properties"]) == {*spec.features, spec.dataset.id_field}
        assert set(record["required"]) == set(spec.features)
        # Each example request is answered, and every answer below is a declared one.
        for path, item in doc["paths"].items():
            for op in item.values():
                examples = op.get("requestBody", {}).get("content", {})
                for ex in examples.get("application/json", {}).get("examples", {}).values():
                    url = path.format(name="fraud", version=1)
                    r = await client.post(url, json=ex["value"], headers=auth)
                    assert r.status_code == 200, (path, r.text)
                assert "401" in op["responses"] if "security" in op else True
        answers = [
            ("POST", "/v1/models/{name}/predict", "/v1/models/fraud/predict", b"{", 400),
            ("POST", "/v1/models/{name}/predict", "/v1/models/no/predict", b'{"records": []}', 404),
            ("POST", "/v2/models/{name}/infer", "/v2/models/fraud/infer", b"[]", 400),
            (
                "GET",
                "/v2/models/{name}/versions/{version}",
                "/v2/models/fraud/versions/x",
                b"",
                404,
            ),
            ("GET", "/v2/models/{name}", "/v2/models/a%2Fready", b"", 404),
        ]
        for method, template, url, body, status in answers:
            r = await client.request(method, url, content=body or None, headers=auth)
            assert r.status_code == status, (url, r.text)
            assert str(status) in doc["paths"][template][method.lower()]["responses"]
            assert r.json()["error"] and r.headers["content-type"] == "application/json"
        r = await client.post(
            "/v1/models/fraud/versions/x/predict", json={"records": [{}]}, headers=auth
        )
        assert r.status_code == 404 and r.json()["code"] == "unknown_version"
    starting = create_app(lambda: None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=starting), base_url="http://t"
    ) as client:
        doc = (await client.get("/openapi.json")).json()
        param = doc["paths"]["/v1/models/{name}/predict"]["post"]["parameters"][0]
        assert param["schema"] == {"type": "string", "title": "Name"}
        assert "security" not in doc["paths"]["/v1/models/{name}/predict"]["post"]


def test_the_plane_builds_predictions_as_model_construct_does() -> None:
    values = {
        "prediction_id": "a" * 32,
        "request_id": "r-1",
        "record_id": "tx-9",
        "version": 3,
        "route": "canary",
        "features": {"amount": 12.5, "merchant": "m1"},
        "output": {"label": 1, "score": 0.75},
        "latency_ms": 4.2,
        "at": datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
    }
    fast, slow = _prediction(dict(values)), Prediction.model_construct(**values)
    assert fast == slow and fast.model_dump() == slow.model_dump()
    assert fast.model_fields_set == slow.model_fields_set
    first = PredictionsLogged(model="fraud", predictions=[slow])
    same = {k: v for k, v in first.__dict__.items() if k != "predictions"}
    wire = [
        encode_event(PredictionsLogged.model_construct(predictions=[p], **same))
        for p in (fast, slow)
    ]
    assert wire[1] == encode_event(first)
    assert wire[0] == wire[1]
    back = parse_event(wire[0])
    assert isinstance(back, PredictionsLogged) and back.predictions[0] == Prediction(**values)


async def test_personal_features_are_hashed_or_dropped_in_the_prediction_log(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel_shared import privacy

    monkeypatch.setenv(privacy.KEY_VARIABLE, "serving-test")
    privacy.reset_key()
    data = fraud_spec().model_dump(by_alias=True)
    for name in ("merchant_category", "amount"):
        data["dataset"]["fields"][name]["personal"] = True
    registry.spec = ModelSpec.model_validate(data)
    manager = ModelManager(registry, models=["fraud"])
    await manager.sync_pending()
    sink = ListSink()
    plane = DataPlane(manager, sink)
    sent = records(3)
    await plane.predict("fraud", sent, request_id="req-p")
    logged = [p.features for _, p in sink.items]
    assert len(logged) == 3
    for features, record in zip(logged, sent, strict=True):
        assert "amount" not in features  # a number: dropped
        assert features["merchant_category"] == privacy.keyed_hash(record["merchant_category"])
        assert features["hour"] == record["hour"]  # not personal: as it came
    privacy.reset_key()


async def test_production_loads_no_personal_model_without_a_key(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flywheel_serving.models import LoadError
    from flywheel_shared import privacy

    monkeypatch.delenv(privacy.KEY_VARIABLE, raising=False)
    monkeypatch.delenv(f"{privacy.KEY_VARIABLE}_FILE", raising=False)
    data = fraud_spec().model_dump(by_alias=True)
    data["dataset"]["fields"]["merchant_category"]["personal"] = True
    registry.spec = ModelSpec.model_validate(data)
    with pytest.raises(LoadError, match="FLYWHEEL_PERSONAL_KEY"):
        await ModelManager(registry, models=["fraud"], environment="production").sync_pending()
    dev = ModelManager(registry, models=["fraud"])
    await dev.sync_pending()
    assert dev.deployments["fraud"].production is not None
