"""The terminal view of a run: a live dashboard on a terminal, plain lines elsewhere (CI, logs).

Both show the same decisions; the dashboard adds the services' health, events per topic,
versions and aliases, live accuracy and the drift statistic.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from flywheel_shared.events import (
    BatchCommitted,
    DeadLetter,
    DriftDetected,
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    RecordsRejected,
    RetrainRequested,
    RolloutVerdict,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
)

from .record import Quality, RunRecord


def describe(event: Event) -> tuple[str, str] | None:
    """(actor, one line) for a decision event; None for events not worth a line."""
    if isinstance(event, BatchCommitted):
        return "ingest", f"{event.row_count:,} rows committed → dataset {event.total_rows:,} rows"
    if isinstance(event, TrainingStarted):
        return "trainer", f"training started ({event.trigger})"
    if isinstance(event, TrainingCompleted):
        gate = "gate passed" if event.passed_gate else "gate rejected"
        auc = event.metrics.get("roc_auc", float("nan"))
        champ = ""
        if event.champion_metrics and "roc_auc" in event.champion_metrics:
            champ = f" vs champion {event.champion_metrics['roc_auc']:.3f}"
        return (
            "trainer",
            f"v{event.version} trained in {event.duration_s:.1f} s: "
            f"roc_auc {auc:.3f}{champ}, {gate}",
        )
    if isinstance(event, TrainingFailed):
        return "trainer", f"training failed: {event.error.splitlines()[0][:100]}"
    if isinstance(event, ModelVersionRegistered):
        return "registry", f"v{event.version} registered ({event.status})"
    if isinstance(event, ModelAliasChanged):
        weight = f" ({event.weight:.0%})" if event.weight is not None else ""
        target = f"v{event.version}" if event.version is not None else "removed"
        # A verdict's alias move repeats the verdict's reasons: the verdict line has them.
        why = "" if event.actor == "monitor" or not event.reason else f" — {event.reason[:60]}"
        return event.actor or "registry", f"{event.alias} → {target}{weight}{why}"
    if isinstance(event, DriftDetected):
        feats = ", ".join(event.features[:4]) + ("…" if len(event.features) > 4 else "")
        return "monitor", f"drift on v{event.version}: {feats} ({event.detector})"
    if isinstance(event, RetrainRequested):
        return event.requested_by, f"retrain requested: {event.reason}"
    if isinstance(event, RolloutVerdict):
        why = f" — {event.reasons[0]}" if event.reasons and event.decision != "hold" else ""
        return "monitor", f"verdict on v{event.version} ({event.alias}): {event.decision}{why}"
    if isinstance(event, RecordsRejected):
        return "ingest", f"{len(event.rejections)} records rejected"
    if isinstance(event, DeadLetter):
        return "kernel", f"dead letter from {event.source_topic}: {event.error[:80]}"
    return None


_STYLE = {"ingest": "green", "trainer": "cyan", "registry": "magenta", "monitor": "yellow"}


class View:
    """Prints or draws the run; ``event()`` and ``say()`` may be called at any time."""

    def __init__(self, rec: RunRecord, console: Console, *, live: bool | None = None) -> None:
        self.rec, self.console = rec, console
        self.live_mode = console.is_terminal if live is None else live
        self.lines: deque[Text] = deque(maxlen=14)
        self._live: Live | None = None
        self._holds: dict[int, int] = {}

    def __enter__(self) -> View:
        if self.live_mode:
            self._live = Live(
                self.render(),
                console=self.console,
                refresh_per_second=2,
                get_renderable=self.render,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def _line(self, at: float, actor: str, text: str, style: str | None = None) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(at))
        line = Text.assemble(
            (f"{stamp} ", "dim"), (f"{actor:9}", style or _STYLE.get(actor, "white")), " ", text
        )
        self.lines.append(line)
        if self._live is None:
            self.console.print(line)

    def say(self, text: str) -> None:
        """A line of the demo's own."""
        self._line(time.time(), "flywheel", text, "bold")

    def event(self, event: Event) -> None:
        """A decision event arrived."""
        # Data batches: one line per 5,000 rows, not one per segment.
        if isinstance(event, BatchCommitted) and (
            event.total_rows // 5000 == (event.total_rows - event.row_count) // 5000
        ):
            return
        if isinstance(event, RolloutVerdict) and event.decision == "hold":
            self._holds[event.version] = self._holds.get(event.version, 0) + 1
            return  # held verdicts are counted, not listed
        desc = describe(event)
        if desc is not None:
            self._line(event.occurred_at.timestamp(), *desc)

    # -- the dashboard -------------------------------------------------------------------------
    def render(self) -> Layout:
        layout = Layout()
        layout.split_column(
            Layout(self._header(), size=3),
            Layout(name="top", size=12),
            Layout(Panel(Group(*self.lines), title="decisions"), name="timeline"),
        )
        layout["top"].split_row(
            Layout(self._services(), ratio=2),
            Layout(self._topics(), ratio=2),
            Layout(self._models(), ratio=3),
            Layout(self._quality(), ratio=3),
        )
        return layout

    def _header(self) -> Panel:
        rec = self.rec
        elapsed = time.time() - rec.started
        ok = rec.requests - rec.failed
        return Panel(
            Text.assemble(
                ("Flywheel — the closed loop  ", "bold"),
                (f"{elapsed:5.0f} s  ", "dim"),
                (rec.phase, "bold cyan"),
                f"   requests {ok:,} ok, ",
                (f"{rec.failed} failed", "red" if rec.failed else "green"),
            )
        )

    def _services(self) -> Panel:
        t = Table.grid(padding=(0, 1))
        for name, state in (self.rec.health or {}).items():
            t.add_row(name, Text(state, "green" if state == "ready" else "red"))
        return Panel(t, title="services")

    def _topics(self) -> Panel:
        t = Table.grid(padding=(0, 1))
        for topic, n in sorted(self.rec.topic_counts.items()):
            if n:
                t.add_row(topic, f"{n:,}")
        return Panel(t, title="events per topic")

    def _models(self) -> Panel:
        t = Table.grid(padding=(0, 1))
        aliases: dict[str, str] = {}
        for e in self.rec.of(ModelAliasChanged):
            weight = f" {e.weight:.0%}" if e.weight is not None else ""
            aliases[e.alias] = f"v{e.version}{weight}" if e.version is not None else "-"
        for alias in ("production", "canary", "shadow"):
            t.add_row(alias, aliases.get(alias, "-"))
        versions = self.rec.of(ModelVersionRegistered)
        for v in versions[-3:]:
            auc = v.metrics.get("roc_auc")
            t.add_row(f"v{v.version}", f"{v.status}" + (f", roc_auc {auc:.3f}" if auc else ""))
        if self._holds:
            t.add_row("held", ", ".join(f"v{v}: {n}" for v, n in self._holds.items()))
        return Panel(t, title="versions and aliases")

    def _quality(self) -> Panel:
        t = Table("", "roc_auc", "accuracy", box=None, padding=(0, 1))
        now = time.time()
        recent = [s for s in self.rec.served[-3000:] if s.at >= now - 10]
        by_version: dict[int, list[Any]] = {}
        for s in recent:
            by_version.setdefault(s.version, []).append(s)
        for v, rows in sorted(by_version.items()):
            q = Quality.of(rows)
            t.add_row(f"v{v} truth (10 s)", f"{q.roc_auc:.3f}", f"{q.accuracy:.3f}")
        if self.rec.samples:
            last = self.rec.samples[-1]
            for key, value in sorted(last.metrics.items()):
                version, route, metric, kind = key.split("/")
                if route == "production" and metric == "roc_auc":
                    t.add_row(f"{version} {kind}", f"{value:.3f}", "")
            for v, stat in sorted(last.drift.items()):
                thr = f" / {last.threshold:.2f}" if last.threshold is not None else ""
                t.add_row(f"v{v} drift", f"{stat:.2f}{thr}", "")
        return Panel(t, title="live accuracy and drift")
