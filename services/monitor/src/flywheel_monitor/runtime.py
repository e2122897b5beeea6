"""The running monitor: its faust app, the services its agents use and per-worker memory."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import faust

from flywheel_shared.regcache import RegistryCache
from flywheel_shared.topics import TopicNamer

from .brain import BrainState
from .calibrations import Calibrations
from .joiner import JoinPartition
from .settings import MonitorSettings
from .watch import Watcher
from .watch_state import WatchState


@dataclass
class Monitor:
    """The faust app, its tables and agents, and the services they use."""

    settings: MonitorSettings
    app: faust.App
    cache: RegistryCache
    calibrations: Calibrations
    names: TopicNamer
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    started: bool = False
    watchers: dict[str, Watcher] = field(default_factory=dict)
    watch_mem: dict[str, WatchState] = field(default_factory=dict)
    brain_mem: dict[str, BrainState] = field(default_factory=dict)
    joins: dict[int, JoinPartition] = field(default_factory=dict)
    correlations: dict[tuple[str, int], str] = field(default_factory=dict)

    def forget(self) -> None:
        """Drop what this worker holds in memory (the tables are the truth after a rebalance)."""
        self.watch_mem.clear()
        self.brain_mem.clear()
        self.joins.clear()
        for w in self.watchers.values():
            w.forget()
