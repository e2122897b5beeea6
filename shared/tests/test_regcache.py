"""The registry cache against a small fake registry: freshness, outages, sharing, events."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from flywheel_devkit.testing.waiting import eventually
from flywheel_shared.events import ModelAliasChanged, ModelVersionRegistered
from flywheel_shared.regcache import RegistryCache
from flywheel_shared.registry import (
    AliasState,
    ModelInfo,
    ModelVersion,
    RegistryError,
    RegistryUnavailable,
)
from flywheel_shared.spec import DatasetContract, ModelSpec, load_spec

SPEC = load_spec(Path(__file__).resolve().parents[2] / "examples" / "fraud" / "flywheel.yaml")
NOW = datetime.now(UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRegistry:
    """One model ("fraud") and its dataset; ``down`` fails every call; ``calls`` counts them."""

    def __init__(self) -> None:
        self.production = 1
        self.spec_sha = "s1"
        self.down = False
        self.calls: dict[str, int] = {}
        self.gate: asyncio.Event | None = None  # set: calls wait for it

    async def _call(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise RegistryUnavailable(0, "unreachable", "connection refused")

    def _info(self, name: str, spec: ModelSpec | None) -> ModelInfo:
        if name != "fraud":
            raise RegistryError(404, "not_found", f"no model {name}")
        alias = AliasState(alias="production", version=self.production, updated_at=NOW)
        return ModelInfo(
            name=name, spec_sha256=self.spec_sha, aliases={"production": alias}, spec=spec
        )

    async def list_models(self) -> list[ModelInfo]:
        await self._call("list_models")
        return [self._info("fraud", None)]

    async def get_model(self, name: str) -> ModelInfo:
        await self._call("get_model")
        return self._info(name, SPEC)

    async def get_spec(self, name: str) -> ModelSpec:
        await self._call("get_spec")
        return SPEC

    async def get_contract(self, dataset: str) -> DatasetContract:
        await self._call("get_contract")
        if dataset != SPEC.dataset.name:
            raise RegistryError(404, "not_found", dataset)
        return SPEC.dataset

    async def list_contracts(self) -> list[DatasetContract]:
        await self._call("list_contracts")
        return [SPEC.dataset]

    async def get_version(self, model: str, version: int) -> ModelVersion:
        await self._call("get_version")
        lineage = {"dataset": "d", "snapshot_id": "s", "snapshot_rows": 1, "seed": 1}
        lineage |= {"code_version": "c", "recipe": "m:f", "recipe_sha256": "x"}
        return ModelVersion.model_validate(
            {"model": model, "version": version, "run_id": "r", "status": "candidate"}
            | {"artifact_sha256": "a" * 64, "artifact_uri": "mem://a", "artifact_format": "skops"}
            | {
                "lineage": lineage,
                "training_seconds": 1.0,
                "correlation_id": "c",
                "created_at": NOW,
            }
        )

    async def download_artifact(self, sha256: str) -> bytes:
        await self._call("download_artifact")
        return sha256.encode() * 10


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache_of(registry: FakeRegistry, clock: Clock, **kw: object) -> RegistryCache:
    return RegistryCache(
        registry,
        refresh_s=30,
        name=f"c-{uuid.uuid4().hex[:8]}",
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def gauge(name: str, cache: RegistryCache) -> float:
    return REGISTRY.get_sample_value(name, {"cache": cache.name}) or 0.0


async def test_reads_answer_from_the_cache_while_young_then_ask_again(
    registry: FakeRegistry, clock: Clock
) -> None:
    cache = cache_of(registry, clock)
    assert (await cache.model("fraud")).aliases["production"].version == 1
    registry.production = 2
    clock.now += 29
    assert (await cache.model("fraud")).aliases["production"].version == 1
    assert registry.calls["get_model"] == 1
    clock.now += 2
    assert (await cache.model("fraud")).aliases["production"].version == 2
    assert (await cache.model("fraud", fresh=True)).aliases["production"].version == 2
    assert registry.calls["get_model"] == 3
    assert await cache.spec("fraud") == SPEC and registry.calls.get("get_spec") is None
    assert await cache.contract(SPEC.dataset.name) == SPEC.dataset
    assert await cache.contracts() == [SPEC.dataset]
    assert cache.stale_for_s == 0


async def test_model_list_carries_specs_fetched_once_per_spec_hash(
    registry: FakeRegistry, clock: Clock
) -> None:
    cache = cache_of(registry, clock)
    [info] = await cache.models()
    assert info.spec == SPEC and info.aliases["production"].version == 1
    await cache.models(fresh=True)
    assert registry.calls == {"list_models": 2, "get_spec": 1}
    registry.spec_sha = "s2"
    await cache.models(fresh=True)
    assert registry.calls["get_spec"] == 2
    assert cache.cached_model("fraud") is not None and cache.cached_model("other") is None


async def test_an_outage_serves_the_last_good_copy_and_logs_once(
    registry: FakeRegistry, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cache_of(registry, clock)
    await cache.models()
    await cache.contracts()
    registry.down = True
    clock.now += 60
    with caplog.at_level(logging.WARNING, logger="flywheel_shared.regcache"):
        for _ in range(3):
            assert [m.name for m in await cache.models()] == ["fraud"]
            assert await cache.contracts() == [SPEC.dataset]
    assert [r.message for r in caplog.records].count(
        "registry unreachable; answering with cached copies"
    ) == 1
    assert gauge("flywheel_registry_cache_stale", cache) == 1
    assert gauge("flywheel_registry_cache_errors_total", cache) == 6
    assert cache.stale_for_s == 60 and "connection refused" in (cache.last_error or "")
    with pytest.raises(RegistryUnavailable):
        await cache.model("fraud")  # never cached: nothing to fall back on
    registry.down = False
    await cache.models()
    assert gauge("flywheel_registry_cache_stale", cache) == 0 and cache.last_error is None


async def test_not_found_propagates_and_drops_the_copy(
    registry: FakeRegistry, clock: Clock
) -> None:
    cache = cache_of(registry, clock)
    with pytest.raises(RegistryError) as err:
        await cache.model("other")
    assert err.value.status == 404 and not isinstance(err.value, RegistryUnavailable)
    await cache.contract(SPEC.dataset.name)
    registry.down = True
    with pytest.raises(RegistryError):
        await cache.contract("nope")


async def test_concurrent_callers_share_one_request(registry: FakeRegistry, clock: Clock) -> None:
    cache = cache_of(registry, clock)
    registry.gate = asyncio.Event()
    readers = [asyncio.create_task(cache.model("fraud")) for _ in range(5)]
    await eventually(lambda: registry.calls.get("get_model") == 1)
    readers[0].cancel()  # one caller giving up does not cancel the others' request
    registry.gate.set()
    answers = await asyncio.gather(*readers[1:])
    assert registry.calls["get_model"] == 1 and len({id(a) for a in answers}) == 1
    registry.gate = asyncio.Event()
    registry.down = True
    failing = [asyncio.create_task(cache.artifact("b" * 64)) for _ in range(3)]
    await eventually(lambda: registry.calls.get("download_artifact") == 1)
    registry.gate.set()
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, RegistryUnavailable) for r in results)
    assert registry.calls["download_artifact"] == 1


async def test_versions_are_kept_forever_and_artifacts_in_a_bounded_lru(
    registry: FakeRegistry, clock: Clock
) -> None:
    cache = cache_of(registry, clock, max_artifact_bytes=1500)
    await cache.version("fraud", 1)
    clock.now += 10_000
    registry.down = True
    assert (await cache.version("fraud", 1)).version == 1  # no request: immutable
    registry.down = False
    first, second, third = ("a" * 64, "b" * 64, "c" * 64)  # 640 bytes each
    for sha in (first, second, first, third):  # first was used again: second is evicted
        assert await cache.artifact(sha) == sha.encode() * 10
    assert registry.calls["download_artifact"] == 3
    await cache.artifact(first)
    assert registry.calls["download_artifact"] == 3
    await cache.artifact(second)
    assert registry.calls["download_artifact"] == 4


async def test_an_event_outdates_the_model_and_the_refresher_reads_it_again(
    registry: FakeRegistry, clock: Clock
) -> None:
    cache = cache_of(registry, clock)
    await cache.model("fraud")
    await cache.models()
    cache.start()
    try:
        registry.production = 2
        cache.on_event(ModelAliasChanged(model="fraud", alias="production", version=2))
        await eventually(
            lambda: registry.calls["get_model"] == 2 and registry.calls["list_models"] == 2
        )
        info = cache.cached_model("fraud")
        assert info is not None and info.aliases["production"].version == 2
        assert (await cache.model("fraud")).aliases["production"].version == 2
        assert registry.calls["get_model"] == 2  # the refresher's copy is fresh
        # An outdated copy is not served during an outage: the caller must retry.
        registry.down = True
        cache.on_event(
            ModelVersionRegistered(
                model="fraud", version=3, status="candidate", artifact_uri="u", artifact_sha256="a"
            )
        )
        with pytest.raises(RegistryUnavailable):
            await cache.model("fraud")
        assert cache.alive() is None
    finally:
        await cache.stop()
    assert cache.alive() == "stopped"


async def test_a_request_under_way_when_the_event_came_is_not_shared(
    registry: FakeRegistry, clock: Clock
) -> None:
    cache = cache_of(registry, clock)
    registry.gate = asyncio.Event()
    early = asyncio.create_task(cache.model("fraud"))
    await eventually(lambda: registry.calls.get("get_model") == 1)
    cache.invalidate("fraud")  # the early request may carry the old aliases
    registry.production = 2
    late = asyncio.create_task(cache.model("fraud"))
    await eventually(lambda: registry.calls.get("get_model") == 2)
    registry.gate.set()
    await early
    assert (await late).aliases["production"].version == 2
    assert (await cache.model("fraud")).aliases["production"].version == 2


async def test_the_refresher_rereads_old_copies_each_period(registry: FakeRegistry) -> None:
    cache = RegistryCache(registry, refresh_s=0.05, name=f"c-{uuid.uuid4().hex[:8]}")
    await cache.contracts()
    cache.start()
    try:
        await eventually(lambda: registry.calls["list_contracts"] >= 3, timeout=5)
    finally:
        await cache.stop()
