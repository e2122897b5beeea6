"""`make up`: the loop on this machine — data in, model trained, gated and served.

Starts Kafka, the registry, ingest, the trainer and serving; applies the fraud model spec; the
simulator publishes labelled transactions into ingest; every new batch may trigger a training
run; a version that passes its gates goes live and serving answers with it. Each step shows
up here as the event that carries it. Everything started here is stopped on exit.

Kafka is $FLYWHEEL_KAFKA_BOOTSTRAP if set, else a container where a Docker engine answers,
else a local Apache Kafka broker (jars from Maven Central, data in .flywheel/kafka).
State of a run (datasets, registry database, logs) goes to .flywheel/demo/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from flywheel_fraud.simulator import FraudSimulator
from flywheel_shared.devkafka import pick_free_port
from flywheel_shared.events import (
    BatchCommitted,
    DeadLetter,
    Event,
    ModelAliasChanged,
    RecordsRejected,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
)
from flywheel_shared.kafka.consumer import ConsumerConfig, Delivery, EventConsumer
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.registry import RegistryClient
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.simulate import HttpSink, Runner, Totals
from flywheel_shared.spec import ModelSpec
from flywheel_shared.testing.kafka import acquire_broker
from flywheel_shared.testing.procs import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".flywheel"
RUN = STATE / "demo"
console = Console(stderr=True)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=20_000, help="records to simulate")
    p.add_argument("--rate", type=float, default=2_000, help="records per second")
    p.add_argument("--fraud-rate", type=float, default=0.05, help="share of fraudulent records")
    p.add_argument("--timeout", type=float, default=300, help="give up after this many seconds")
    return p.parse_args()


def demo_spec() -> ModelSpec:
    """The example spec with demo-sized triggers (train every 5,000 rows, 5 s cooldown)."""
    data = yaml.safe_load((ROOT / "examples" / "fraud" / "flywheel.yaml").read_text())
    data["training"].update({"min_new_rows": 5000, "cooldown_s": 5})
    return ModelSpec.model_validate(data)


def show(event: Event) -> None:
    """One line per event of the loop."""
    if isinstance(event, BatchCommitted):
        console.print(
            f"[green]data[/]      segment {event.segment_id}: {event.row_count:,} rows "
            f"→ dataset {event.total_rows:,} rows, snapshot {event.snapshot_id[:10]}"
        )
    elif isinstance(event, TrainingStarted):
        console.print(f"[cyan]train[/]     {event.model}: started ({event.trigger})")
    elif isinstance(event, TrainingCompleted):
        verdict = "[green]passed[/]" if event.passed_gate else "[red]rejected[/]"
        console.print(
            f"[cyan]train[/]     {event.model} v{event.version}: roc_auc "
            f"{event.metrics.get('roc_auc', float('nan')):.3f} in {event.duration_s:.1f} s, "
            f"gate {verdict}"
        )
        for reason in event.gate_reasons:
            console.print(f"            {reason}")
    elif isinstance(event, TrainingFailed):
        console.print(f"[red]train[/]     {event.model}: failed: {event.error.splitlines()[0]}")
    elif isinstance(event, ModelAliasChanged):
        console.print(
            f"[magenta]registry[/]  {event.model}: {event.alias} → v{event.version} "
            f"(was {event.previous_version}) {event.reason}"
        )
    elif isinstance(event, RecordsRejected):
        console.print(f"[yellow]rejected[/]  {len(event.rejections)} records")
    elif isinstance(event, DeadLetter):
        console.print(f"[red]dead letter[/] from {event.source_topic}: {event.error[:100]}")


async def watch(kafka: KafkaSettings, stop: asyncio.Event, live: dict[str, int]) -> None:
    """Follow the loop's events, print them, and note which version is in production."""
    producer = EventProducer(kafka, "flywheel-up")
    await producer.start()

    async def handle(event: Event, _: Delivery) -> None:
        show(event)
        if isinstance(event, ModelAliasChanged) and event.alias == "production" and event.version:
            live[event.model] = event.version

    consumer = EventConsumer(
        kafka,
        ConsumerConfig(
            group_id=f"flywheel-up-{os.getpid()}",
            topics=[
                "data.batch.committed",
                "data.rejected",
                "training.started",
                "training.completed",
                "training.failed",
                "model.alias.changed",
                "deadletter",
            ],
        ),
        handle,
        producer,
    )
    await consumer.start()
    try:
        await stop.wait()
    finally:
        await consumer.stop()
        await producer.stop()


