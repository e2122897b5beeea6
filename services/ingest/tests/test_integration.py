"""Ingest against a real Kafka broker, as a real process over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import itertools
import json
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flywheel_devkit.kafka import LocalKafka, pick_free_port
from flywheel_devkit.testing.kafka_io import read_events
from flywheel_devkit.testing.procs import ServiceProcess, metric_sum, run_to_exit
from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.auth import token_digest
from flywheel_shared.datasets import Manifest
from flywheel_shared.events import (
    BatchCommitted,
    DeadLetter,
    Event,
    RawRecords,
    RecordsRejected,
    RecordsValidated,
)
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.storage import ObjectStore
from flywheel_shared.topics import TopicNamer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SPECS = str(ROOT / "examples" / "*" / "flywheel.yaml")


class Ingest:
    """One ingest process with its own topic prefix and store."""

    def __init__(self, bootstrap: str, tmp: Path, prefix: str | None = None, **env: str) -> None:
        self.prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
        self.topics = TopicNamer(self.prefix)
        self.bootstrap = bootstrap
        self.store_dir = tmp / "store"
        port = pick_free_port()
        self.proc = ServiceProcess(
            "flywheel_ingest",
            {
                "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap,
                "FLYWHEEL_KAFKA_TOPIC_PREFIX": self.prefix,
                "FLYWHEEL_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "FLYWHEEL_STORAGE_URI": str(self.store_dir),
                "FLYWHEEL_INGEST_SPECS": SPECS,
                "FLYWHEEL_INGEST_PORT": str(port),
                "FLYWHEEL_INGEST_SEGMENT_SECONDS": "1",
                **env,
            },
            port,
            tmp / f"ingest-{port}.log",
        )

    def post(
        self,
        path: str,
        body: bytes,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        status, _, answer = self.proc.request(
            "POST", path, body, {"content-type": ctype, **(headers or {})}
        )
        return status, json.loads(answer)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.proc.url + path, timeout=10) as resp:
            return json.loads(resp.read())

    def manifest(self) -> Manifest:
        store = ObjectStore(str(self.store_dir))
        key = "datasets/transactions/manifest.json"
        return (
            Manifest.model_validate_json(store.get(key))
            if store.exists(key)
            else Manifest(dataset="transactions")
        )

    def stored_ids(self) -> list[str]:
        store = ObjectStore(str(self.store_dir))
        ids: list[str] = []
        for seg in self.manifest().segments:
            ids += (
                pq.read_table(io.BytesIO(store.get(seg.key))).column("transaction_id").to_pylist()
            )
        return ids

    async def read(
        self, topic: str, until: Any, timeout: float = 30, raw: list[bytes] | None = None
    ) -> list[Event]:
        return await read_events(
            self.bootstrap, self.topics(topic), until=until, timeout=timeout, raw=raw
        )


@pytest.fixture
def ingest(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Ingest]:
    svc = Ingest(kafka_bootstrap, tmp_path, FLYWHEEL_INGEST_MAX_BODY_BYTES="200000")
    svc.proc.start()
    yield svc
    # uvicorn re-raises SIGTERM after its graceful shutdown, hence -15 rather than 0.
    assert svc.proc.stop() in (0, -signal.SIGTERM), svc.proc.tail()
    assert "ingest stopped" in svc.proc.tail(), svc.proc.tail()


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return FraudSimulator(seed=seed).batch(n)


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


async def test_valid_record_flows_to_validated_segment_and_batch_event(ingest: Ingest) -> None:
    recs = records(3)
    bad = dict(recs[0], transaction_id="bad-1", amount=-5.0)
    status, body = ingest.post(
        "/v1/datasets/transactions/records", json.dumps([*recs, bad]).encode()
    )
    assert status == 202, body
    assert body["accepted"] == 3 and body["rejected"] == 1
    assert body["rejections"][0]["index"] == 3
    assert body["rejections"][0]["errors"][0]["field"] == "amount"

    validated = await ingest.read("data.validated", lambda ev: sum(len(e.records) for e in ev) >= 3)
    assert {r["transaction_id"] for e in validated for r in e.records} == {
        r["transaction_id"] for r in recs
    }  # type: ignore[attr-defined]
    [rejected] = await ingest.read("data.rejected", lambda ev: len(ev) >= 1)
    assert isinstance(rejected, RecordsRejected)
    assert "below the minimum" in rejected.rejections[0].errors[0].reason
    assert rejected.correlation_id == validated[0].correlation_id

    [batch] = await ingest.read("data.batch.committed", lambda ev: len(ev) >= 1)
    assert isinstance(batch, BatchCommitted)
    assert batch.dataset == "transactions" and batch.row_count == 3
    assert batch.correlation_id == validated[0].correlation_id
    assert batch.stats["amount"].count == 3  # type: ignore[union-attr]
    assert sorted(ingest.stored_ids()) == sorted(r["transaction_id"] for r in recs)
    assert batch.snapshot_id == ingest.manifest().snapshot_id()
    info = await asyncio.to_thread(ingest.get, "/v1/datasets/transactions")
    assert (info["rows"], info["segments"], info["snapshot_id"]) == (3, 1, batch.snapshot_id)
    seg_path = Path(batch.segment_uri.removeprefix("file://"))
    assert seg_path.exists()  # noqa: ASYNC240

    status, info = ingest.post(
        "/v1/datasets/transactions/labels",
        json.dumps([{"record_id": recs[0]["transaction_id"], "label": True}]).encode(),
    )
    assert status == 202 and info["accepted"] == 1
    [labels] = await ingest.read("data.labels", lambda ev: len(ev) >= 1)
    assert labels.labels[0].record_id == recs[0]["transaction_id"]  # type: ignore[attr-defined]


async def test_bad_requests_get_clear_4xx(ingest: Ingest) -> None:
    path = "/v1/datasets/transactions/records"
    good = json.dumps(records(1)).encode()
    cases = [
        (ingest.post(path, good, ctype="text/plain"), 415, "unsupported_media_type"),
        (ingest.post(path, b"[{not json"), 400, "invalid_json"),
        (ingest.post(path, b'{"a": 1}'), 400, "not_an_array"),
        (ingest.post(path, b"[]"), 400, "empty"),
        (ingest.post("/v1/datasets/nope/records", good), 404, "unknown_dataset"),
        (ingest.post(path, json.dumps(records(1000)).encode()), 413, "body_too_large"),
        (
            ingest.post(
                "/v1/datasets/transactions/labels", b'[{"record_id": "x", "label": "maybe"}]'
            ),
            422,
            "invalid_labels",
        ),
    ]
    for (status, body), want_status, want_code in cases:
        assert (status, body["code"]) == (want_status, want_code), body
        assert body["detail"]
    status, body = ingest.post(path, json.dumps([{"transaction_id": "x"}]).encode())
    assert status == 422 and body["accepted"] == 0
    assert {e["field"] for e in body["rejections"][0]["errors"]} >= {"amount", "event_time"}
    ndjson = b"\n".join(json.dumps(r).encode() for r in records(4, seed=9))
    status, body = ingest.post(path, ndjson, ctype="application/x-ndjson")
    assert (status, body["accepted"]) == (202, 4)


async def test_poison_message_is_dead_lettered_and_consumer_continues(ingest: Ingest) -> None:
    producer = EventProducer(
        KafkaSettings(bootstrap=ingest.bootstrap, topic_prefix=ingest.prefix), "test"
    )
    await producer.start()
    try:
        poison = b"\x00\x01 definitely not an event"
        await producer.send_bytes(ingest.topics("data.raw"), poison, key=b"transactions")
        await producer.send_bytes(
            ingest.topics("data.raw"), b'{"type": "data.raw", "dataset": 1}', key=b"transactions"
        )
        good = records(5, seed=3)
        await producer.publish(RawRecords(dataset="transactions", records=good, source="test"))
    finally:
        await producer.stop()
    letters = await ingest.read("deadletter", lambda ev: len(ev) >= 2)
    assert all(isinstance(e, DeadLetter) for e in letters)
    # The dead-letter topic has several partitions: the letters come back in any order.
    by_bytes = {base64.b64decode(e.value_b64): e for e in letters}  # type: ignore[attr-defined]
    assert poison in by_bytes
    assert "undecodable" in by_bytes[poison].error  # type: ignore[attr-defined]
    validated = await ingest.read("data.validated", lambda ev: sum(len(e.records) for e in ev) >= 5)
    assert isinstance(validated[0], RecordsValidated)
    await wait_for(lambda: len(ingest.stored_ids()) == 5, 30, "raw records stored")


class Poster:
    """Posts batches continuously, retrying each with its Idempotency-Key until acknowledged."""

    def __init__(self, ingest: Ingest, batch: int = 200) -> None:
        self.ingest, self.batch = ingest, batch
        self.sim = FraudSimulator(seed=42)
        self.acked: list[str] = []
        self.ack_times: list[float] = []  # monotonic time of each acknowledged batch
        self.retries = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            recs = self.sim.batch(self.batch)
            key = str(uuid.uuid4())
            while True:
                try:
                    status, body = self.ingest.post(
                        "/v1/datasets/transactions/records",
                        json.dumps(recs).encode(),
                        headers={"idempotency-key": key},
                    )
                    if status == 202:
                        assert body["accepted"] == len(recs)
                        self.acked += [r["transaction_id"] for r in recs]
                        self.ack_times.append(time.monotonic())
                        break
                except (
                    urllib.error.URLError,
                    http.client.HTTPException,  # e.g. IncompleteRead when the server is killed
                    ConnectionError,
                    TimeoutError,
                    json.JSONDecodeError,
                ):
                    pass
                self.retries += 1
                self.stop.wait(0.1)

    def longest_stall(self, since: float) -> float:
        """The longest time without an acknowledgement after ``since`` (monotonic)."""
        times = [since, *(x for x in self.ack_times if x > since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def __enter__(self) -> Poster:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


async def wait_acked(poster: Poster, n: int, timeout: float = 60) -> None:
    await wait_for(lambda: len(poster.acked) >= n, timeout, f"{n} records acknowledged")


@pytest.mark.slow
async def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    svc = Ingest(
        kafka_bootstrap,
        tmp_path,
        FLYWHEEL_INGEST_SEGMENT_ROWS="1000",
        FLYWHEEL_INGEST_SEGMENT_SECONDS="3",
    )
    svc.proc.start()
    raw_ids: list[str] = []
    producer = EventProducer(
        KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=svc.prefix), "test"
    )
    await producer.start()
    raw_sim = FraudSimulator(seed=7)
    try:
        with Poster(svc) as poster:
            for _round in range(2):
                await wait_acked(poster, len(poster.acked) + 1500)
                for _ in range(5):  # the Kafka path too
                    recs = raw_sim.batch(50)
                    await producer.publish(RawRecords(dataset="transactions", records=recs))
                    raw_ids += [r["transaction_id"] for r in recs]
                # SIGKILL: buffers, in-flight requests and uncommitted offsets are lost.
                svc.proc.kill()
                svc.proc.start()
            await wait_acked(poster, len(poster.acked) + 1000)
        expected = sorted(poster.acked + raw_ids)
        await wait_for(lambda: svc.manifest().total_rows >= len(expected), 60, "all rows stored")
        stored = svc.stored_ids()
        assert len(stored) == len(set(stored)), "duplicated rows"
        assert sorted(stored) == expected
        assert poster.retries >= 1  # the kill really interrupted the stream
    finally:
        await producer.stop()
        svc.proc.stop()


@pytest.mark.slow
async def test_broker_restart_under_load_needs_no_manual_action(
    restartable_kafka: LocalKafka, tmp_path: Path
) -> None:
    svc = Ingest(restartable_kafka.bootstrap, tmp_path)
    svc.proc.start()
    try:
        with Poster(svc) as poster:
            await wait_acked(poster, 1000)
            began = time.monotonic()
            await asyncio.to_thread(restartable_kafka.restart)
            down_s = time.monotonic() - began
            before = len(poster.acked)
            await wait_acked(poster, before + 2000, timeout=120)
            # The outage really held the stream up: acknowledgements wait for Kafka.
            stall = poster.longest_stall(began)
            assert stall >= min(1.0, down_s / 2), (stall, down_s)
        await wait_for(svc.proc.ready, 60, "ingest ready again")
        await wait_for(
            lambda: svc.manifest().total_rows >= len(poster.acked), 60, "all rows stored"
        )
        stored = svc.stored_ids()
        assert sorted(stored) == sorted(poster.acked)
    finally:
        svc.proc.stop()


async def test_before_kafka_is_reachable_readyz_and_writes_say_503_with_retry_after(
    tmp_path: Path,
) -> None:
    svc = Ingest(f"127.0.0.1:{pick_free_port()}", tmp_path)  # nothing listens there
    svc.proc.start(wait=False)
    try:
        deadline = time.monotonic() + 60
        while True:  # up, answering, not ready
            try:
                status, _, body = svc.proc.request("GET", "/readyz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, svc.proc.tail()
                await asyncio.sleep(0.2)
        assert status == 503, body
        assert "kafka" in json.loads(body)["problems"]
        status, headers, body = svc.proc.request(
            "POST",
            "/v1/datasets/transactions/records",
            json.dumps(records(3)).encode(),
            {"content-type": "application/json"},
        )
        assert status == 503 and headers["retry-after"] == "1", body
        assert json.loads(body)["code"] == "not_ready"
        assert svc.proc.request("GET", "/healthz")[0] == 200  # alive, so not restarted
    finally:
        svc.proc.stop()


@pytest.mark.slow
async def test_with_kafka_down_a_write_is_503_in_time_and_its_retry_lands_once(
    restartable_kafka: LocalKafka, tmp_path: Path
) -> None:
    svc = Ingest(restartable_kafka.bootstrap, tmp_path, FLYWHEEL_INGEST_PUBLISH_TIMEOUT_S="3")
    svc.proc.start()
    recs = records(50, seed=5)
    body, hdrs = (
        json.dumps(recs).encode(),
        {
            "content-type": "application/json",
            "idempotency-key": "outage-1",
        },
    )
    try:
        await asyncio.to_thread(restartable_kafka.stop)
        try:
            began = time.monotonic()
            status, headers, answer = await asyncio.to_thread(
                svc.proc.request, "POST", "/v1/datasets/transactions/records", body, hdrs
            )
            took = time.monotonic() - began
            assert status == 503 and headers["retry-after"] == "1", answer
            assert json.loads(answer)["code"] == "kafka_unavailable"
            assert took < 10, f"the 503 took {took:.1f} s (publish timeout 3 s)"
            await wait_for(lambda: not svc.proc.ready(), 30, "/readyz 503 without Kafka")
        finally:
            await asyncio.to_thread(restartable_kafka.start)
        await wait_for(svc.proc.ready, 60, "ready again once Kafka is back")
        status, _, answer = await asyncio.to_thread(
            svc.proc.request, "POST", "/v1/datasets/transactions/records", body, hdrs
        )
        assert status == 202 and json.loads(answer)["accepted"] == 50, answer
        ids = sorted(r["transaction_id"] for r in recs)
        await wait_for(lambda: svc.manifest().total_rows >= 50, 60, "the rows stored")
        # Once each: whether or not the unacknowledged first attempt was delivered when Kafka
        # came back, the retry under the same key has the same event ids.
        assert sorted(svc.stored_ids()) == ids
    finally:
        svc.proc.stop()


def counter(svc: Ingest, name: str) -> float:
    """Sum of a counter's samples on one process's /metrics."""
    return metric_sum(svc.proc.request("GET", "/metrics")[2].decode(), name)


@pytest.mark.slow
async def test_split_deployment_api_validator_and_writer_as_three_processes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """RUN_RAW_CONSUMER / RUN_WRITER: an HTTP-only front, a data.raw validator and a writer,
    on one prefix and one store, store every record once, each doing only its part."""
    off = {"FLYWHEEL_INGEST_RUN_RAW_CONSUMER": "false", "FLYWHEEL_INGEST_RUN_WRITER": "false"}
    api = Ingest(kafka_bootstrap, tmp_path, **off)
    prefix = api.prefix
    validator = Ingest(kafka_bootstrap, tmp_path, prefix, FLYWHEEL_INGEST_RUN_WRITER="false")
    writer = Ingest(kafka_bootstrap, tmp_path, prefix, FLYWHEEL_INGEST_RUN_RAW_CONSUMER="false")
    procs = (api, validator, writer)
    try:
        for svc in procs:
            await asyncio.to_thread(svc.proc.start)
        http_recs, raw_recs = records(300, seed=21), records(200, seed=22)
        status, body = api.post("/v1/datasets/transactions/records", json.dumps(http_recs).encode())
        assert status == 202 and body["accepted"] == 300, body
        producer = EventProducer(KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix), "t")
        await producer.start()
        try:
            await producer.publish(RawRecords(dataset="transactions", records=raw_recs))
        finally:
            await producer.stop()
        want = sorted(r["transaction_id"] for r in http_recs + raw_recs)
        await wait_for(lambda: writer.manifest().total_rows >= 500, 60, "every record stored")
        assert sorted(writer.stored_ids()) == want
        rows = "flywheel_ingest_rows_written_total"
        assert (counter(api, rows), counter(validator, rows), counter(writer, rows)) == (0, 0, 500)
        accepted = "flywheel_ingest_records_accepted_total"
        assert counter(validator, accepted) == 200  # data.raw is validated there only
        assert counter(api, accepted) == 300 and counter(writer, accepted) == 0
    finally:
        for svc in procs:
            svc.proc.stop()


async def test_a_token_guards_the_write_paths_and_never_reaches_the_log(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")  # as a mounted Kubernetes Secret
    # Named tokens with roles: writes need 'service', a 'reader' token is refused.
    reader, collector = f"reader-{uuid.uuid4().hex}", f"collector-{uuid.uuid4().hex}"
    (tmp_path / "collector").write_text(collector)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"name": "dash-bob", "sha256": token_digest(reader), "roles": ["reader"]},
                {
                    "name": "collector",
                    "token_file": str(tmp_path / "collector"),
                    "roles": ["service"],
                },
            ]
        )
    )
    svc = Ingest(
        kafka_bootstrap,
        tmp_path,
        FLYWHEEL_INGEST_ENVIRONMENT="production",
        FLYWHEEL_INGEST_TOKEN_FILE=str(token_file),
        FLYWHEEL_INGEST_TOKENS_FILE=str(tokens),
        FLYWHEEL_INGEST_LOG_LEVEL="DEBUG",
    )
    await asyncio.to_thread(svc.proc.start)
    body = json.dumps(records(2, seed=31)).encode()
    json_type = {"content-type": "application/json"}
    try:
        for path in ("/v1/datasets/transactions/records", "/v1/datasets/transactions/labels"):
            status, headers, answer = svc.proc.request("POST", path, body, json_type)
            assert status == 401 and headers["www-authenticate"] == "Bearer", answer
            status, _, answer = svc.proc.request(
                "POST", path, body, {**json_type, "authorization": "Bearer not-it"}
            )
            assert status == 403, answer
            status, _, answer = svc.proc.request(
                "POST", path, body, {**json_type, "authorization": f"Bearer {reader}"}
            )
            refused = json.loads(answer)
            assert (status, refused["code"]) == (403, "forbidden_role"), answer
            assert "'dash-bob'" in refused["detail"] and "'service'" in refused["detail"]
        for token in (secret, collector):
            status, _, answer = svc.proc.request(
                "POST",
                "/v1/datasets/transactions/records",
                body,
                {**json_type, "authorization": f"Bearer {token}"},
            )
            assert status == 202, answer
        assert svc.proc.request("GET", "/v1/datasets/transactions")[0] == 200  # reads stay open
    finally:
        svc.proc.stop()
    log = svc.proc.log_path.read_text()
    assert secret not in log and reader not in log and collector not in log


def test_production_ingest_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    proc = run_to_exit(
        "flywheel_ingest",
        {"FLYWHEEL_INGEST_ENVIRONMENT": "production"},
        unset=("FLYWHEEL_INGEST_TOKEN",),
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        "production needs FLYWHEEL_INGEST_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    )


async def test_cli_uploads_csv_and_jsonl_with_a_summary(ingest: Ingest, tmp_path: Path) -> None:
    import pandas as pd
    from click.testing import CliRunner

    from flywheel_ingest.cli import ingest_command

    recs = records(1200, seed=11)
    frame = pd.DataFrame(recs)
    frame.loc[5, "merchant_category"] = "casino"  # one bad row
    csv = tmp_path / "tx.csv"
    frame.to_csv(csv, index=False)
    result = await asyncio.to_thread(
        CliRunner().invoke,
        ingest_command,
        [str(csv), "--dataset", "transactions", "--url", ingest.proc.url, "--batch-size", "500"],
    )
    assert result.exit_code == 0, result.output
    assert "1,199" in result.output and "category" in result.output
    assert "row 6: merchant_category" in result.output

    jsonl = tmp_path / "tx.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records(10, seed=12)))
    result = await asyncio.to_thread(
        CliRunner().invoke,
        ingest_command,
        [str(jsonl), "-d", "transactions", "--url", ingest.proc.url],
    )
    assert result.exit_code == 0, result.output

    # Parquet keeps the types: the contract's datetime column arrives as timestamps.
    pq_recs = records(40, seed=13)
    pq_frame = pd.DataFrame(pq_recs)
    pq_frame["event_time"] = pd.to_datetime(pq_frame["event_time"], utc=True)
    parquet = tmp_path / "tx.parquet"
    pq_frame.to_parquet(parquet, index=False)
    result = await asyncio.to_thread(
        CliRunner().invoke,
        ingest_command,
        [str(parquet), "-d", "transactions", "--url", ingest.proc.url],
    )
    assert result.exit_code == 0, result.output
    assert "40" in result.output
    await wait_for(lambda: len(ingest.stored_ids()) == 1249, 30, "CLI rows stored")
    stored = set(ingest.stored_ids())
    assert {r["transaction_id"] for r in pq_recs} <= stored
