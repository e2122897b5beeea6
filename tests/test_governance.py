"""Governance end to end: a batch unlike production's training data is quarantined (kept,
out of training) until a person releases it; an erased record leaves every later snapshot."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from e2e_support import Stack, fraud_spec, post_records
from test_training_loop import events, publish, start, until

from flywheel_devkit.testing.kafka_io import read_events
from flywheel_fraud.simulator import FraudSimulator
from flywheel_ingest.datacli import data_group
from flywheel_shared.datasets import read_manifest
from flywheel_shared.events import (
    BatchCommitted,
    BatchQuarantined,
    DataAudit,
    RetrainRequested,
    TrainingCompleted,
)
from flywheel_shared.registry import RegistryClient
from flywheel_shared.snapshots import read_snapshot
from flywheel_shared.storage import ObjectStore
from flywheel_trainer.cli import train_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def post_json(url: str, body: Any) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def ids_in(store: ObjectStore, key: str) -> list[str]:
    table = pq.read_table(io.BytesIO(store.get(key)))
    return [str(i) for i in table.column("transaction_id").to_pylist()]


def ids_of(store: ObjectStore, segments: list[str]) -> list[str]:
    """The record ids of the named segments, as the manifest lists them now."""
    by_id = {s.segment_id: s for s in read_manifest(store, "transactions").segments}
    return [i for seg in segments for i in ids_in(store, by_id[seg].key)]


async def production_known(stack: Stack) -> None:
    """Until ingest sees the production model's snapshot (its registry cache refreshes)."""
    url = f"{stack.ingest.url}/v1/datasets/transactions/stats"
    deadline = asyncio.get_running_loop().time() + 120
    while (await asyncio.to_thread(get, url)).get("baseline_source") != "fraud v1":
        assert asyncio.get_running_loop().time() < deadline, "ingest never saw production v1"
        await asyncio.sleep(0.5)


async def trained(stack: Stack, n: int) -> int:
    """The version the ``n``-th completed training registered."""
    done = await events(stack, "training.completed", n, timeout=240)
    last = done[n - 1]
    assert isinstance(last, TrainingCompleted) and last.version is not None
    return last.version


