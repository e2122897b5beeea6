"""One look at the whole platform, for ``flywheel status``.

:func:`collect` gathers four independent sections, each within its own time budget, so one
part being down never hides the others:

1. ``services``: each service's ``/healthz`` and ``/readyz`` (with the reason it is not
   ready), plus the monitor's ``/v1/status`` page when it answers;
2. ``lag``: for every consumer group with committed offsets on this prefix's topics, the
   committed offsets, the end offsets and their difference, per partition, topic and group;
3. ``models``: the registry's models, their aliases and latest versions;
4. ``events``: the latest drift findings, rollout verdicts, alias moves and trainings, read
   back from the decision topics.

:func:`render` prints a :class:`Status` with rich; :meth:`Status.to_json` is the same for
scripts. :attr:`Status.ok` is True when every service, the registry and Kafka answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from ..aliases import ALIASES
from ..events import (
    DriftDetected,
    ModelAliasChanged,
    RolloutVerdict,
    TrainingCompleted,
    TrainingFailed,
)
from ..registry import RegistryClient, RegistryError, RegistryUnavailable
from ..settings import KafkaSettings
from ..topics import TopicNamer
from . import DEFAULT_URLS, SERVICE_PORTS
from .trace import (
    KafkaReadError,
    Step,
    describe_error,
    kafka_problem,
    primary_metric,
    read_records,
)

SERVICES: tuple[str, ...] = tuple(SERVICE_PORTS)

#: Topics read for the ``events`` section, and the section each one feeds.
EVENT_SECTIONS: dict[str, tuple[str, ...]] = {
    "drift": ("drift.detected",),
    "rollouts": ("rollout.verdict", "model.alias.changed"),
    "trainings": ("training.completed", "training.failed"),
}

log = logging.getLogger(__name__)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


# -- services --------------------------------------------------------------------------------


@dataclass
class ServiceStatus:
    """What one service answered on ``/healthz`` and ``/readyz``."""

    name: str
    url: str
    reachable: bool
    healthy: bool = False
    ready: bool = False
    reason: str | None = None
    """Why it is unreachable, unhealthy or not ready (None when ready)."""
    detail: dict[str, Any] | None = None
    """The monitor's ``/v1/status`` page (``{"error": ...}`` if it failed)."""

    @property
    def state(self) -> str:
        """``ready``, ``not ready``, ``unhealthy`` or ``unreachable``."""
        if not self.reachable:
            return "unreachable"
        if not self.healthy:
            return "unhealthy"
        return "ready" if self.ready else "not ready"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "url": self.url,
            "state": self.state,
            "reachable": self.reachable,
            "healthy": self.healthy,
            "ready": self.ready,
            "reason": self.reason,
            "detail": self.detail,
        }


def readiness_reason(resp: httpx.Response) -> str:
    """A short reason from a failed ``/readyz`` answer (the services' JSON shapes, or text)."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("problems", "checks"):
            problems = body.get(key)
            if isinstance(problems, dict) and problems:
                return "; ".join(f"{k}: {v}" for k, v in problems.items())
        for key in ("detail", "status"):
            if body.get(key):
                return f"HTTP {resp.status_code}: {body[key]}"
    text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else ""
    return f"HTTP {resp.status_code}" + (f": {text}" if text else "")


async def probe_service(
    client: httpx.AsyncClient, name: str, url: str, *, with_detail: bool = False
) -> ServiceStatus:
    """GET ``/healthz`` and ``/readyz`` of one service (and ``/v1/status`` with_detail)."""
    base = url.rstrip("/")
    try:
        health = await client.get(f"{base}/healthz")
    except httpx.HTTPError as exc:
        return ServiceStatus(name, url, reachable=False, reason=describe_error(exc))
    status = ServiceStatus(name, url, reachable=True, healthy=health.status_code == 200)
    try:
        ready = await client.get(f"{base}/readyz")
    except httpx.HTTPError as exc:
        status.reason = f"/readyz did not answer ({describe_error(exc)})"
        return status
    status.ready = status.healthy and ready.status_code == 200
    if not status.healthy:
        status.reason = f"/healthz answered HTTP {health.status_code}"
    elif not status.ready:
        status.reason = readiness_reason(ready)
    if with_detail:
        try:
            page = await client.get(f"{base}/v1/status")
            page.raise_for_status()
            body = page.json()
            status.detail = body if isinstance(body, dict) else {"error": "not a JSON object"}
        except (httpx.HTTPError, ValueError) as exc:
            status.detail = {"error": describe_error(exc)}
    return status


async def probe_services(urls: Mapping[str, str], timeout: float = 3.0) -> list[ServiceStatus]:
    """Probe every service of ``urls`` (name → base URL) concurrently."""
    async with httpx.AsyncClient(timeout=timeout, headers={"user-agent": "flywheel-status"}) as c:
        return list(
            await asyncio.gather(
                *(probe_service(c, n, u, with_detail=n == "monitor") for n, u in urls.items())
            )
        )


# -- consumer lag ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group committed an offset on."""

    topic: str
    """Logical topic name."""
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        """Messages not yet consumed (never negative)."""
        return max(0, self.end - self.committed)


