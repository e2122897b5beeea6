"""``flywheel simulate`` (a ``flywheel.cli`` entry point): simulated, labelled traffic for
development, demos and benchmarks. Not part of any service image."""

from __future__ import annotations

import asyncio

import click
from rich.console import Console

err = Console(stderr=True)


@click.command()
@click.argument("name")
@click.option(
    "--ingest-url", default="http://127.0.0.1:8000", show_default=True, help="Ingest's HTTP API."
)
@click.option(
    "--token",
    envvar="FLYWHEEL_INGEST_TOKEN",
    default=None,
    help="Bearer token, if ingest requires one (env FLYWHEEL_INGEST_TOKEN).",
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
    token: str | None,
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
    from flywheel_shared.kafka.producer import EventProducer
    from flywheel_shared.settings import KafkaSettings

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
            sink = HttpSink(ingest_url, token=token)
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
