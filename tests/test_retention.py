"""Retention end to end: rows past the contract's retention stay stored but out of training."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from e2e_support import Stack, fraud_spec, post_records
from test_training_loop import events, start, until

from flywheel_shared.datasets import read_manifest
from flywheel_shared.registry import RegistryClient
from flywheel_shared.snapshots import read_snapshot
from flywheel_shared.spec import ModelSpec
from flywheel_shared.storage import ObjectStore
from flywheel_trainer.cli import train_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


async def test_segments_past_retention_are_left_out_of_the_training_snapshot(
    stack: Stack,
) -> None:
    _, data = fraud_spec()
    data["dataset"]["retention_s"] = "30d"
    spec = ModelSpec.model_validate(data)
    await start(stack, spec)
    store = ObjectStore(str(stack.store))
    # 2,000 rows from 60 days ago (below min_new_rows: nothing trains yet), sealed first ...
    await asyncio.to_thread(post_records, stack, 2000, 3, datetime.now(UTC) - timedelta(days=60))
    await until(lambda: read_manifest(store, "transactions").total_rows == 2000, 60, "the old rows")
    old = {s.segment_id for s in read_manifest(store, "transactions").segments}
    # ... then 6,000 of today.
    await asyncio.to_thread(post_records, stack, 6000, 6, datetime.now(UTC))
    [completed] = await events(stack, "training.completed", 1, timeout=180)
    async with RegistryClient(stack.registry_url, stack.token) as reg:
        version = await reg.get_version("fraud", 1)
        assert (await reg.get_model("fraud")).aliases["production"].version == 1
    lin = version.lineage
    manifest = read_manifest(store, "transactions")
    assert (lin.excluded_segments, lin.excluded_rows) == (len(old), 2000)
    assert lin.snapshot_rows + lin.excluded_rows <= manifest.total_rows
    assert lin.snapshot_id not in {
        manifest.snapshot_id(i) for i in range(len(manifest.segments) + 1)
    }
    record = read_snapshot(store, "transactions", lin.snapshot_id)
    assert record is not None and record.rows == lin.snapshot_rows
    assert {e.segment_id for e in record.excluded} == old
    assert {e.reason for e in record.excluded} == {"retention"}
    assert not old & set(record.segments)
    assert record.stats["amount"].count == lin.snapshot_rows  # type: ignore[union-attr]

    # Ingest's statistics: the current snapshot beside the production model's.
    stats = await asyncio.to_thread(get, f"{stack.ingest.url}/v1/datasets/transactions/stats")
    assert stats["baseline_source"] == "fraud v1", stats.get("baseline_note")
    assert stats["baseline"]["id"] == lin.snapshot_id
    assert stats["baseline"]["excluded_reasons"] == {"retention": len(old)}
    assert stats["current"]["excluded_rows"] == 2000

    # The version reproduces from its snapshot record (no prefix of the manifest names it).
    result = await asyncio.to_thread(
        CliRunner().invoke,
        train_group,
        ["reproduce", "fraud", "1", "--registry-url", stack.registry_url,
         "--storage-uri", str(stack.store)],
        env={"FLYWHEEL_REGISTRY_TOKEN": stack.token},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "identical metrics" in result.output
    assert completed.version == 1  # type: ignore[attr-defined]