@dataclass
class GroupLag:
    """A consumer group's lag on this prefix's topics."""

    group: str
    partitions: list[PartitionLag]

    @property
    def lag(self) -> int:
        """Total lag over every partition."""
        return sum(p.lag for p in self.partitions)

    @property
    def topics(self) -> dict[str, int]:
        """Lag per logical topic."""
        out: dict[str, int] = {}
        for p in self.partitions:
            out[p.topic] = out.get(p.topic, 0) + p.lag
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "group": self.group,
            "lag": self.lag,
            "topics": self.topics,
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "end": p.end,
                    "lag": p.lag,
                }
                for p in self.partitions
            ],
        }


def group_lag(
    group: str,
    committed: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    namer: TopicNamer,
) -> GroupLag | None:
    """The lag of ``group`` from its committed offsets and the end offsets (full topic names).

    Only this prefix's topics count; partitions without a commit (offset < 0) or without a
    known end offset are left out. None when nothing is left.
    """
    parts = []
    for tp, offset in committed.items():
        if offset < 0 or tp not in ends:
            continue
        try:
            logical = namer.logical(tp.topic)
        except KeyError:
            continue
        parts.append(PartitionLag(logical, tp.partition, offset, ends[tp]))
    if not parts:
        return None
    parts.sort(key=lambda p: (p.topic, p.partition))
    return GroupLag(group, parts)


@dataclass
class LagSection:
    """Consumer lag of every group on this prefix, or why it could not be read."""

    groups: list[GroupLag] = field(default_factory=list)
    error: str | None = None

    @property
    def total(self) -> int:
        """Lag over all groups."""
        return sum(g.lag for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "error": self.error,
            "total": self.total,
            "groups": [g.to_dict() for g in self.groups],
        }


async def collect_lag(kafka: KafkaSettings, timeout: float = 5.0) -> LagSection:
    """List the consumer groups and their lag on ``kafka.topic_prefix``'s topics."""
    namer = TopicNamer(kafka.topic_prefix)
    admin = AIOKafkaAdminClient(
        **kafka.client_kwargs(),
        client_id="flywheel-status",
        request_timeout_ms=max(1000, int(timeout * 1000)),
    )
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(),
        client_id="flywheel-status",
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=max(1000, int(timeout * 1000)),
    )

    async def read() -> list[GroupLag]:
        await admin.start()
        groups = sorted({str(g[0]) for g in await admin.list_consumer_groups()})
        gate = asyncio.Semaphore(16)

        async def offsets(group: str) -> tuple[str, dict[TopicPartition, int]]:
            async with gate:
                found = await admin.list_consumer_group_offsets(group)
            mine = {}
            for tp, meta in found.items():
                try:
                    namer.logical(tp.topic)
                except KeyError:
                    continue
                mine[tp] = meta.offset
            return group, mine

        committed = dict(await asyncio.gather(*(offsets(g) for g in groups)))
        tps = {tp for offs in committed.values() for tp, o in offs.items() if o >= 0}
        if not tps:
            return []
        await consumer.start()
        cluster = await consumer._client.fetch_all_metadata()
        # Offsets of deleted topics can linger; asking their end offsets would hang.
        tps = {tp for tp in tps if tp.partition in (cluster.partitions_for_topic(tp.topic) or ())}
        ends = await consumer.end_offsets(sorted(tps)) if tps else {}
        lags = (group_lag(g, offs, ends, namer) for g, offs in committed.items())
        return [g for g in lags if g is not None]

    try:
        return LagSection(groups=await asyncio.wait_for(read(), timeout))
    except TimeoutError:
        return LagSection(error=f"Kafka at {kafka.bootstrap} did not answer within {timeout:g} s")
    except Exception as exc:
        return LagSection(error=kafka_problem(kafka.bootstrap, exc))
    finally:
        for close in (consumer.stop, admin.close):
            try:
                await asyncio.shield(close())
            except Exception as exc:  # closing after a failure: the section already says why
                log.debug("closing the Kafka clients failed: %s", exc)


