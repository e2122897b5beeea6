"""Event-time buckets: bucket arithmetic, closing by watermark, bounds, round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from flywheel_monitor.domain.metrics import ScoreStats
from flywheel_monitor.domain.windows import BucketSeries, bucket_of, epoch_seconds


def _series(width: float = 60.0, keep: int = 5, lateness: float = 30.0) -> BucketSeries[ScoreStats]:
    return BucketSeries(width_s=width, keep=keep, lateness_s=lateness, factory=ScoreStats)


def _feed(series: BucketSeries[ScoreStats], ts: float, score: float = 0.3) -> bool:
    stats = series.observe(ts)
    if stats is None:
        return False
    stats.add([score])
    return True


def _json(data: dict) -> dict:
    return json.loads(json.dumps(data, allow_nan=False))


def test_bucket_of_floats_and_aware_datetimes_agree() -> None:
    assert bucket_of(0.0, 60) == 0
    assert bucket_of(59.999, 60) == 0
    assert bucket_of(60.0, 60) == 1
    assert bucket_of(-0.5, 60) == -1
    at = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert bucket_of(at, 60) == bucket_of(at.timestamp(), 60)
    paris = at.astimezone(timezone(timedelta(hours=1)))
    assert bucket_of(paris, 60) == bucket_of(at, 60)


def test_bucket_of_refuses_naive_datetimes_and_bad_widths() -> None:
    with pytest.raises(ValueError, match="naive"):
        bucket_of(datetime(2025, 1, 1), 60)
    with pytest.raises(ValueError, match="positive"):
        bucket_of(10.0, 0)
    with pytest.raises(ValueError, match="finite"):
        epoch_seconds(float("nan"))


def test_buckets_close_when_the_watermark_passes_their_end() -> None:
    series = _series(width=60, lateness=30)
    assert series.watermark() is None
    _feed(series, 10)
    _feed(series, 85)  # watermark 55 < 60: bucket 0 still open
    assert series.watermark() == 55
    assert not series.is_closed(0)
    assert series.take_closed() == []
    assert _feed(series, 50)  # late but within the allowed lateness: accepted
    _feed(series, 90)  # watermark 60: bucket 0 closes
    assert series.is_closed(0)
    assert not series.is_closed(1)
    assert series.take_closed() == [0]
    assert series.take_closed() == []  # reported once
    assert series.window(0).count == 2
    assert series.window(1).count == 2

    assert not _feed(series, 30)  # bucket 0 is closed: dropped, counted as late
    assert series.late == 1
    assert series.window(0).count == 2  # a reported bucket never changes


def test_event_time_only_an_old_event_does_not_move_the_watermark_back() -> None:
    series = _series(lateness=0)
    _feed(series, 200)
    _feed(series, 130)  # bucket 2 ends at 180, behind the watermark (200): late
    assert series.late == 1
    assert series.max_event_time == 200
    assert series.closed() == []  # bucket 3 (the only one with data) ends at 240


def test_sliding_window_merges_the_last_n_buckets() -> None:
    series = _series(keep=10, lateness=0)
    for b in range(6):
        for _ in range(b + 1):
            _feed(series, b * 60 + 1)
    _feed(series, 6 * 60 + 1)
    assert series.take_closed() == [0, 1, 2, 3, 4, 5]
    assert series.window(5, 3).count == 4 + 5 + 6
    assert series.window(5, 1).count == 6
    assert series.window(1, 5).count == 1 + 2  # buckets before 0 hold nothing
    with pytest.raises(ValueError):
        series.window(5, 0)


def test_series_stays_bounded() -> None:
    series = _series(keep=5, lateness=30)
    for i in range(500):
        _feed(series, i * 20.0)
        series.take_closed()
        assert len(series.buckets) <= 5
    untaken = _series(keep=5, lateness=30)
    for i in range(500):
        _feed(untaken, i * 20.0)
        assert len(untaken.buckets) <= 10  # nobody takes them: still bounded


def test_a_jump_in_event_time_does_not_lose_unreported_buckets() -> None:
    series = _series(keep=3, lateness=0)
    for b in range(3):
        _feed(series, b * 60 + 5)
    _feed(series, 100 * 60 + 5)  # everything before is closed and beyond ``keep`` at once
    assert series.take_closed() == [0, 1, 2]
    assert sorted(series.buckets) == [100]


def test_keep_must_cover_the_allowed_lateness() -> None:
    with pytest.raises(ValueError, match="keep at least 3"):
        _series(width=60, keep=2, lateness=90)


def test_series_round_trips_and_is_deterministic() -> None:
    a, b = _series(), _series()
    events = [5, 70, 65, 130, 20, 400, 410, 399, 1000, 3]
    for ts in events:
        _feed(a, ts, score=(ts % 97) / 97)
        _feed(b, ts, score=(ts % 97) / 97)
    a.take_closed()
    b.take_closed()
    assert a.to_dict() == b.to_dict()
    data = _json(a.to_dict())
    back = BucketSeries.from_dict(data, factory=ScoreStats, decode=ScoreStats.from_dict)
    assert back == a
    assert back.to_dict() == a.to_dict()
    # and it carries on exactly like the original
    _feed(a, 1100)
    _feed(back, 1100)
    assert a.take_closed() == back.take_closed()
    assert a.to_dict() == back.to_dict()
