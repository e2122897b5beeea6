"""``GET /v1/datasets/{name}/stats`` and ``flywheel data stats`` on a real ingest process."""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from test_integration import ROOT, Ingest, wait_for

from flywheel_fraud.simulator import FraudSimulator
from flywheel_ingest.datacli import data_group
from flywheel_ingest.domain.segments import build_table, content_hash, field_stats, to_parquet
from flywheel_shared.datasets import Manifest, SegmentEntry, manifest_key
from flywheel_shared.spec import DatasetContract, load_spec
from flywheel_shared.storage import ObjectStore

pytestmark = pytest.mark.integration


def old_segment(store: ObjectStore, contract: DatasetContract, n: int) -> SegmentEntry:
    """A segment of ``n`` records from 60 days ago, stored as the writer would have."""
    start = datetime.now(UTC) - timedelta(days=60)
    rows = FraudSimulator(seed=1, start=start).batch(n)
    table = build_table(contract, rows, ["old-event"] * n)
    data = to_parquet(table)
    key = "datasets/transactions/segments/p000-000000000000-000000000000.parquet"
    return SegmentEntry(
        segment_id="p000-000000000000-000000000000",
        key=key,
        uri=store.put(key, data),
        content_hash=content_hash(data),
        rows=n,
        partition=0,
        first_offset=0,
        last_offset=0,
        event_ids=["old-event"],
        created_at=start,
        min_event_time=start,
        max_event_time=start + timedelta(minutes=5),
        stats=field_stats(contract, table),
        announced=True,
    )


def get(ingest: Ingest, path: str) -> tuple[int, Any]:
    try:
        return 200, ingest.get(path)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_stats_leave_segments_past_retention_out_and_show_a_baseline(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    data = yaml.safe_load((ROOT / "examples" / "fraud" / "flywheel.yaml").read_text())
    data["dataset"]["retention_s"] = "30d"
    (tmp_path / "flywheel.yaml").write_text(yaml.safe_dump(data))
    contract = load_spec(tmp_path / "flywheel.yaml").dataset
    store = ObjectStore(str(tmp_path / "store"))
    old = old_segment(store, contract, 40)
    store.put(
        manifest_key("transactions"),
        Manifest(dataset="transactions", segments=[old]).model_dump_json().encode(),
    )
    old_snapshot = Manifest(dataset="transactions", segments=[old]).snapshot_id()
    ingest = Ingest(
        kafka_bootstrap, tmp_path, FLYWHEEL_INGEST_SPECS=str(tmp_path / "flywheel.yaml")
    )
    ingest.proc.start()
    try:
        fresh = FraudSimulator(seed=2, start=datetime.now(UTC)).batch(25)
        status, body = ingest.post("/v1/datasets/transactions/records", json.dumps(fresh).encode())
        assert status == 202 and body["accepted"] == 25, body
        await wait_for(lambda: len(ingest.manifest().segments) == 2, 30, "the fresh segment")

        status, stats = await asyncio.to_thread(get, ingest, "/v1/datasets/transactions/stats")
        assert status == 200, stats
        cur = stats["current"]
        manifest = ingest.manifest()
        assert (cur["rows"], cur["segments"]) == (25, 1)
        assert (cur["excluded_segments"], cur["excluded_rows"]) == (1, 40)
        assert cur["excluded_reasons"] == {"retention": 1}
        assert cur["id"] != manifest.snapshot_id()  # the old segment is not in it
        assert cur["stats"]["amount"]["count"] + cur["stats"]["amount"]["nulls"] == 25
        # Without a registry ingest cannot know production's snapshot, and says so.
        assert stats["baseline"] is None and "baseline=" in stats["baseline_note"]

        path = f"/v1/datasets/transactions/stats?baseline={old_snapshot}"
        status, stats = await asyncio.to_thread(get, ingest, path)
        assert status == 200, stats
        base = stats["baseline"]
        assert stats["baseline_source"] == "request"
        assert (base["id"], base["rows"], base["segments"], base["excluded_segments"]) == (
            old_snapshot,
            40,
            1,
            0,
        )
        assert base["stats"]["amount"] == json.loads(old.stats["amount"].model_dump_json())

        for bad, code, err in (
            ("nothex", 400, "invalid_snapshot"),
            ("0" * 64, 404, "unknown_snapshot"),
        ):
            status, body = await asyncio.to_thread(
                get, ingest, f"/v1/datasets/transactions/stats?baseline={bad}"
            )
            assert (status, body["code"]) == (code, err), body
        status, body = await asyncio.to_thread(get, ingest, "/v1/datasets/nope/stats")
        assert (status, body["code"]) == (404, "unknown_dataset")

        runner = CliRunner()
        args = ["stats", "transactions", "--ingest-url", ingest.proc.url]
        result = await asyncio.to_thread(
            runner.invoke, data_group, [*args, "--baseline", old_snapshot]
        )
        assert result.exit_code == 0, result.output
        for text in ("current snapshot vs baseline (request)", "null rate", "amount", "merchant"):
            assert text in result.output, result.output
        assert "1 segments, 40 rows" in result.output
        result = await asyncio.to_thread(runner.invoke, data_group, [*args, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["current"]["rows"] == 25
        result = await asyncio.to_thread(runner.invoke, data_group, [*args, "--baseline", "0" * 64])
        assert result.exit_code != 0 and "404" in result.output
    finally:
        assert ingest.proc.stop() in (0, -signal.SIGTERM), ingest.proc.tail()