# -- models ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionSummary:
    """One version of a model, as the status shows it."""

    version: int
    status: str
    metric: str | None
    value: float | None
    created_at: datetime | None = None
    gate_reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "version": self.version,
            "status": self.status,
            "metric": self.metric,
            "value": self.value,
            "created_at": _iso(self.created_at),
            "gate_reasons": list(self.gate_reasons),
        }


@dataclass(frozen=True)
class AliasSummary:
    """Where an alias points."""

    version: int
    weight: float | None = None


@dataclass
class ModelSummary:
    """A model: its aliases and its latest versions (newest first)."""

    name: str
    primary: str | None = None
    latest_version: int | None = None
    aliases: dict[str, AliasSummary] = field(default_factory=dict)
    versions: list[VersionSummary] = field(default_factory=list)
    awaiting: dict[int, str] = field(default_factory=dict)
    """Version → the alias its rollout step waits to enter, once approved."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "primary_metric": self.primary,
            "latest_version": self.latest_version,
            "aliases": {
                a: {"version": s.version, "weight": s.weight} for a, s in self.aliases.items()
            },
            "versions": [v.to_dict() for v in self.versions],
            "awaiting_approval": [
                {"version": v, "alias": a} for v, a in sorted(self.awaiting.items())
            ],
        }


@dataclass
class ModelsSection:
    """The registry's models, or why it could not be read."""

    url: str
    models: list[ModelSummary] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "url": self.url,
            "error": self.error,
            "models": [m.to_dict() for m in self.models],
        }


async def _pending(client: RegistryClient) -> dict[str, dict[int, str]]:
    """Model → version → the alias it awaits approval for (none from a registry without
    approval gates)."""
    try:
        approvals = await client.approvals()
    except RegistryError as exc:
        if exc.status == 404:
            return {}
        raise
    out: dict[str, dict[int, str]] = {}
    for a in approvals:
        out.setdefault(a.model, {})[a.version] = a.alias
    return out


async def collect_models(
    url: str, token: str | None = None, *, versions: int = 3, timeout: float = 5.0
) -> ModelsSection:
    """Every model of the registry at ``url`` with its aliases and ``versions`` latest versions."""

    async def read(client: RegistryClient) -> list[ModelSummary]:
        infos, pending = await asyncio.gather(client.list_models(), _pending(client))

        async def one(name: str) -> ModelSummary:
            info, rows = await asyncio.gather(client.get_model(name), client.list_versions(name))
            primary = info.spec.metrics.primary if info.spec is not None else None
            latest = sorted(rows, key=lambda v: v.version, reverse=True)[:versions]
            summaries = []
            for v in latest:
                metric = primary_metric(v.metrics, primary)
                summaries.append(
                    VersionSummary(
                        version=v.version,
                        status=v.status,
                        metric=metric[0] if metric else None,
                        value=metric[1] if metric else None,
                        created_at=v.created_at,
                        gate_reasons=tuple(v.gate_reasons),
                    )
                )
            return ModelSummary(
                name=info.name,
                primary=primary,
                latest_version=info.latest_version,
                aliases={
                    a: AliasSummary(s.version, s.weight)
                    for a in ALIASES
                    if (s := info.aliases.get(a)) is not None
                },
                versions=summaries,
                awaiting=pending.get(info.name, {}),
            )

        return list(await asyncio.gather(*(one(m.name) for m in infos)))

    try:
        async with RegistryClient(url, token, timeout=timeout, actor="cli:status") as client:
            return ModelsSection(url, await asyncio.wait_for(read(client), timeout))
    except TimeoutError:
        return ModelsSection(
            url, error=f"the registry at {url} did not answer within {timeout:g} s"
        )
    except RegistryUnavailable as exc:
        if exc.status == 0:
            return ModelsSection(url, error=f"cannot reach the registry at {url}")
        return ModelsSection(url, error=f"registry unavailable ({exc.status} {exc.code})")
    except RegistryError as exc:
        detail = f": {exc.detail}" if exc.detail else ""
        return ModelsSection(url, error=f"registry refused ({exc.status} {exc.code}){detail}")
    except Exception as exc:
        return ModelsSection(url, error=f"cannot read the registry at {url}: {describe_error(exc)}")


