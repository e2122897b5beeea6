from __future__ import annotations

from typing import Any

import pytest

from flywheel_devkit.simulate import Runner, simulators
from flywheel_shared.events import Label


class Sink:
    """Collects what the runner sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.late: list[Label] = []

    async def records(self, dataset: str, records: list[dict[str, Any]]) -> tuple[int, int]:
        self.sent += records
        return len(records), 0

    async def labels(self, dataset: str, labels: list[Label]) -> None:
        self.late += labels


async def test_runner_sends_count_and_every_held_back_label_later() -> None:
    sim = simulators()["fraud"](seed=1)
    sink = Sink()
    runner = Runner(sim, sink, rate=100_000, batch=50, late_fraction=0.5, label_delay_s=0.05)
    totals = await runner.run(400)
    assert totals.sent == len(sink.sent) == 400
    unlabelled = [r for r in sink.sent if r["is_fraud"] is None]
    assert 120 < len(unlabelled) < 280
    assert sorted(lab.record_id or "" for lab in sink.late) == sorted(
        r["transaction_id"] for r in unlabelled
    )
    assert all(isinstance(lab.label, bool) for lab in sink.late)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://ingest:21", "ingest:8000"])
def test_the_http_sink_takes_only_http_urls(url: str) -> None:
    from flywheel_devkit.simulate import HttpSink

    with pytest.raises(ValueError, match="must be http:// or https://"):
        HttpSink(url)
    assert HttpSink("https://ingest.example:8443/").base_url == "https://ingest.example:8443"
