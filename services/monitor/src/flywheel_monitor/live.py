"""Live metric windows, shared by the estimates (scores only) and the realised metrics (labels)."""

from __future__ import annotations

import math
from typing import Any, Literal

from flywheel_shared.spec import Monitoring

from .buckets import Buckets
from .domain.episodes import Finding
from .metrics import LIVE_COUNT, LIVE_METRIC

Kind = Literal["estimated", "realised"]


def bucket_of(ts: float, width: float) -> int:
    """Index of the event-time bucket holding ``ts``."""
    return int(ts // width)


def buckets_to_close(
    buckets: Buckets[Any], closed: int | None, closable: int
) -> tuple[int, list[int]]:
    """The last bucket closed so far and the buckets to close now, in order.

    Only buckets holding data are closed, then the last closable one: a window that ends on an
    empty bucket says nothing new, and event time may jump far ahead. The first bucket seen may
    be partial; it still counts.
    """
    if closed is None:
        first = buckets.first()
        closed = (first - 1) if first is not None else closable
    ends = {b for _, bs in buckets.arms() for b in bs if closed < b <= closable}
    if closable > closed:
        ends.add(closable)
    return closed, sorted(ends)


def report_window(
    model: str, arm: str, kind: Kind, count: int, values: dict[str, float | None]
) -> tuple[int, str]:
    """Export one window's metrics; the version and route of ``arm``."""
    version, route = arm.split("/")
    LIVE_COUNT.labels(model, version, route, kind).set(count)
    for metric, value in values.items():
        if value is not None and math.isfinite(value):
            LIVE_METRIC.labels(model, version, route, metric, kind).set(value)
    return int(version), route


def floor_findings(
    mon: Monitoring,
    kind: Kind,
    bucket: int,
    version: int,
    values: dict[str, float | None],
    correlation_id: str | None,
) -> list[Finding]:
    """One finding per metric floor of the spec, for the window ending at ``bucket``."""
    out = []
    for metric, floor in mon.min_metric.items():
        value = values.get(metric)
        if value is None or not math.isfinite(value):
            continue
        out.append(
            Finding(
                kind="metric",
                source=f"{kind}:{metric}",
                window_id=bucket,
                alarm=value < floor,
                value=float(value),
                threshold=float(floor),
                at=(bucket + 1) * mon.bucket_s,
                version=version,
                correlation_id=correlation_id,
                higher_is_worse=False,
                # Clear only clearly above the floor (hysteresis): 0.7 clears above 0.76.
                clear_threshold=1.0 - 0.8 * (1.0 - float(floor)),
            )
        )
    return out