# -- recent decisions ------------------------------------------------------------------------


@dataclass
class EventsSection:
    """The latest decisions of the loop (newest first), or why Kafka could not be read."""

    drift: list[Step] = field(default_factory=list)
    rollouts: list[Step] = field(default_factory=list)
    trainings: list[Step] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "error": self.error,
            **{
                name: [s.to_dict() for s in getattr(self, name)]
                for name in ("drift", "rollouts", "trainings")
            },
        }


def latest_steps(steps: Iterable[Step], per_topic: int) -> list[Step]:
    """The ``per_topic`` newest steps of each topic, all newest first."""
    by_topic: dict[str, list[Step]] = {}
    for s in steps:
        by_topic.setdefault(s.topic, []).append(s)
    kept = [
        s
        for group in by_topic.values()
        for s in sorted(group, key=lambda s: s.at, reverse=True)[:per_topic]
    ]
    return sorted(kept, key=lambda s: s.at, reverse=True)


async def collect_events(
    kafka: KafkaSettings, recent: int = 5, timeout: float = 5.0
) -> EventsSection:
    """The ``recent`` newest events of each topic of :data:`EVENT_SECTIONS`."""
    topics = [t for group in EVENT_SECTIONS.values() for t in group]
    try:
        records = await read_records(kafka, topics, tail=recent, timeout=timeout)
    except KafkaReadError as exc:
        return EventsSection(error=str(exc))
    except Exception as exc:
        return EventsSection(error=kafka_problem(kafka.bootstrap, exc))
    steps = []
    for rec in records:
        event = rec.decode()
        if event is not None:
            steps.append(Step.of(event, rec.topic))
    section = EventsSection()
    for name, group in EVENT_SECTIONS.items():
        setattr(section, name, latest_steps((s for s in steps if s.topic in group), recent))
    return section


# -- everything ------------------------------------------------------------------------------


