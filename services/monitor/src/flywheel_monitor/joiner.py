"""The label join: predictions and late labels meet by (dataset, record id).

Both streams are repartitioned by record id onto the monitor's ``join`` topic (same partition
count, same hash), so a record's prediction and its label always reach the same worker,
whichever arrives first. Whatever arrives first waits in a table entry with a time-to-live;
when the other side arrives the pair is emitted (to the per-model ``signals`` topic) and the
entry remembers which predictions it joined, so a redelivered message joins nothing twice.
A label stays after joining, for predictions of the same record that come later (a shadow
prediction, a retried request).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

# One prediction on the join topic: dataset, record id, model, version, route, score, event
# time (epoch s), prediction id. One label: dataset, record id, label, observed at (epoch s).
PredItem = list[Any]
LabelItem = list[Any]
# One joined pair sent to the model's signals: version, route, score, label, event time, id.
Joined = tuple[int, str, float | None, bool, float, str]


def join_partition(dataset: str, record_id: str, partitions: int) -> int:
    """The join partition of a record (stable across processes and languages: CRC-32)."""
    return zlib.crc32(f"{dataset}\x00{record_id}".encode()) % partitions


def join_key(dataset: str, record_id: str) -> str:
    """The table key of a record."""
    return f"{dataset}\x00{record_id}"


@dataclass
class Entry:
    """What waits in the join table for one record."""

    preds: list[PredItem] = field(default_factory=list)
    label: bool | None = None
    joined: list[str] = field(default_factory=list)
    """Prediction ids already joined (a redelivery joins nothing twice)."""
    touched: float = 0.0
    """Latest event time of either side (time-to-live is counted from it)."""

    def to_bytes(self) -> bytes:
        """Serialise for the table."""
        return orjson.dumps([self.preds, self.label, self.joined, self.touched])

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        """Inverse of :meth:`to_bytes`."""
        preds, label, joined, touched = orjson.loads(data)
        return cls(preds=preds, label=label, joined=joined, touched=touched)


def _as_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return None


def on_prediction(entry: Entry | None, item: PredItem) -> tuple[Entry, list[tuple[str, Joined]]]:
    """A prediction arrives: join it if the label is there, else store it to wait."""
    _ds, _rid, model, version, route, score, at, pid = item
    entry = entry or Entry()
    entry.touched = max(entry.touched, float(at))
    if pid in entry.joined:
        return entry, []
    if entry.label is not None:
        entry.joined.append(pid)
        return entry, [(model, (version, route, score, entry.label, at, pid))]
    if all(p[7] != pid for p in entry.preds):
        entry.preds.append(item)
    return entry, []


def on_label(entry: Entry | None, item: LabelItem) -> tuple[Entry, list[tuple[str, Joined]]]:
    """A label arrives: join every waiting prediction of the record; keep the label."""
    _ds, _rid, raw, observed = item
    label = _as_label(raw)
    entry = entry or Entry()
    if label is None:
        return entry, []
    entry.touched = max(entry.touched, float(observed))
    entry.label = label
    out: list[tuple[str, Joined]] = []
    for p in entry.preds:
        _d, _r, model, version, route, score, at, pid = p
        if pid not in entry.joined:
            entry.joined.append(pid)
            out.append((model, (version, route, score, label, at, pid)))
    entry.preds = []
    return entry, out


def expired(entry: Entry, now: float, ttl_s: float) -> bool:
    """True when neither side was seen for ``ttl_s`` seconds of event time."""
    return now - entry.touched > ttl_s


def group_by_model(pairs: Iterable[tuple[str, Joined]]) -> dict[str, list[Joined]]:
    """Joined pairs grouped by model (one signals message per model)."""
    out: dict[str, list[Joined]] = {}
    for model, joined in pairs:
        out.setdefault(model, []).append(joined)
    return out


@dataclass
class JoinPartition:
    """The join state of one partition, kept in memory and made durable as a log.

    Writing one table entry per record would cost one changelog message per prediction, more
    than the whole rest of the monitor. Instead each input message of the join topic is stored
    once (key = its offset), with the pairs it produced; the per-record index lives in memory
    and is rebuilt after a restart or a rebalance by replaying the stored messages in offset
    order. A redelivered message that is already stored re-sends the pairs it produced the first
    time (the decision maker drops pairs it has seen by partition and offset). Messages are
    forgotten once everything in them is older than the time-to-live.
    """

    partition: int
    entries: dict[str, Entry] = field(default_factory=dict)
    stored: dict[int, float] = field(default_factory=dict)
    """Offsets of the stored messages → their latest event time."""
    watermark: float = 0.0

    def apply(self, body: dict[str, Any]) -> list[tuple[str, Joined]]:
        """Join one message's predictions and labels; the pairs it produced."""
        pairs: list[tuple[str, Joined]] = []
        for item in body.get("p", ()):
            key = join_key(item[0], item[1])
            entry, joined = on_prediction(self.entries.get(key), item)
            self.entries[key] = entry
            pairs.extend(joined)
            self.watermark = max(self.watermark, float(item[6]))
        for item in body.get("l", ()):
            key = join_key(item[0], item[1])
            entry, joined = on_label(self.entries.get(key), item)
            self.entries[key] = entry
            pairs.extend(joined)
            self.watermark = max(self.watermark, float(item[3]))
        return pairs

    def latest(self, body: dict[str, Any]) -> float:
        """The latest event time in a message."""
        times = [float(i[6]) for i in body.get("p", ())] + [float(i[3]) for i in body.get("l", ())]
        return max(times, default=self.watermark)

    def expire(self, ttl_s: float) -> list[int]:
        """Forget what is older than ``ttl_s``; the stored offsets that can be deleted."""
        old = [k for k, e in self.entries.items() if expired(e, self.watermark, ttl_s)]
        for k in old:
            del self.entries[k]
        gone = [o for o, t in self.stored.items() if self.watermark - t > ttl_s]
        for o in gone:
            del self.stored[o]
        return gone

    def waiting(self) -> int:
        """Records with a prediction or a label still waiting for the other side."""
        return sum(1 for e in self.entries.values() if e.preds or e.label is not None)


def stored_key(partition: int, offset: int) -> bytes:
    """Table key of a stored join message (sorts by offset within a partition)."""
    return f"{partition:05d}:{offset:020d}".encode()


def parse_stored_key(key: bytes) -> tuple[int, int]:
    """Inverse of :func:`stored_key`."""
    p, o = bytes(key).decode().split(":")
    return int(p), int(o)
