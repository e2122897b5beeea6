"""When to train: the spec's trigger policy, as plain decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flywheel_shared.spec import Training


@dataclass(frozen=True)
class TrainedState:
    """What the model was last trained on (from its latest registered version)."""

    rows: int = 0
    at: datetime | None = None


def enough_new_rows(policy: Training, state: TrainedState, total_rows: int) -> bool:
    """A data batch triggers training once ``min_new_rows`` arrived since the last training."""
    return total_rows - state.rows >= policy.min_new_rows


def stale(policy: Training, state: TrainedState, now: datetime, total_rows: int) -> bool:
    """Past ``max_staleness_s`` with any new rows, train even below ``min_new_rows``."""
    if policy.max_staleness_s is None or total_rows <= state.rows:
        return False
    return state.at is None or (now - state.at).total_seconds() >= policy.max_staleness_s
