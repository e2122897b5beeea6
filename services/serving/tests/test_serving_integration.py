"""Serving as a real BentoML process, with a real registry process and a real Kafka broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from serving_support import Registry, fraud_spec, records, register, trained

from flywheel_devkit.kafka import LocalKafka
from flywheel_devkit.testing.kafka_io import read_events
from flywheel_devkit.testing.procs import ServiceProcess, metric_sum
from flywheel_serving.domain.routing import bucket
from flywheel_shared.events import Event, ModelAliasChanged, PredictionsLogged

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WORKERS = 2


@dataclass
class Env:
    """The module's registry and serving processes, and what the tests did to them."""

    registry: Registry
    serving: ServiceProcess
    versions: dict[str, int]
    answered: Counter[str] = field(default_factory=Counter)
    """Predictions answered (2xx) per request id: each must be logged once."""


@pytest.fixture(scope="module")
def env(restartable_kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    # On a broker the Kafka-outage test may stop, whichever kind the session uses.
    tmp = tmp_path_factory.mktemp("serving")
    registry = Registry(restartable_kafka.bootstrap, tmp)
    registry.proc.start()

    async def seed() -> dict[str, int]:
        async with registry.client() as reg:
            await reg.put_spec(fraud_spec())
            return {
                "v1": await register(reg, "fraud", trained(1.0), alias="production"),
                "v2": await register(reg, "fraud", trained(0.01)),
                "v3": await register(reg, "fraud", trained(0.1)),
            }

    versions = asyncio.run(seed())
    # A small prediction-log buffer, so that the Kafka-outage test can overflow it.
    serving = registry.serving(tmp, workers=WORKERS, FLYWHEEL_SERVING_LOG_CAPACITY="1000")
    serving.start(ready_timeout=120)
    yield Env(registry, serving, versions)
    serving.stop()
    registry.proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A new connection per request spreads requests over the worker processes.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, request_id: str | None = None
) -> tuple[int, CIMultiDict[str], Any]:
    headers = {"x-request-id": request_id} if request_id else {}
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json()


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def worker_states(env: Env, http: aiohttp.ClientSession) -> dict[int, dict[str, Any]]:
    """/v1/status of every worker (asked until each answered once)."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    while len(seen) < WORKERS:
        assert time.monotonic() < deadline, f"only saw workers {sorted(seen)}"
        _, body = await get(http, env.serving.url + "/v1/status")
        seen[body["worker"]] = body["models"]["fraud"]
    return seen


async def converge(env: Env, http: aiohttp.ClientSession, **want: Any) -> None:
    """Wait until every worker serves the aliases in ``want``."""
    deadline = time.monotonic() + 20
    while True:
        states = await worker_states(env, http)
        if all(all(s[k] == v for k, v in want.items()) for s in states.values()):
            return
        assert time.monotonic() < deadline, f"workers did not converge to {want}: {states}"
        await asyncio.sleep(0.1)


def one(env: Env, request_id: str | None = None) -> dict[str, Any]:
    return {"records": records(1, seed=hash(request_id or "x") % 1000)}


# -- protocol --------------------------------------------------------------------------------


async def test_oip_v2_and_json_routes_answer_with_the_production_version(
    env: Env, http: aiohttp.ClientSession
) -> None:
    url, v1 = env.serving.url, env.versions["v1"]
    assert await get(http, url + "/v2/health/live") == (200, {"live": True})
    assert await get(http, url + "/v2/health/ready") == (200, {"ready": True})
    status, meta = await get(http, url + "/v2/models/fraud")
    assert status == 200 and meta["name"] == "fraud" and str(v1) in meta["versions"]
    assert [i["name"] for i in meta["inputs"]] == list(fraud_spec().features)
    assert {o["name"] for o in meta["outputs"]} == {"label", "score"}
    assert await get(http, url + "/v2/models/fraud/ready") == (
        200,
        {"name": "fraud", "ready": True},
    )

    recs = records(3)
    features = list(fraud_spec().features)
    named = {
        "id": "oip-1",
        "inputs": [
            {
                "name": f,
                "shape": [3],
                "datatype": {"merchant_category": "BYTES", "card_present": "BOOL"}.get(
                    f, "BOOL" if f == "foreign" else "FP64"
                ),
                "data": [r[f] for r in recs],
            }
            for f in features
        ],
    }
    status, headers, body = await post(http, url + "/v2/models/fraud/infer", named)
    assert status == 200, body
    assert body["model_name"] == "fraud" and body["model_version"] == str(v1)
    assert body["id"] == "oip-1" and headers.get("x-request-id") == "oip-1", headers
    assert headers["x-flywheel-model-version"] == str(v1)
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["score"]["shape"] == [3] and outputs["score"]["datatype"] == "FP64"
    assert all(0 <= s <= 1 for s in outputs["score"]["data"])
    env.answered["oip-1"] += 3

    matrix = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [3, len(features)],
                "datatype": "BYTES",
                "data": [[r[f] for f in features] for r in recs],
            }
        ],
        "outputs": [{"name": "score"}],
    }
    status, headers, body2 = await post(
        http, url + f"/v2/models/fraud/versions/{v1}/infer", matrix, "oip-2"
    )
    assert status == 200, body2
    assert [o["name"] for o in body2["outputs"]] == ["score"]
    assert body2["outputs"][0]["data"] == pytest.approx(outputs["score"]["data"])
    env.answered["oip-2"] += 3

    status, headers, body3 = await post(http, url + "/v1/models/fraud/predict", {"records": recs})
    assert status == 200, body3
    assert body3["version"] == v1 and headers["x-flywheel-model-version"] == str(v1)
    assert body3["route"] == "production" and len(body3["predictions"]) == 3
    assert body3["request_id"] == headers["x-request-id"] and len(headers["x-request-id"]) >= 16
    assert [p["score"] for p in body3["predictions"]] == pytest.approx(outputs["score"]["data"])
    env.answered[body3["request_id"]] += 3

    # Inputs are checked against the dataset contract; the error names the field.
    bad = [{**recs[0], "amount": -5}]
    status, _, err = await post(http, url + "/v1/models/fraud/predict", {"records": bad})
    assert status == 422 and "'amount'" in err["error"] and "minimum" in err["error"], err
    assert err["errors"][0]["field"] == "amount"
    missing = {"inputs": [i for i in named["inputs"] if i["name"] != "hour"]}
    status, _, err = await post(http, url + "/v2/models/fraud/infer", missing)
    assert status == 422 and "'hour'" in err["error"] and set(err) == {"error"}, err
    status, _, err = await post(http, url + "/v2/models/fraud/infer", {"inputs": "nope"})
    assert status == 400 and set(err) == {"error"}
    status, _, err = await post(http, url + "/v2/models/nope/infer", named)
    assert status == 404 and "nope" in err["error"]
    status, _, err = await post(http, url + "/v2/models/fraud/versions/999/infer", named)
    assert status == 404 and "999" in err["error"]


def _triton_infer(url: str, rows: list[dict[str, Any]], version: int) -> dict[str, Any]:
    """Ask with NVIDIA's tritonclient, unchanged and with its default settings: metadata,
    then one typed tensor per input (numeric and BYTES) and every output in binary (Triton's
    binary tensor data extension); then JSON tensors with one binary output asked for."""
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("fraud")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("fraud")
    dtypes = {"FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}

    def tensors(*, binary_data: bool) -> list[Any]:
        out = []
        for spec in meta["inputs"]:
            name, datatype = spec["name"], spec["datatype"]
            values = [r[name].encode() if datatype == "BYTES" else r[name] for r in rows]
            tensor = triton.InferInput(name, [len(rows)], datatype)
            out.append(
                tensor.set_data_from_numpy(np.array(values, dtype=dtypes[datatype]), binary_data)
            )
        return out

    binary = client.infer("fraud", tensors(binary_data=True), model_version=str(version))
    mixed = client.infer(
        "fraud",
        tensors(binary_data=False),
        outputs=[triton.InferRequestedOutput("score")],
        model_version=str(version),
    )
    return {
        "datatypes": {i["name"]: i["datatype"] for i in meta["inputs"]},
        "response": binary.get_response(),
        "score": binary.as_numpy("score").tolist(),
        "label": binary.as_numpy("label").tolist(),
        "mixed": mixed.as_numpy("score").tolist(),
        "mixed outputs": [o["name"] for o in mixed.get_response()["outputs"]],
    }


async def test_an_oip_client_library_works_unchanged_with_binary_tensors(
    env: Env, http: aiohttp.ClientSession
) -> None:
    async with env.registry.client() as reg:
        production = (await reg.get_model("fraud")).aliases["production"].version
    rows = records(40, seed=11)
    got = await asyncio.to_thread(_triton_infer, env.serving.url, rows, production)
    assert {"FP64", "INT64", "BOOL", "BYTES"} <= set(got["datatypes"].values()), got["datatypes"]
    response = got["response"]
    assert response["model_name"] == "fraud" and response["model_version"] == str(production)
    sizes = {o["name"]: o["parameters"]["binary_data_size"] for o in response["outputs"]}
    assert sizes == {"score": 8 * len(rows), "label": 8 * len(rows)}, response["outputs"]
    assert all("data" not in o for o in response["outputs"])
    # The same rows on the JSON route, same version: the same scores and labels.
    status, _, body = await post(
        http, env.serving.url + f"/v1/models/fraud/versions/{production}/predict", {"records": rows}
    )
    assert status == 200, body
    assert got["score"] == pytest.approx([p["score"] for p in body["predictions"]], abs=1e-12)
    assert got["label"] == [p["label"] for p in body["predictions"]]
    assert got["mixed outputs"] == ["score"] and got["mixed"] == pytest.approx(got["score"])
    env.answered[body["request_id"]] += len(rows)


# -- hot swap ------------------------------------------------------------------------------


async def test_moving_production_under_load_fails_nothing_and_reaches_every_worker_in_2s(
    env: Env, http: aiohttp.ClientSession
) -> None:
    url, v1, v2 = env.serving.url, env.versions["v1"], env.versions["v2"]
    results: list[tuple[float, int, str, int | None]] = []  # sent at, status, worker, version
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            rid = uuid.uuid4().hex
            sent = time.time()
            status, headers, body = await post(
                http, url + "/v1/models/fraud/predict", one(env, rid), rid
            )
            version = body.get("version") if status == 200 else None
            results.append((sent, status, headers.get("x-flywheel-worker", "?"), version))
            if status == 200:
                env.answered[rid] += 1

    tasks = [asyncio.create_task(load()) for _ in range(8)]
    try:
        await asyncio.sleep(1.0)  # load running before the move
        async with env.registry.client() as reg:
            await reg.move_alias("fraud", "production", v2, reason="test: promote v2")
        [moved] = [
            e
            for e in await read_events(
                env.registry.bootstrap,
                env.registry.topics("model.alias.changed"),
                until=lambda ev: any(getattr(e, "version", None) == v2 for e in ev),
                timeout=20,
            )
            if isinstance(e, ModelAliasChanged) and e.version == v2
        ]
        at = moved.occurred_at.timestamp()
        await asyncio.sleep(max(0.0, at + 4 - time.time()))  # keep the load on 4 s past it
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    assert results and all(s == 200 for _, s, _, _ in results), Counter(s for _, s, _, _ in results)
    before = {v for t, _, _, v in results if t < at - 0.5}  # (requests in flight may see v2)
    assert before == {v1}, before
    late = [(w, v) for t, _, w, v in results if t > at + 2.0]
    assert {w for w, _ in late} and all(v == v2 for _, v in late), Counter(late)
    assert len({w for w, _ in late}) == WORKERS, "every worker should have answered after 2 s"
    first_new = {w: min(t for t, _, ww, v in results if ww == w and v == v2) for w, _ in late}
    print(f"\nv{v2} first answered {[f'{t - at:.2f}s' for t in first_new.values()]} after event")
    env.versions["production"] = v2


# -- canary and shadow ---------------------------------------------------------------------


async def test_canary_gets_its_weight_sticky_by_request_id(
    env: Env, http: aiohttp.ClientSession
) -> None:
    url, v3 = env.serving.url, env.versions["v3"]
    prod = env.versions.get("production", env.versions["v1"])
    async with env.registry.client() as reg:
        await reg.move_alias("fraud", "canary", v3, weight=0.2, reason="test canary")
    await converge(env, http, canary=v3, canary_weight=0.2)

    async def run(ids: list[str]) -> dict[str, int]:
        sem = asyncio.Semaphore(32)

        async def call(rid: str) -> tuple[str, int]:
            async with sem:
                status, _, body = await post(
                    http, url + "/v1/models/fraud/predict", one(env, rid), rid
                )
                assert status == 200, body
                env.answered[rid] += 1
                return rid, body["version"]

        return dict(await asyncio.gather(*(call(r) for r in ids)))

    ids = [uuid.uuid4().hex for _ in range(2000)]
    got = await run(ids)
    share = sum(v == v3 for v in got.values()) / len(ids)
    print(f"\ncanary share at weight 0.2: {share:.3f}")
    assert 0.15 <= share <= 0.25
    assert set(got.values()) == {prod, v3}
    assert all((got[r] == v3) == (bucket(r) < 0.2) for r in ids), "routing is the sticky hash"
    again = await run(ids[:300])
    assert again == {r: got[r] for r in ids[:300]}
    async with env.registry.client() as reg:
        await reg.remove_alias("fraud", "canary", reason="test done")
    await converge(env, http, canary=None)


async def test_shadow_is_mirrored_and_logged_while_clients_see_production(
    env: Env, http: aiohttp.ClientSession
) -> None:
    url, v3 = env.serving.url, env.versions["v3"]
    prod = env.versions.get("production", env.versions["v1"])
    async with env.registry.client() as reg:
        await reg.move_alias("fraud", "shadow", v3, reason="test shadow")
    await converge(env, http, shadow=v3)
    ids = [f"shadow-{uuid.uuid4().hex}" for _ in range(100)]
    for rid in ids:
        status, headers, body = await post(
            http, url + "/v1/models/fraud/predict", one(env, rid), rid
        )
        assert status == 200 and body["version"] == prod and body["route"] == "production"
        assert headers["x-flywheel-model-version"] == str(prod)
        env.answered[rid] += 1

    def mirrored(events: list[Event]) -> set[str]:
        return {
            p.request_id
            for e in events
            if isinstance(e, PredictionsLogged)
            for p in e.predictions
            if p.route == "shadow" and p.version == v3
        }

    events = await read_events(
        env.registry.bootstrap,
        env.registry.topics("predictions"),
        until=lambda ev: mirrored(ev) >= set(ids),
        timeout=30,
    )
    shadow_preds = [
        p
        for e in events
        if isinstance(e, PredictionsLogged)
        for p in e.predictions
        if p.route == "shadow" and p.request_id in ids
    ]
    assert all(p.version == v3 and 0 <= p.output["score"] <= 1 for p in shadow_preds)
    async with env.registry.client() as reg:
        await reg.remove_alias("fraud", "shadow", reason="test done")
    await converge(env, http, shadow=None)


# -- prediction log ------------------------------------------------------------------------


def prediction_counts(events: list[Event]) -> Counter[str]:
    """How often each prediction id is on the topic, over every message read (Kafka level: a
    batch sent twice, even with the same event_id, counts twice)."""
    return Counter(
        p.prediction_id for e in events if isinstance(e, PredictionsLogged) for p in e.predictions
    )


def duplicated(events: list[Event]) -> dict[str, int]:
    """Prediction ids found more than once on the topic."""
    return {pid: n for pid, n in prediction_counts(events).items() if n > 1}


async def test_every_answered_request_is_logged_once(env: Env) -> None:
    assert len(env.answered) > 2000
    # A request of n records is n predictions; the canary test repeats 300 request ids.

    def logged(events: list[Event]) -> Counter[str]:
        # Every message as read from Kafka: no dedupe by event_id.
        return Counter(
            p.request_id
            for e in events
            if isinstance(e, PredictionsLogged)
            for p in e.predictions
            if p.route != "shadow" and p.prediction_id
        )

    events = await read_events(
        env.registry.bootstrap,
        env.registry.topics("predictions"),
        until=lambda ev: set(logged(ev)) >= set(env.answered),
        timeout=60,
    )
    assert not duplicated(events)
    counts = logged(events)
    wrong = [(r, n, counts[r]) for r, n in env.answered.items() if counts[r] != n]
    assert not wrong, wrong[:5]
    sample = next(
        p
        for e in events
        if isinstance(e, PredictionsLogged)
        for p in e.predictions
        if p.request_id in env.answered and not p.request_id.startswith("oip-")
    )
    assert (
        sample.record_id
        and sample.latency_ms > 0
        and set(sample.features) == set(fraud_spec().features)
    )


async def log_metrics(env: Env, http: aiohttp.ClientSession) -> dict[str, float]:
    """The prediction log's counters and buffer depth, summed over the workers (BentoML's
    /metrics adds up every worker's multiprocess files, so two readings compare)."""
    async with http.get(env.serving.url + "/metrics") as resp:
        text = await resp.text()
    names = ("dropped_total", "sent_total", "send_failures_total", "buffer_depth")
    return {n: metric_sum(text, f"flywheel_serving_log_{n}") for n in names}