@pytest.mark.timeout(900)
async def test_a_broken_batch_is_quarantined_until_released(stack: Stack) -> None:
    spec, _ = fraud_spec()
    await start(stack, spec)
    store = ObjectStore(str(stack.store))
    await asyncio.to_thread(post_records, stack)
    assert await trained(stack, 1) == 1
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        assert (await reg.get_model("fraud")).aliases["production"].version == 1
        lin1 = (await reg.get_version("fraud", 1)).lineage
    await production_known(stack)
    before = len(read_manifest(store, "transactions").segments)

    # 1,000 rows all of one rare merchant category (4% of production's data): broken.
    broken = FraudSimulator(seed=21, fraud_rate=0.05).batch(1000)
    for r in broken:
        r["merchant_category"] = "jewelry"
    url = f"{stack.ingest.url}/v1/datasets/transactions/records"
    assert await asyncio.to_thread(post_json, url, broken) == 202
    quarantined = await read_events(
        stack.bootstrap,
        stack.topics("data.batch.quarantined"),
        until=lambda ev: sum(e.row_count for e in ev if isinstance(e, BatchQuarantined)) >= 1000,
        timeout=60,
    )
    held = [e for e in quarantined if isinstance(e, BatchQuarantined)]
    assert {f.check for e in held for f in e.findings} == {"categories"}
    assert all("merchant_category" in e.findings[0].detail for e in held)
    manifest = read_manifest(store, "transactions")
    assert len(manifest.segments) == before + len(held)
    assert {s.segment_id for s in manifest.segments if s.quarantined} == {
        e.segment_id for e in held
    }
    # No data.batch.committed for the quarantined segments.
    committed = await events(stack, "data.batch.committed", 1)
    assert not {e.segment_id for e in committed if isinstance(e, BatchCommitted)} & {
        e.segment_id for e in held
    }
    # Listed, by the API and the CLI.
    listed = await asyncio.to_thread(
        get, f"{stack.ingest.url}/v1/datasets/transactions/quarantined"
    )
    assert [s["segment_id"] for s in listed["segments"] if s["held"]] == [
        e.segment_id for e in held
    ]
    cli = CliRunner()
    result = await asyncio.to_thread(
        cli.invoke, data_group, ["quarantined", "transactions", "--ingest-url", stack.ingest.url]
    )
    assert result.exit_code == 0, result.output
    assert held[0].segment_id in result.output and "held" in result.output
    stats = await asyncio.to_thread(get, f"{stack.ingest.url}/v1/datasets/transactions/stats")
    assert stats["current"]["excluded_reasons"] == {"quarantine": len(held)}

    # A training now leaves the quarantined rows out.
    await publish(stack, RetrainRequested(model="fraud", reason="test", requested_by="test"))
    v2 = await trained(stack, 2)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        lin2 = (await reg.get_version("fraud", v2)).lineage
    record2 = read_snapshot(store, "transactions", lin2.snapshot_id)
    assert record2 is not None
    assert not set(record2.segments) & {e.segment_id for e in held}
    # Without the quarantined rows the data is v1's: the same snapshot (named by what it
    # includes), its rows only.
    assert lin2.snapshot_id == lin1.snapshot_id and lin2.snapshot_rows == lin1.snapshot_rows

    # Released (audited): announced as new data, and the next training includes it.
    for e in held:
        result = await asyncio.to_thread(
            cli.invoke,
            data_group,
            ["release", "transactions", e.segment_id, "--reason", "jewelry promotion week",
             "--ingest-url", stack.ingest.url, "--actor", "alice"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    audits = await read_events(
        stack.bootstrap,
        stack.topics("data.audit"),
        until=lambda ev: len(ev) >= len(held),
        timeout=60,
    )
    assert {(a.action, a.actor, a.reason) for a in audits if isinstance(a, DataAudit)} == {
        ("release", "alice", "jewelry promotion week")
    }
    assert {a.target for a in audits if isinstance(a, DataAudit)} == {e.segment_id for e in held}
    await until(
        lambda: not any(s.quarantined for s in read_manifest(store, "transactions").segments),
        30,
        "the release in the manifest",
    )
    released = await read_events(
        stack.bootstrap,
        stack.topics("data.batch.committed"),
        until=lambda ev: (
            {e.segment_id for e in held}
            <= {b.segment_id for b in ev if isinstance(b, BatchCommitted)}
        ),
        timeout=60,
    )
    assert released
    again = await asyncio.to_thread(
        cli.invoke,
        data_group,
        ["release", "transactions", held[0].segment_id, "--reason", "twice",
         "--ingest-url", stack.ingest.url],
    )  # fmt: skip
    assert again.exit_code == 0, again.output  # idempotent: the first release stands
    await publish(stack, RetrainRequested(model="fraud", reason="test 2", requested_by="test"))
    v3 = await trained(stack, 3)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        lin3 = (await reg.get_version("fraud", v3)).lineage
    record3 = read_snapshot(store, "transactions", lin3.snapshot_id)
    assert record3 is not None and not record3.excluded
    assert {e.segment_id for e in held} <= set(record3.segments)
    assert lin3.snapshot_rows == lin1.snapshot_rows + 1000


@pytest.mark.timeout(900)
async def test_an_erased_record_is_absent_from_the_next_snapshot_and_model(stack: Stack) -> None:
    spec, _ = fraud_spec()
    await start(stack, spec)
    store = ObjectStore(str(stack.store))
    await asyncio.to_thread(post_records, stack)
    assert await trained(stack, 1) == 1
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        lin1 = (await reg.get_version("fraud", 1)).lineage
    record1 = read_snapshot(store, "transactions", lin1.snapshot_id)
    assert record1 is not None and not record1.contains_erased
    first = read_manifest(store, "transactions").segments[0]
    victim = ids_in(store, first.key)[3]
    assert victim in ids_of(store, record1.segments)

    cli = CliRunner()
    result = await asyncio.to_thread(
        cli.invoke,
        data_group,
        ["erase", "transactions", "--id", victim, "--reason", "erasure request 7",
         "--ingest-url", stack.ingest.url, "--actor", "dpo"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "erased 1 row(s)" in result.output
    [audit] = await read_events(
        stack.bootstrap, stack.topics("data.audit"), until=lambda ev: len(ev) >= 1, timeout=60
    )
    assert isinstance(audit, DataAudit)
    assert (audit.action, audit.count, audit.actor) == ("erase", 1, "dpo")
    assert victim not in audit.model_dump_json()
    # The old snapshot's record says it held erased data; its version cannot be re-run.
    record1 = read_snapshot(store, "transactions", lin1.snapshot_id)
    assert record1 is not None and record1.contains_erased
    result = await asyncio.to_thread(
        CliRunner().invoke,
        train_group,
        ["reproduce", "fraud", "1", "--registry-url", stack.registry_url,
         "--storage-uri", str(stack.store)],
        env={"FLYWHEEL_REGISTRY_TOKEN": stack.token},
    )  # fmt: skip
    assert result.exit_code != 0
    assert "cannot be reproduced" in result.output and "erased" in result.output

    # The next training: a new snapshot, without the record.
    await publish(stack, RetrainRequested(model="fraud", reason="after erasure", requested_by="t"))
    v2 = await trained(stack, 2)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        lin2 = (await reg.get_version("fraud", v2)).lineage
    assert lin2.snapshot_id != lin1.snapshot_id
    assert lin2.snapshot_rows == lin1.snapshot_rows - 1
    record2 = read_snapshot(store, "transactions", lin2.snapshot_id)
    assert record2 is not None and not record2.contains_erased
    remaining = ids_of(store, record2.segments)
    assert victim not in remaining and len(remaining) == lin2.snapshot_rows
