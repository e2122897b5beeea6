"""The timeline of one loop iteration: every decision event sharing a ``correlation_id``.

A loop iteration starts with a data batch (``data.batch.committed``, from ingest) and carries
its correlation id through the trainer (``training.*``), the registry
(``model.version.registered``, ``model.alias.changed``) and the monitor (``drift.detected``,
``retrain.requested``, ``rollout.verdict``), and on into the trainings, versions and alias
moves those decisions cause. :func:`collect` reads the decision topics (never the bulky data
or prediction topics) from their beginning to the end offsets taken at the start, so it
always terminates, and keeps the events of one correlation id in time order.

Messages whose ``correlation_id`` header names another iteration are skipped without being
decoded; messages without the header (the monitor publishes through faust, which sets none)
are decoded and compared on the event's own field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console
from rich.text import Text

from ..events import (
    BatchCommitted,
    DriftDetected,
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    RetrainRequested,
    RolloutVerdict,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
    parse_event,
)
from ..settings import KafkaSettings
from ..spec import Metrics
from ..topics import TopicNamer

#: The topics a loop iteration's decisions are on, in the loop's causal order (this order
#: breaks ties between events with the same timestamp).
DECISION_TOPICS: tuple[str, ...] = (
    "data.batch.committed",
    "training.started",
    "training.failed",
    "training.completed",
    "model.version.registered",
    "model.alias.changed",
    "drift.detected",
    "retrain.requested",
    "rollout.verdict",
)

#: Which service publishes each decision topic (the default actor of its events).
PUBLISHERS: dict[str, str] = {
    "data.batch.committed": "ingest",
    "training.started": "trainer",
    "training.completed": "trainer",
    "training.failed": "trainer",
    "model.version.registered": "registry",
    "model.alias.changed": "registry",
    "drift.detected": "monitor",
    "retrain.requested": "monitor",
    "rollout.verdict": "monitor",
}

_ORDER = {name: i for i, name in enumerate(DECISION_TOPICS)}
_DEFAULT_PRIMARY = Metrics().primary


class KafkaReadError(RuntimeError):
    """Kafka could not be read: unreachable, or the read did not finish in time."""


def describe_error(exc: BaseException) -> str:
    """``Type: message``, without the type twice (aiokafka's messages start with it)."""
    name, text = type(exc).__name__, str(exc).strip()
    if text.startswith(name):
        text = text[len(name) :].lstrip(": ")
    return f"{name}: {text}" if text else name


def kafka_problem(bootstrap: str, exc: BaseException) -> str:
    """One readable line for a failure to talk to Kafka."""
    if isinstance(exc, KafkaConnectionError | ConnectionError):
        return f"cannot reach Kafka at {bootstrap}"
    return f"cannot read Kafka at {bootstrap}: {describe_error(exc)}"


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRecord:
    """One message of a decision topic, not decoded yet."""

    topic: str
    """Logical topic name, e.g. ``training.started``."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    correlation_id: str | None
    """The ``correlation_id`` header, when the producer set one."""

    def decode(self) -> Event | None:
        """The event, or None when the bytes are not a Flywheel event."""
        try:
            return parse_event(self.value)
        except ValueError:
            return None


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode(errors="replace")
    return None


async def read_records(
    kafka: KafkaSettings,
    topics: Iterable[str] = DECISION_TOPICS,
    *,
    tail: int | None = None,
    timeout: float = 10.0,
) -> list[RawRecord]:
    """Every message of the logical ``topics`` up to the end offsets taken at the start.

    ``tail``: only the last ``tail`` messages of each partition. Topics that do not exist
    are skipped. Raises :class:`KafkaReadError` when Kafka does not answer or the read
    takes longer than ``timeout`` seconds.
    """
    namer = TopicNamer(kafka.topic_prefix)
    wanted = {namer(t): t for t in topics}
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        client_id="flywheel-ops",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=kafka.max_request_bytes,
        fetch_max_bytes=kafka.max_request_bytes * 2,
    )

    async def read() -> list[RawRecord]:
        await consumer.start()
        # The consumer's own metadata only covers assigned topics; ask for everything.
        cluster = await consumer._client.fetch_all_metadata()
        tps = [
            TopicPartition(name, p)
            for name in sorted(wanted)
            for p in sorted(cluster.partitions_for_topic(name) or ())
        ]
        if not tps:
            return []
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        start = {tp: begins[tp] if tail is None else max(begins[tp], ends[tp] - tail) for tp in tps}
        pending = {tp: ends[tp] for tp in tps if start[tp] < ends[tp]}
        if not pending:
            return []
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, start[tp])
        out: list[RawRecord] = []
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                end = ends[tp]
                for rec in records:
                    if rec.offset >= end:  # written after we started: not ours to read
                        continue
                    out.append(
                        RawRecord(
                            topic=wanted[tp.topic],
                            partition=tp.partition,
                            offset=rec.offset,
                            key=rec.key,
                            value=rec.value or b"",
                            correlation_id=_header(rec.headers, "correlation_id"),
                        )
                    )
            for tp in list(pending):
                # The position also moves past transaction markers, which are no records.
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
        return out

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError as exc:
        raise KafkaReadError(
            f"reading Kafka at {kafka.bootstrap} did not finish within {timeout:g} s"
        ) from exc
    except (KafkaError, OSError) as exc:
        raise KafkaReadError(kafka_problem(kafka.bootstrap, exc)) from exc
    finally:
        await asyncio.shield(consumer.stop())


# -- steps -----------------------------------------------------------------------------------


def primary_metric(
    metrics: dict[str, float], primary: str | None = None
) -> tuple[str, float] | None:
    """The metric to show: ``primary`` if present, else the spec default, else the first."""
    for name in (primary, _DEFAULT_PRIMARY):
        if name is not None and name in metrics:
            return name, metrics[name]
    for name, value in metrics.items():
        return name, value
    return None


def actor_of(event: Event, topic: str | None = None) -> str:
    """Who made the decision: the alias change's ``actor``, the retrain's ``requested_by``,
    else the service that publishes the event's topic."""
    if isinstance(event, ModelAliasChanged) and event.actor:
        return event.actor
    if isinstance(event, RetrainRequested) and event.requested_by:
        return event.requested_by
    return PUBLISHERS.get(topic or event.topic, "?")


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "-"


def _short(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summarize(event: Event, primary: str | None = None) -> str:
    """A one-line human summary of a decision event (``primary``: metric to show)."""
    if isinstance(event, BatchCommitted):
        return (
            f"segment {event.segment_id}: {event.row_count:,} rows → dataset {event.dataset} "
            f"{event.total_rows:,} rows"
        )
    if isinstance(event, TrainingStarted):
        return f"training started (trigger {event.trigger})"
    if isinstance(event, TrainingCompleted):
        who = _v(event.version) if event.version is not None else f"run {event.run_id}"
        text = f"{who} trained"
        metric = primary_metric(event.metrics, primary)
        if metric is not None:
            name, value = metric
            text += f": {name} {value:.3f}"
            champion = (event.champion_metrics or {}).get(name)
            if champion is not None:
                text += f" (champion {champion:.3f})"
        if event.passed_gate:
            return text + ", gate passed"
        reasons = "; ".join(event.gate_reasons)
        return text + ", gate failed" + (f": {reasons}" if reasons else "")
    if isinstance(event, TrainingFailed):
        return f"training failed: {_short(event.error)}"
    if isinstance(event, ModelVersionRegistered):
        return f"{_v(event.version)} registered ({event.status})"
    if isinstance(event, ModelAliasChanged):
        if event.version is None:
            text = f"{event.alias} removed (was {_v(event.previous_version)})"
        else:
            text = f"{event.alias} → {_v(event.version)}"
            if event.weight is not None:
                text += f" ({event.weight:.0%})"
        return text + (f": {_short(event.reason)}" if event.reason else "")
    if isinstance(event, DriftDetected):
        return f"drift on {_v(event.version)}: {', '.join(event.features)} ({event.detector})"
    if isinstance(event, RetrainRequested):
        return f"retrain requested: {_short(event.reason)}"
    if isinstance(event, RolloutVerdict):
        text = f"verdict on {_v(event.version)} ({event.alias}): {event.decision}"
        return text + (f" — {'; '.join(event.reasons)}" if event.reasons else "")
    return event.topic


@dataclass(frozen=True)
class Step:
    """One decision of a loop iteration."""

    at: datetime
    actor: str
    topic: str
    """Logical topic name."""
    type: str
    summary: str
    event: Event

    @property
    def model(self) -> str | None:
        """The model the step is about (None for a data batch)."""
        value = getattr(self.event, "model", None)
        return value if isinstance(value, str) else None

    @classmethod
    def of(cls, event: Event, topic: str | None = None, primary: str | None = None) -> Step:
        """The step for ``event`` (read from the logical ``topic``)."""
        return cls(
            at=event.occurred_at,
            actor=actor_of(event, topic),
            topic=topic or event.topic,
            type=str(getattr(event, "type", event.topic)),
            summary=summarize(event, primary),
            event=event,
        )

    def to_dict(self, origin: datetime | None = None) -> dict[str, Any]:
        """JSON-ready form; ``offset_s`` counts from ``origin`` (default: this step)."""
        return {
            "at": self.at.isoformat(),
            "offset_s": round((self.at - (origin or self.at)).total_seconds(), 6),
            "actor": self.actor,
            "topic": self.topic,
            "type": self.type,
            "model": self.model,
            "summary": self.summary,
            "event": self.event.model_dump(mode="json"),
        }


def _order(step: Step) -> tuple[datetime, int]:
    return step.at, _ORDER.get(step.topic, len(_ORDER))


@dataclass
class Trace:
    """The decisions of one loop iteration, oldest first."""

    correlation_id: UUID | None
    steps: list[Step] = field(default_factory=list)
    model: str | None = None
    """The model asked for (``--model``), if any."""

    @property
    def started_at(self) -> datetime | None:
        """When the first step happened."""
        return self.steps[0].at if self.steps else None

    @property
    def duration_s(self) -> float:
        """Seconds from the first step to the last."""
        if not self.steps:
            return 0.0
        return (self.steps[-1].at - self.steps[0].at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        origin = self.started_at
        return {
            "correlation_id": str(self.correlation_id) if self.correlation_id else None,
            "model": self.model,
            "started_at": origin.isoformat() if origin else None,
            "duration_s": round(self.duration_s, 6),
            "steps": [s.to_dict(origin) for s in self.steps],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The trace as one JSON document."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def latest_iteration(records: Iterable[RawRecord], model: str) -> UUID | None:
    """Correlation id of ``model``'s newest ``training.started``, else of its newest event."""
    key = model.encode()
    started: list[tuple[datetime, int, Event]] = []
    other: list[tuple[datetime, int, Event]] = []
    for rec in records:
        if rec.key is not None and rec.key != key:  # events are keyed by their model
            continue
        event = rec.decode()
        if event is None or getattr(event, "model", None) != model:
            continue
        bucket = started if isinstance(event, TrainingStarted) else other
        bucket.append((event.occurred_at, _ORDER.get(rec.topic, 0), event))
    pool = started or other
    if not pool:
        return None
    return max(pool, key=lambda item: item[:2])[2].correlation_id


def build_trace(
    records: Iterable[RawRecord], correlation_id: UUID, model: str | None = None
) -> Trace:
    """The steps of ``correlation_id`` among ``records`` (deduplicated by ``event_id``).

    ``model``: keep only that model's steps (and the data batches, which have no model).
    """
    wanted = str(correlation_id)
    steps: list[Step] = []
    seen: set[UUID] = set()
    for rec in records:
        if rec.correlation_id is not None and rec.correlation_id != wanted:
            continue  # another iteration: not even decoded
        event = rec.decode()
        if event is None or event.correlation_id != correlation_id:
            continue
        if event.event_id in seen:  # at-least-once producers may publish twice
            continue
        if model is not None and getattr(event, "model", model) != model:
            continue
        seen.add(event.event_id)
        steps.append(Step.of(event, rec.topic))
    steps.sort(key=_order)
    return Trace(correlation_id=correlation_id, steps=steps, model=model)


async def collect(
    kafka: KafkaSettings,
    correlation_id: UUID | None = None,
    model: str | None = None,
    last: bool = False,
    timeout: float = 10,
) -> Trace:
    """The trace of ``correlation_id``, or with ``model`` and ``last`` of that model's latest
    iteration (the correlation id of its newest ``training.started``, or of its newest event).

    With ``correlation_id``, ``model`` keeps only that model's steps. An iteration without
    events gives a trace with no steps (``correlation_id`` None when ``last`` found nothing).
    Raises :class:`KafkaReadError` when Kafka cannot be read within ``timeout`` seconds.
    """
    if last:
        if model is None:
            raise ValueError("last=True needs a model")
        if correlation_id is not None:
            raise ValueError("give a correlation id or last=True, not both")
    elif correlation_id is None:
        raise ValueError("give a correlation id, or a model with last=True")
    records = await read_records(kafka, DECISION_TOPICS, timeout=timeout)
    if last:
        assert model is not None
        correlation_id = latest_iteration(records, model)
        if correlation_id is None:
            return Trace(correlation_id=None, steps=[], model=model)
        return build_trace(records, correlation_id)
    assert correlation_id is not None
    return build_trace(records, correlation_id, model)


# -- rendering -------------------------------------------------------------------------------


def clock(at: datetime) -> str:
    """``HH:MM:SS.mmm`` in UTC."""
    return at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


def render(console: Console, trace: Trace) -> None:
    """Print ``trace`` as a timeline table."""
    origin = trace.started_at
    if origin is None:
        console.print(f"correlation id {trace.correlation_id}: no events")
        return
    n = len(trace.steps)
    console.print(
        f"[bold]trace {trace.correlation_id}[/]: {n} step{'s' if n != 1 else ''} over "
        f"{trace.duration_s:,.3f} s, from {origin.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    )
    styles = {"ingest": "green", "trainer": "cyan", "registry": "magenta", "monitor": "yellow"}
    for step in trace.steps:
        # One line a step (a table's columns wrap badly on narrow terminals and in logs).
        console.print(
            Text.assemble(
                (clock(step.at), "dim"),
                f" {'+' + format((step.at - origin).total_seconds(), '.3f'):>10} ",
                (f"{step.actor:9}", styles.get(step.actor, "white")),
                f" {step.summary}",
                (f"  [{step.type}{' ' + step.model if step.model else ''}]", "dim"),
            )
        )