@dataclass
class Status:
    """Everything ``flywheel status`` shows."""

    collected_at: datetime
    bootstrap: str
    topic_prefix: str
    services: list[ServiceStatus]
    lag: LagSection
    models: ModelsSection
    events: EventsSection

    @property
    def problems(self) -> list[str]:
        """What did not answer (empty when everything did)."""
        out = [f"{s.name} unreachable" for s in self.services if not s.reachable]
        if self.models.error:
            out.append("registry API")
        if self.lag.error:
            out.append("Kafka (consumer groups)")
        if self.events.error:
            out.append("Kafka (decision topics)")
        return out

    @property
    def ok(self) -> bool:
        """True when every service, the registry API and Kafka answered."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "problems": self.problems,
            "collected_at": self.collected_at.isoformat(),
            "kafka": {"bootstrap": self.bootstrap, "topic_prefix": self.topic_prefix},
            "services": [s.to_dict() for s in self.services],
            "lag": self.lag.to_dict(),
            "models": self.models.to_dict(),
            "events": self.events.to_dict(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The status as one JSON document."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)


async def collect(
    kafka: KafkaSettings,
    urls: Mapping[str, str] | None = None,
    *,
    registry_token: str | None = None,
    recent: int = 5,
    versions: int = 3,
    timeout: float = 3.0,
) -> Status:
    """Gather every section concurrently; each one is bounded by ``timeout`` seconds.

    ``urls``: service name → base URL (missing ones: :data:`DEFAULT_URLS`). The models come
    from ``urls["registry"]``. Never raises for a part that is down: it shows in its section.
    """
    all_urls = {**DEFAULT_URLS, **(urls or {})}

    async def services() -> list[ServiceStatus]:
        try:
            return await asyncio.wait_for(probe_services(all_urls, timeout), timeout * 2 + 1)
        except TimeoutError:
            return [
                ServiceStatus(n, u, reachable=False, reason="no answer in time")
                for n, u in all_urls.items()
            ]

    svc, lag, models, events = await asyncio.gather(
        services(),
        collect_lag(kafka, timeout),
        collect_models(all_urls["registry"], registry_token, versions=versions, timeout=timeout),
        collect_events(kafka, recent, timeout),
    )
    return Status(
        collected_at=datetime.now(UTC),
        bootstrap=kafka.bootstrap,
        topic_prefix=kafka.topic_prefix,
        services=svc,
        lag=lag,
        models=models,
        events=events,
    )


# -- rendering -------------------------------------------------------------------------------

_STATE_STYLE = {
    "ready": "[green]ready[/]",
    "not ready": "[yellow]not ready[/]",
    "unhealthy": "[red]unhealthy[/]",
    "unreachable": "[red]unreachable[/]",
}


def ago(at: datetime, now: datetime) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    s = max(0.0, (now - at).total_seconds())
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    if s < 86400:
        return f"{s / 3600:.0f}h ago"
    return f"{s / 86400:.0f}d ago"


def _when(at: datetime, now: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} ({ago(at, now)})"


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "-"


def _aliases(m: ModelSummary) -> str:
    parts = []
    for name, state in m.aliases.items():
        weight = f" ({state.weight:.0%})" if state.weight is not None else ""
        parts.append(f"{name}=v{state.version}{weight}")
    text = ", ".join(parts) or "-"
    for version, alias in sorted(m.awaiting.items()):
        text += f"; [yellow]v{version} awaiting approval → {alias}[/]"
    return text


def _monitor_lines(detail: dict[str, Any]) -> list[str]:
    if "error" in detail:
        return [f"monitor /v1/status: [red]{detail['error']}[/]"]
    lines = [
        f"monitor worker {detail.get('worker', '?')}: "
        f"{len(detail.get('assignment') or [])} partitions assigned"
    ]
    for model, st in sorted((detail.get("models") or {}).items()):
        if not isinstance(st, dict):
            continue
        parts = [f"production {_v(st.get('production'))}"]
        for alias, arm in sorted((st.get("rollouts") or {}).items()):
            if isinstance(arm, dict):
                parts.append(
                    f"{alias} {_v(arm.get('version'))} step {arm.get('step')} "
                    f"({arm.get('requests', 0):,} requests)"
                )
        lines.append(f"  {model}: " + ", ".join(parts))
    return lines


def _render_services(console: Console, status: Status) -> None:
    table = Table(title="services", title_justify="left")
    for col in ("service", "url", "state", "detail"):
        table.add_column(col)
    for s in status.services:
        table.add_row(s.name, s.url, _STATE_STYLE[s.state], s.reason or "")
    console.print(table)
    for s in status.services:
        if s.detail is not None:
            for line in _monitor_lines(s.detail):
                console.print(line)


def _render_lag(console: Console, status: Status) -> None:
    title = f"consumer lag (Kafka {status.bootstrap}, prefix {status.topic_prefix!r})"
    if status.lag.error:
        console.print(f"[bold]{title}[/]: [red]{status.lag.error}[/]")
        return
    if not status.lag.groups:
        console.print(f"[bold]{title}[/]: no consumer group has offsets on these topics")
        return
    table = Table(title=title, title_justify="left")
    table.add_column("group")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("lag", justify="right")
    for g in status.lag.groups:
        topics = g.topics
        for i, (topic, lag) in enumerate(sorted(topics.items())):
            n = sum(1 for p in g.partitions if p.topic == topic)
            table.add_row(g.group if i == 0 else "", topic, str(n), f"{lag:,}")
        if len(topics) > 1:
            table.add_row("", "[dim]total[/]", "", f"[bold]{g.lag:,}[/]")
    console.print(table)


def _render_models(console: Console, status: Status) -> None:
    section = status.models
    title = f"models (registry {section.url})"
    if section.error:
        console.print(f"[bold]{title}[/]: [red]{section.error}[/]")
        return
    if not section.models:
        console.print(f"[bold]{title}[/]: no models")
        return
    table = Table(title=title, title_justify="left")
    for col in ("model", "aliases", "version", "status", "metric", "created"):
        table.add_column(col)
    for m in section.models:
        where: dict[int, list[str]] = {}
        for alias, state in m.aliases.items():
            where.setdefault(state.version, []).append(alias)
        if not m.versions:
            table.add_row(m.name, _aliases(m), "-", "", "", "")
        for i, v in enumerate(m.versions):
            status_text = {"candidate": "[green]candidate[/]", "rejected": "[red]rejected[/]"}.get(
                v.status, v.status
            )
            aliased = ", ".join(where.get(v.version, []))
            metric = f"{v.metric} {v.value:.3f}" if v.metric and v.value is not None else "-"
            table.add_row(
                m.name if i == 0 else "",
                _aliases(m) if i == 0 else "",
                f"v{v.version}" + (f" [cyan]({aliased})[/]" if aliased else ""),
                status_text,
                metric,
                f"{v.created_at:%Y-%m-%d %H:%M}" if v.created_at else "",
            )
    console.print(table)


def _render_events(console: Console, status: Status) -> None:
    ev, now = status.events, status.collected_at
    if ev.error:
        console.print(f"[bold]recent decisions[/]: [red]{ev.error}[/]")
        return
    primaries = {m.name: m.primary for m in status.models.models}

    table = Table(title="drift", title_justify="left")
    for col in ("when", "model", "version", "detector", "features"):
        table.add_column(col)
    for s in ev.drift:
        d = s.event
        if isinstance(d, DriftDetected):
            table.add_row(
                _when(s.at, now), d.model, _v(d.version), d.detector, ", ".join(d.features)
            )
    _print_or_none(console, table, ev.drift)

    table = Table(title="rollouts", title_justify="left")
    for col in ("when", "model", "version", "alias", "decision", "by", "reasons"):
        table.add_column(col)
    for s in ev.rollouts:
        e = s.event
        if isinstance(e, RolloutVerdict):
            table.add_row(
                _when(s.at, now),
                e.model,
                _v(e.version),
                e.alias,
                e.decision,
                s.actor,
                "; ".join(e.reasons),
            )
        elif isinstance(e, ModelAliasChanged):
            move = f"{_v(e.previous_version)} → {_v(e.version)}"
            if e.previous_version is None:
                move = f"→ {_v(e.version)}"
            if e.weight is not None:
                move += f" ({e.weight:.0%})"
            table.add_row(
                _when(s.at, now),
                e.model,
                _v(e.version),
                e.alias,
                f"alias {move}",
                s.actor,
                e.reason,
            )
    _print_or_none(console, table, ev.rollouts)

    table = Table(title="trainings", title_justify="left")
    for col in ("when", "model", "version", "result", "metric", "reasons"):
        table.add_column(col)
    for s in ev.trainings:
        e = s.event
        if isinstance(e, TrainingCompleted):
            metric = primary_metric(e.metrics, primaries.get(e.model))
            table.add_row(
                _when(s.at, now),
                e.model,
                _v(e.version),
                "[green]gate passed[/]" if e.passed_gate else "[red]gate failed[/]",
                f"{metric[0]} {metric[1]:.3f}" if metric else "-",
                "; ".join(e.gate_reasons),
            )
        elif isinstance(e, TrainingFailed):
            table.add_row(_when(s.at, now), e.model, "-", "[red]crashed[/]", "-", s.summary)
    _print_or_none(console, table, ev.trainings)


def _print_or_none(console: Console, table: Table, rows: list[Step]) -> None:
    if rows:
        console.print(table)
    else:
        console.print(f"[bold]{table.title}[/]: none")


def render(console: Console, status: Status) -> None:
    """Print ``status`` on one screen: services, lag, models, recent decisions."""
    _render_services(console, status)
    _render_lag(console, status)
    _render_models(console, status)
    _render_events(console, status)
    if status.ok:
        console.print("[green]everything answered[/]")
    else:
        console.print(f"[red]did not answer:[/] {', '.join(status.problems)}")
