"""The ``flywheel`` command. Services add sub-commands through the ``flywheel.cli`` entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from uuid import UUID

import click
from rich.console import Console

from . import schemas as schema_mod
from .ops import DEFAULT_URLS

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


# -- operations: status and trace ------------------------------------------------------------


def _kafka_options(fn: Callable[..., None]) -> Callable[..., None]:
    """``--bootstrap`` and ``--topic-prefix``, as every service reads them."""
    fn = click.option(
        "--topic-prefix",
        envvar="FLYWHEEL_KAFKA_TOPIC_PREFIX",
        default="flywheel",
        show_default=True,
        help="Topics are {prefix}.{name}.v{N} (env FLYWHEEL_KAFKA_TOPIC_PREFIX).",
    )(fn)
    return click.option(
        "--bootstrap",
        envvar="FLYWHEEL_KAFKA_BOOTSTRAP",
        default="127.0.0.1:9092",
        show_default=True,
        help="Kafka bootstrap servers (env FLYWHEEL_KAFKA_BOOTSTRAP).",
    )(fn)


def _quiet_kafka_logs() -> None:
    # aiokafka logs every refused connection; the commands report Kafka's state themselves.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _service_url_option(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    env = f"FLYWHEEL_{name.upper()}_URL"
    return click.option(
        f"--{name}-url",
        envvar=env,
        default=DEFAULT_URLS[name],
        show_default=True,
        help=f"The {name} service's base URL (env {env}).",
    )


@main.command("status")
@_service_url_option("ingest")
@_service_url_option("registry")
@_service_url_option("trainer")
@_service_url_option("serving")
@_service_url_option("monitor")
@click.option(
    "--registry-token",
    envvar="FLYWHEEL_REGISTRY_TOKEN",
    default=None,
    help="Bearer token, if the registry requires one on reads (env FLYWHEEL_REGISTRY_TOKEN).",
)
@_kafka_options
@click.option(
    "--recent",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Latest events shown per decision topic (drift, verdicts, alias moves, trainings).",
)
@click.option(
    "--versions",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Latest versions shown per model.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Seconds each part (services, registry, Kafka) may take to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead.")
def status_command(
    ingest_url: str,
    registry_url: str,
    trainer_url: str,
    serving_url: str,
    monitor_url: str,
    registry_token: str | None,
    bootstrap: str,
    topic_prefix: str,
    recent: int,
    versions: int,
    timeout: float,
    as_json: bool,
) -> None:
    """The platform at a glance: services, consumer lag, models, latest decisions.

    Shows each service's health and readiness (and why it is not ready), the lag of every
    consumer group on this prefix's topics, the registry's models with their aliases and
    latest versions, and the latest drift findings, rollout verdicts, alias moves and
    trainings read from Kafka. Each part is shown even when another is down.

    \b
    Exit status:
      0  every service, the registry API and Kafka answered
         (a service that answers "not ready" did answer: see its state)
      1  at least one of them did not answer (listed on the last line, or in
         "problems" with --json)
    """
    from .ops import status as ops_status
    from .settings import KafkaSettings

    _quiet_kafka_logs()
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix)
    urls = {
        "ingest": ingest_url,
        "registry": registry_url,
        "trainer": trainer_url,
        "serving": serving_url,
        "monitor": monitor_url,
    }
    result = asyncio.run(
        ops_status.collect(
            kafka,
            urls,
            registry_token=registry_token,
            recent=recent,
            versions=versions,
            timeout=timeout,
        )
    )
    if as_json:
        click.echo(result.to_json())
    else:
        ops_status.render(Console(), result)
    sys.exit(0 if result.ok else 1)


@main.command("trace")
@click.argument("correlation_id", type=click.UUID, required=False)
@click.option("--model", default=None, help="With --last: whose latest iteration to trace.")
@click.option(
    "--last",
    is_flag=True,
    help="Trace MODEL's latest iteration (the correlation id of its newest training.started).",
)
@_kafka_options
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds the read of the decision topics may take.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def trace_command(
    correlation_id: UUID | None,
    model: str | None,
    last: bool,
    bootstrap: str,
    topic_prefix: str,
    timeout: float,
    as_json: bool,
) -> None:
    """The timeline of one loop iteration: every decision with CORRELATION_ID.

    Reads the decision topics (data.batch.committed, training.*, model.*, drift.detected,
    retrain.requested, rollout.verdict) up to their current end and prints each step:
    time, seconds since the first step, who decided, and what. `--model NAME --last`
    traces NAME's latest iteration instead; `--model NAME` with CORRELATION_ID keeps only
    NAME's steps. Exits 1 when no event has that correlation id or Kafka cannot be read.
    """
    from .ops import trace as ops_trace
    from .settings import KafkaSettings

    if last and correlation_id is not None:
        raise click.UsageError("give CORRELATION_ID or --model NAME --last, not both")
    if last and not model:
        raise click.UsageError("--last needs --model NAME")
    if not last and correlation_id is None:
        raise click.UsageError("give a CORRELATION_ID, or --model NAME --last")
    _quiet_kafka_logs()
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix)
    try:
        result = asyncio.run(
            ops_trace.collect(kafka, correlation_id, model=model, last=last, timeout=timeout)
        )
    except ops_trace.KafkaReadError as exc:
        err.print(f"[red]{exc}[/]")
        sys.exit(1)
    if not result.steps:
        where = f"on the decision topics of prefix {topic_prefix!r} at {bootstrap}"
        if last:
            err.print(f"[red]no events of model {model!r} {where}[/]")
        else:
            err.print(f"[red]no events with correlation id {correlation_id} {where}[/]")
        sys.exit(1)
    if as_json:
        click.echo(result.to_json())
    else:
        ops_trace.render(Console(), result)
