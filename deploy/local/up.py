"""`make up`: Kafka + ingest + the fraud simulator on this machine, showing records flowing.

Kafka is $FLYWHEEL_KAFKA_BOOTSTRAP if set, else a container where a Docker engine answers,
else a local Apache Kafka broker (jars from Maven Central, data in .flywheel/kafka).
Everything started here is stopped on exit (Ctrl-C, or after --count records).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.request
from pathlib import Path

from rich.console import Console

from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.devkafka import pick_free_port
from flywheel_shared.events import BatchCommitted, DeadLetter, Event, RecordsRejected
from flywheel_shared.kafka.consumer import ConsumerConfig, Delivery, EventConsumer
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.simulate import HttpSink, Runner, Totals
from flywheel_shared.testing.kafka import acquire_broker
from flywheel_shared.testing.procs import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".flywheel"
console = Console(stderr=True)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--count", type=int, default=30_000, help="records to simulate (0: until Ctrl-C)"
    )
    p.add_argument("--rate", type=float, default=3_000, help="records per second")
    p.add_argument("--port", type=int, default=8000, help="ingest HTTP port (0: any free port)")
    p.add_argument("--drift-at", type=int, default=None, help="inject concept+covariate drift here")
    return p.parse_args()


async def watch(bootstrap: str, stop: asyncio.Event) -> None:
    """Print every data.batch.committed, rejection and dead letter as it happens."""
    settings = KafkaSettings(bootstrap=bootstrap)
    producer = EventProducer(settings, "flywheel-up")
    await producer.start()

    async def show(event: Event, _: Delivery) -> None:
        if isinstance(event, BatchCommitted):
            console.print(
                f"[green]segment[/] {event.dataset}/{event.segment_id}  "
                f"rows {event.row_count:>6,}  "
                f"dataset {event.total_rows:>8,} rows in {event.segment_count} segments  "
                f"snapshot {event.snapshot_id[:12]}"
            )
        elif isinstance(event, RecordsRejected):
            console.print(
                f"[yellow]rejected[/] {len(event.rejections)} records: "
                f"{event.rejections[0].errors[0].reason}"
            )
        elif isinstance(event, DeadLetter):
            console.print(f"[red]dead letter[/] from {event.source_topic}: {event.error[:120]}")

    consumer = EventConsumer(
        settings,
        ConsumerConfig(
            group_id=f"flywheel-up-{os.getpid()}",
            topics=["data.batch.committed", "data.rejected", "deadletter"],
        ),
        show,
        producer,
    )
    await consumer.start()
    try:
        await stop.wait()
    finally:
        await consumer.stop()
        await producer.stop()


async def simulate(url: str, args: argparse.Namespace) -> Totals:
    sim = FraudSimulator(
        seed=0,
        drift="both" if args.drift_at else "none",
        drift_at=args.drift_at,
        rate_per_s=args.rate,
    )
    runner = Runner(
        sim, HttpSink(url), rate=args.rate, batch=500, late_fraction=0.2, label_delay_s=5
    )
    last = [0]

    def progress(t: Totals) -> None:
        if t.sent - last[0] >= 5_000:
            last[0] = t.sent
            console.print(
                f"[cyan]simulator[/] sent {t.sent:>8,}  accepted {t.accepted:>8,}  "
                f"late labels {t.labels_late:>6,}  {t.rate:,.0f} rec/s"
            )

    return await runner.run(args.count or None, progress)


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data


async def settled(url: str, rows: int, timeout: float = 30.0) -> dict[str, object]:
    """Dataset info once every accepted row is in a sealed segment (or the deadline passed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info: dict[str, object] = await asyncio.to_thread(
            _get_json, f"{url}/v1/datasets/transactions"
        )
        if int(str(info["rows"])) >= rows or asyncio.get_running_loop().time() > deadline:
            return info
        await asyncio.sleep(0.5)


async def main() -> int:
    args = parse()
    logging.basicConfig(level=logging.ERROR)  # the demo's own lines only; ingest logs to its file
    STATE.mkdir(exist_ok=True)
    (STATE / "logs").mkdir(exist_ok=True)
    console.rule("[bold]Flywheel — local demo: Kafka → ingest → Parquet datasets")
    broker = acquire_broker(data_dir=STATE / "kafka")
    port = args.port or pick_free_port()
    ingest = ServiceProcess(
        "flywheel_ingest",
        {
            "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FLYWHEEL_STORAGE_URI": str(STATE / "store"),
            "FLYWHEEL_INGEST_SPECS": str(ROOT / "examples" / "*" / "flywheel.yaml"),
            "FLYWHEEL_INGEST_PORT": str(port),
            "FLYWHEEL_INGEST_SEGMENT_SECONDS": "2",
        },
        port,
        STATE / "logs" / "ingest.log",
    )
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        console.print(f"kafka   [bold]{broker.bootstrap}[/] ({broker.kind})")
        await asyncio.to_thread(ingest.start)
        console.print(
            f"ingest  [bold]{ingest.url}[/]  (log: {ingest.log_path.relative_to(ROOT)}, "
            f"metrics: {ingest.url}/metrics)"
        )
        watcher = asyncio.create_task(watch(broker.bootstrap, stop))
        totals = await simulate(ingest.url, args)
        info = await settled(ingest.url, totals.accepted)
        console.rule("[bold green]done")
        console.print(
            f"simulated {totals.sent:,} records ({totals.accepted:,} accepted, "
            f"{totals.labels_late:,} labels sent late)\n"
            f"dataset 'transactions' now holds {info['rows']:,} rows in {info['segments']} "
            f"segments, snapshot {str(info['snapshot_id'])[:12]}\n"
            f"manifest: {info['manifest_uri']}"
        )
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop.set()
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        ingest.stop()
        broker.close()


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