def predict(url: str, records: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url + "/v1/models/fraud/predict",
        data=json.dumps({"records": records}).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def main() -> int:
    args = parse()
    logging.basicConfig(level=logging.ERROR)  # the demo's own lines only; services log to files
    shutil.rmtree(RUN, ignore_errors=True)
    (RUN / "logs").mkdir(parents=True)
    console.rule("[bold]Flywheel — the loop on this machine")
    broker = acquire_broker(data_dir=STATE / "kafka")
    prefix = f"demo{int(time.time())}"  # fresh topics per run; the broker's data persists
    token = secrets.token_hex(16)
    ports = {name: pick_free_port() for name in ("registry", "ingest", "trainer", "serving")}
    registry_url = f"http://127.0.0.1:{ports['registry']}"
    common = {
        "FLYWHEEL_KAFKA_BOOTSTRAP": broker.bootstrap,
        "FLYWHEEL_KAFKA_TOPIC_PREFIX": prefix,
        "FLYWHEEL_STORAGE_URI": str(RUN / "store"),
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(RUN / "bentoml"),
    }

    def service(name: str, module: str, env: dict[str, str]) -> ServiceProcess:
        return ServiceProcess(module, {**common, **env}, ports[name], RUN / "logs" / f"{name}.log")

    registry = service(
        "registry",
        "flywheel_registry",
        {
            "FLYWHEEL_REGISTRY_PORT": str(ports["registry"]),
            "FLYWHEEL_REGISTRY_TOKEN": token,
            "FLYWHEEL_REGISTRY_DATABASE_URL": f"sqlite:///{RUN / 'registry.db'}",
        },
    )
    ingest = service(
        "ingest",
        "flywheel_ingest",
        {
            "FLYWHEEL_INGEST_PORT": str(ports["ingest"]),
            "FLYWHEEL_INGEST_REGISTRY_URL": registry_url,
            "FLYWHEEL_INGEST_SEGMENT_SECONDS": "2",
        },
    )
    trainer = service(
        "trainer",
        "flywheel_trainer",
        {
            "FLYWHEEL_TRAINER_PORT": str(ports["trainer"]),
            "FLYWHEEL_TRAINER_REGISTRY_URL": registry_url,
            "FLYWHEEL_TRAINER_REGISTRY_TOKEN": token,
            "FLYWHEEL_TRAINER_SPEC_REFRESH_S": "2",
        },
    )
    serving = service(
        "serving",
        "flywheel_serving",
        {
            "FLYWHEEL_SERVING_PORT": str(ports["serving"]),
            "FLYWHEEL_SERVING_REGISTRY_URL": registry_url,
            "FLYWHEEL_SERVING_MODELS": "fraud",
            "FLYWHEEL_SERVING_WORKERS": "1",
        },
    )
    procs = [registry, ingest, trainer, serving]
    stop = asyncio.Event()
    live: dict[str, int] = {}
    watcher: asyncio.Task[None] | None = None
    try:
        console.print(f"kafka     [bold]{broker.bootstrap}[/] ({broker.kind}), topics {prefix}.*")
        await asyncio.to_thread(registry.start)
        async with RegistryClient(registry_url, token, actor="make-up") as reg:
            await reg.put_spec(demo_spec())
        console.print(f"registry  {registry.url}  (spec 'fraud' applied)")
        await asyncio.gather(
            asyncio.to_thread(ingest.start),
            asyncio.to_thread(trainer.start),
            asyncio.to_thread(serving.start, 120),
        )
        for name, proc in (("ingest", ingest), ("trainer", trainer), ("serving", serving)):
            console.print(f"{name:9} {proc.url}  (log: {proc.log_path.relative_to(ROOT)})")
        kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=prefix)
        watcher = asyncio.create_task(watch(kafka, stop, live))

        sim = FraudSimulator(seed=6, fraud_rate=args.fraud_rate, rate_per_s=args.rate)
        runner = Runner(sim, HttpSink(ingest.url), rate=args.rate, batch=500)
        console.print(
            f"[bold]simulating {args.count:,} labelled transactions at {args.rate:,.0f}/s[/]"
        )
        totals: Totals = await runner.run(args.count)
        console.print(f"simulator: {totals.sent:,} sent, {totals.accepted:,} accepted")

        deadline = time.monotonic() + args.timeout
        while "fraud" not in live:
            if time.monotonic() > deadline:
                console.print("[red]no version reached production in time[/] (see the logs above)")
                return 1
            await asyncio.sleep(0.5)
        queries = [
            {k: r[k] for k in demo_spec().features} for r in FraudSimulator(seed=99).batch(5)
        ]
        while True:
            code, body = await asyncio.to_thread(predict, serving.url, queries)
            if code == 200 and body.get("version") == live["fraud"]:
                break
            if time.monotonic() > deadline:
                console.print(f"[red]serving did not answer with v{live['fraud']}[/]: {body}")
                return 1
            await asyncio.sleep(0.5)
        console.rule("[bold green]served")
        scores = ", ".join(f"{p:.3f}" for p in _scores(body))
        console.print(
            f"POST {serving.url}/v1/models/fraud/predict → v{body['version']} "
            f"({body['route']}): fraud scores {scores}"
        )
        console.print(
            f"state: {RUN.relative_to(ROOT)}/ — try `flywheel models versions fraud --url "
            f"{registry_url}` while it runs, or read the logs there"
        )
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        stop.set()
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        for proc in reversed(procs):
            proc.stop()
        broker.close()


def _scores(body: dict[str, Any]) -> list[float]:
    return [float(p["score"]) for p in body.get("predictions", [])]


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
