"""Training sets from a dataset snapshot: window, labelled rows, time-ordered holdout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from flywheel_shared.datasets import SegmentEntry
from flywheel_shared.spec import ModelSpec, Window


@dataclass(frozen=True)
class Split:
    """Train and holdout frames (features + label), and how they were cut."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    info: dict[str, object]


def training_split(
    spec: ModelSpec,
    frame: pd.DataFrame,
    window: Window | None = None,
    holdout_fraction: float | None = None,
) -> Split:
    """Apply the window, keep labelled rows, hold out the newest rows by event time.

    ``window`` and ``holdout_fraction`` default to the spec's (``reproduce`` passes the ones a
    version was trained with).
    """
    ds = spec.dataset
    label, time_col = ds.label_field, ds.time_field
    assert label is not None
    # A stable sort on (time, id) makes the split deterministic for equal timestamps.
    frame = frame.sort_values([time_col, ds.id_field], kind="mergesort").reset_index(drop=True)
    window = window or spec.training.window
    fraction = holdout_fraction or spec.training.holdout_fraction
    if window.kind == "last_rows" and window.value:
        frame = frame.tail(int(window.value))
    elif window.kind == "last_seconds" and window.value and len(frame):
        cutoff = frame[time_col].max() - pd.Timedelta(seconds=float(window.value))
        frame = frame[frame[time_col] > cutoff]
    labelled = frame[frame[label].notna()]
    n_hold = max(1, round(len(labelled) * fraction))
    if len(labelled) - n_hold < 2:
        raise ValueError(f"only {len(labelled)} labelled rows in the window; too few to train")
    cols = [*spec.features, label]
    train = labelled.iloc[:-n_hold][cols].reset_index(drop=True)
    holdout = labelled.iloc[-n_hold:][[*cols, ds.id_field, time_col]].reset_index(drop=True)
    train[label] = train[label].astype(int)
    holdout[label] = holdout[label].astype(int)
    info: dict[str, object] = {
        "window": window.model_dump(),
        "rows_in_window": len(frame),
        "labelled_rows": len(labelled),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "holdout_from": str(holdout[time_col].min()),
        "holdout_to": str(holdout[time_col].max()),
    }
    return Split(train, holdout, info)


def window_segments(segments: Sequence[SegmentEntry], window: Window) -> list[SegmentEntry]:
    """The segments that can hold rows of a ``last_rows`` window; all segments otherwise.

    Reading only these gives the same window as reading the whole snapshot: take the newest
    segments (by their latest event time) until they hold ``value`` rows; the window's oldest
    row is no older than the oldest row among them (``cutoff``), so any other segment whose
    latest row is at or after ``cutoff`` may hold window rows too and is kept.
    """
    if window.kind != "last_rows" or not window.value:
        return list(segments)
    if any(s.min_event_time is None or s.max_event_time is None for s in segments):
        return list(segments)
    newest = sorted(segments, key=lambda s: s.max_event_time, reverse=True)
    rows, taken = 0, []
    for seg in newest:
        taken.append(seg)
        rows += seg.rows
        if rows >= window.value:
            break
    else:
        return list(segments)
    cutoff = min(s.min_event_time for s in taken)
    return [s for s in segments if s.max_event_time >= cutoff]
