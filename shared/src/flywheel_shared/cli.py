"""The ``flywheel`` command. Services add sub-commands through the ``flywheel.cli`` entry point."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

import click
from rich.console import Console

from . import schemas as schema_mod

err = Console(stderr=True)


class _Plugins(click.Group):
    """A group that also lists the commands installed service packages provide."""

    def _plugins(self) -> dict[str, click.Command]:
        return {ep.name: ep.load() for ep in entry_points(group="flywheel.cli")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._plugins().get(name)


@click.group(cls=_Plugins, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Flywheel: a Kafka-native, closed-loop MLOps platform."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


@main.command()
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("shared/schemas"), show_default=True
)
@click.option(
    "--check", is_flag=True, help="Fail if the committed schemas are stale; write nothing."
)
def schemas(out: Path, check: bool) -> None:
    """Write the JSON Schema of every event and of the model spec."""
    if check:
        problems = schema_mod.stale(out)
        if problems:
            err.print(f"[red]stale schemas in {out}:[/] {', '.join(problems)} — run `make schemas`")
            sys.exit(1)
        click.echo(f"schemas in {out} are up to date")
        return
    files = schema_mod.write(out)
    click.echo(f"wrote {len(files)} schemas to {out}")


@main.command()
@click.option(
    "--bootstrap", envvar="FLYWHEEL_KAFKA_BOOTSTRAP", default="127.0.0.1:9092", show_default=True
)
def topics(bootstrap: str) -> None:
    """Create every Flywheel topic (with its partitions and configs) if missing."""
    from .kafka.admin import ensure_topics
    from .settings import KafkaSettings

    created = asyncio.run(ensure_topics(KafkaSettings(bootstrap=bootstrap)))
    click.echo(f"created {len(created)} topics" + (": " + ", ".join(created) if created else ""))


@main.command()
@click.argument("name")
@click.option(
    "--ingest-url", default="http://127.0.0.1:8000", show_default=True, help="Ingest's HTTP API."
)
@click.option(
    "--kafka", "kafka_bootstrap", default=None, help="Publish to data.raw on this broker instead."
)
@click.option("--rate", type=float, default=200.0, show_default=True, help="Records per second.")
@click.option(
    "--count",
    type=int,
    default=None,
    help="Stop after this many records (default: run until Ctrl-C).",
)
@click.option("--batch", type=int, default=100, show_default=True, help="Records per request.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--drift",
    type=click.Choice(["none", "covariate", "concept", "both"]),
    default="none",
    show_default=True,
)
@click.option(
    "--drift-at", type=int, default=None, help="Inject the drift after this many records."
)
@click.option(
    "--late-labels", type=float, default=0.0, show_default=True, help="Share of labels sent late."
)
@click.option(
    "--label-delay", type=float, default=10.0, show_default=True, help="Seconds a late label waits."
)
def simulate(
    name: str,
    ingest_url: str,
    kafka_bootstrap: str | None,
    rate: float,
    count: int | None,
    batch: int,
    seed: int,
    drift: str,
    drift_at: int | None,
    late_labels: float,
    label_delay: float,
) -> None:
    """Publish simulated, labelled records of example NAME (e.g. fraud) at a given rate."""
    from .kafka.producer import EventProducer
    from .settings import KafkaSettings
    from .simulate import HttpSink, KafkaSink, Runner, Sink, Totals, simulators

    available = simulators()
    if name not in available:
        raise click.BadParameter(
            f"no simulator '{name}'; installed: {', '.join(available) or 'none'}"
        )
    sim = available[name](seed=seed, drift=drift, drift_at=drift_at, rate_per_s=rate)
    last = [0.0]

    def progress(t: Totals) -> None:
        now = asyncio.get_running_loop().time()
        if now - last[0] >= 1 or (count is not None and t.sent >= count):
            last[0] = now
            drift_note = (
                " [drifting]"
                if drift_at is not None and t.sent >= drift_at and drift != "none"
                else ""
            )
            err.print(
                f"sent {t.sent:>8,}  accepted {t.accepted:>8,}  rejected {t.rejected:>6,}  "
                f"late labels {t.labels_late:>6,}  {t.rate:8.0f} rec/s{drift_note}"
            )

    async def run() -> Totals:
        producer = None
        sink: Sink
        if kafka_bootstrap:
            producer = EventProducer(
                KafkaSettings(bootstrap=kafka_bootstrap), client_id="flywheel-simulator"
            )
            await producer.start()
            sink = KafkaSink(producer)
        else:
            sink = HttpSink(ingest_url)
        try:
            runner = Runner(
                sim,
                sink,
                rate=rate,
                batch=batch,
                late_fraction=late_labels,
                label_delay_s=label_delay,
                seed=seed,
            )
            return await runner.run(count, progress)
        finally:
            if producer:
                await producer.stop()

    target = f"kafka {kafka_bootstrap}" if kafka_bootstrap else ingest_url
    err.print(f"simulating [bold]{name}[/] → {target} at {rate:g} rec/s (Ctrl-C to stop)")
    try:
        totals = asyncio.run(run())
    except KeyboardInterrupt:
        err.print("stopped")
        return
    err.print(
        f"[green]done[/]: {totals.sent:,} sent, {totals.accepted:,} accepted, "
        f"{totals.rejected:,} rejected"
    )