async def log_until(
    env: Env,
    http: aiohttp.ClientSession,
    what: str,
    ok: Callable[[dict[str, float]], bool],
    t: float,
) -> dict[str, float]:
    """Poll the log's metrics until ``ok`` holds (else fail after ``t`` seconds)."""
    deadline = time.monotonic() + t
    while not ok(m := await log_metrics(env, http)):
        assert time.monotonic() < deadline, f"{what} within {t} s: {m}"
        await asyncio.sleep(0.2)
    return m


async def test_with_kafka_stopped_predictions_succeed_drops_are_counted_and_logging_resumes(
    env: Env, http: aiohttp.ClientSession, restartable_kafka: LocalKafka
) -> None:
    """A broker outage longer than the log's send timeout, then the broker back: requests all
    answer; every prediction of the outage is either on the topic or counted as dropped (from
    a baseline taken before the outage); logging resumes without a restart; and no prediction
    is on the topic twice, counted over every Kafka message (a batch re-sent after a timed
    out send would be, with its same event_id)."""
    url = env.serving.url
    # Every worker has logged before the outage (as in a running service: its producer knows
    # the partitions' leader, so a send made while the broker is away is kept and retried).
    workers: set[str] = set()
    deadline = time.monotonic() + 20
    while len(workers) < WORKERS:
        assert time.monotonic() < deadline, f"only workers {workers} answered"
        rid = f"warm-{uuid.uuid4().hex}"
        status, headers, body = await post(http, url + "/v1/models/fraud/predict", one(env, rid))
        assert status == 200, body
        workers.add(headers["x-flywheel-worker"])
    # The baseline: nothing buffered, the counters as they stand.
    before = await log_until(env, http, "log drained", lambda m: m["buffer_depth"] == 0, 30)
    outage = [f"outage-{i}-{uuid.uuid4().hex[:6]}" for i in range(40)]
    answered = 0
    await asyncio.to_thread(restartable_kafka.stop)
    try:
        for i, rid in enumerate(outage):  # 4,000 predictions against 2 x 1,000 of buffer
            status, _, body = await post(
                http, url + "/v1/models/fraud/predict", {"records": records(100, seed=i)}, rid
            )
            assert status == 200, body
            answered += len(body["predictions"])
        during = await log_until(
            env, http, "drops counted", lambda m: m["dropped_total"] > before["dropped_total"], 10
        )
        assert during["buffer_depth"] > 0
        assert "prediction log buffer full" in env.serving.tail(400)
        # Kafka stays away until a send has timed out (the log's send timeout is 30 s): the
        # batch in hand is then retried, while the producer still holds the first attempt.
        await log_until(
            env,
            http,
            "a send timed out",
            lambda m: m["send_failures_total"] > before["send_failures_total"],
            90,
        )
    finally:
        await asyncio.to_thread(restartable_kafka.start)
    # Logging resumes on its own: the buffer empties with serving untouched.
    drained = await log_until(env, http, "log resumed", lambda m: m["buffer_depth"] == 0, 90)
    after = [f"after-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    for i, rid in enumerate(after):
        status, _, body = await post(
            http, url + "/v1/models/fraud/predict", {"records": records(5, seed=500 + i)}, rid
        )
        assert status == 200, body

    def of(events: list[Event], ids: list[str]) -> list[str]:
        wanted = set(ids)
        return [
            p.prediction_id
            for e in events
            if isinstance(e, PredictionsLogged)
            for p in e.predictions
            if p.request_id in wanted
        ]

    events = await read_events(
        env.registry.bootstrap,
        env.registry.topics("predictions"),
        until=lambda ev: len(set(of(ev, after))) >= 5 * len(after),
        timeout=60,
    )
    final = await log_metrics(env, http)
    dups = duplicated(events)
    logged = len(set(of(events, outage)))
    dropped = final["dropped_total"] - before["dropped_total"]
    print(
        f"\noutage: {answered} predictions answered, {logged} logged ({len(of(events, outage))} "
        f"messages' worth), {dropped:.0f} dropped; "
        f"after: {len(of(events, after))} logged; {len(dups)} prediction ids twice or more "
        f"on the topic ({sum(1 for e in events if isinstance(e, PredictionsLogged))} messages)"
    )
    assert not dups, f"{len(dups)} prediction ids more than once on Kafka"
    assert answered == 4000 and len(set(of(events, after))) == 5 * len(after)
    assert dropped > 0 and logged > 0
    assert logged + dropped == answered  # every outage prediction: on the topic, or counted
    assert final["dropped_total"] == drained["dropped_total"]  # none dropped after the return
