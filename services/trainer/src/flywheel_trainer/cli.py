"""``flywheel train``: reproduce a version, or ask for a retrain now."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import uuid

import click
from rich.console import Console
from rich.table import Table

from flywheel_shared.events import RetrainRequested
from flywheel_shared.registry import ModelVersion, RegistryClient, RegistryError
from flywheel_shared.settings import DEFAULT_REGISTRY_URL
from flywheel_shared.snapshots import read_snapshot
from flywheel_shared.storage import ObjectStore

from .runner import run_job
from .worker import TrainJob, TrainResult

err = Console(stderr=True)


@click.group("train")
def train_group() -> None:
    """Training: reproduce versions, trigger retrains."""


@train_group.command("reproduce")
@click.argument("model")
@click.argument("version", type=int)
@click.option(
    "--registry-url",
    envvar="FLYWHEEL_REGISTRY_URL",
    default=DEFAULT_REGISTRY_URL,
    show_default=True,
)
@click.option(
    "--storage-uri", envvar="FLYWHEEL_STORAGE_URI", default=".flywheel/store", show_default=True
)
@click.option(
    "--tolerance",
    type=float,
    default=0.0,
    show_default=True,
    help="Allowed |difference| per metric.",
)
def reproduce(
    model: str, version: int, registry_url: str, storage_uri: str, tolerance: float
) -> None:
    """Re-run VERSION of MODEL from its record and compare the metrics side by side."""
    token = os.environ.get("FLYWHEEL_REGISTRY_TOKEN")

    async def go() -> tuple[ModelVersion, TrainResult]:
        async with RegistryClient(registry_url, token) as client:
            old = await client.get_version(model, version)
            spec = await client.get_spec(model)
        snap = old.lineage.snapshot_id
        record = await asyncio.to_thread(
            read_snapshot, ObjectStore(storage_uri), old.lineage.dataset, snap
        )
        if record is not None and record.contains_erased:
            raise click.ClickException(
                f"{model} v{version} cannot be reproduced: its snapshot {snap[:12]}… of "
                f"'{old.lineage.dataset}' contained records erased since (flywheel data erase); "
                "train a new version on the current data instead"
            )
        job = TrainJob(
            mode="reproduce",
            model=model,
            spec=spec,
            run_id=f"reproduce-{uuid.uuid4()}",
            correlation_id=old.correlation_id,
            storage_uri=storage_uri,
            registry_url=registry_url,
            registry_token=token,
            version=version,
        )
        err.print(
            f"re-running {model} v{version}: {old.lineage.recipe} "
            f"on snapshot {old.lineage.snapshot_id[:12]}…"
        )
        return old, await run_job(job, spec.recipe.timeout_s)

    try:
        old, result = asyncio.run(go())
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc
    if result.status != "reproduced":
        raise click.ClickException(f"re-run failed: {result.error}")
    table = Table(title=f"{model} v{version}: recorded vs re-run")
    for col in ("metric", "recorded", "re-run", "difference"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    same = True
    recorded = old.metrics
    for name, value in recorded.items():
        new = result.metrics.get(name, math.nan)
        diff = abs(new - value)
        ok = diff <= tolerance or (math.isnan(new) and math.isnan(value))
        same &= ok
        table.add_row(
            name, f"{value:.6f}", f"{new:.6f}", f"[{'green' if ok else 'red'}]{diff:.2e}[/]"
        )
    err.print(table)
    lin_old, lin_new = old.lineage, result.lineage
    assert lin_new is not None
    for label, a, b in (
        ("recipe source", lin_old.recipe_sha256, lin_new.recipe_sha256),
        ("lock file", lin_old.lock_sha256, lin_new.lock_sha256),
        ("snapshot", lin_old.snapshot_id, lin_new.snapshot_id),
    ):
        mark = "[green]same[/]" if a == b else f"[yellow]differs[/] ({str(a)[:12]} → {str(b)[:12]})"
        err.print(f"{label:14} {mark}")
    if not same:
        err.print(
            "[red]metrics differ[/]: the recipe is not deterministic, "
            "or its code or environment changed"
        )
        sys.exit(1)
    err.print("[green]reproduced[/]: identical metrics")


@train_group.command("now")
@click.argument("model")
@click.option("--reason", default="requested from the CLI", show_default=True)
@click.option(
    "--bootstrap", envvar="FLYWHEEL_KAFKA_BOOTSTRAP", default="127.0.0.1:9092", show_default=True
)
@click.option(
    "--topic-prefix", envvar="FLYWHEEL_KAFKA_TOPIC_PREFIX", default="flywheel", show_default=True
)
def now(model: str, reason: str, bootstrap: str, topic_prefix: str) -> None:
    """Ask the trainer to train MODEL now (publishes retrain.requested)."""
    from flywheel_shared.kafka.producer import EventProducer
    from flywheel_shared.settings import KafkaSettings

    async def go() -> RetrainRequested:
        producer = EventProducer(
            KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix), "flywheel-cli"
        )
        await producer.start()
        try:
            event = RetrainRequested(model=model, reason=reason, requested_by="cli")
            await producer.publish(event)
            return event
        finally:
            await producer.stop()

    event = asyncio.run(go())
    err.print(f"retrain of [bold]{model}[/] requested (event {event.event_id})")
