"""The consumer loop every service uses.

Guarantees (at-least-once, no loss):
- an offset is committed only after the handler's work for that record is durable: the handler
  returned, and (optionally) the owner's ``commit_barrier`` says the records below an offset
  are stored (used by writers that buffer records before sealing them);
- a handler that raises is retried ``max_attempts`` times with exponential backoff, then the
  record goes to the dead-letter topic with the error and its original bytes; a handler that
  raises :class:`Poison` (the record can never be processed) skips the retries;
- a record that cannot be decoded as an event, or is an event of another topic, goes to the
  dead-letter topic at once (:func:`decode` and :func:`dead_letter` are the same rules for
  consumers that do not run this loop: the monitor's agents, serving's alias follower);
- transient infrastructure errors (Kafka or network down) are retried without limit and never
  dead-letter valid data: the partition is rewound and the loop backs off;
- events already processed (same ``event_id``) are skipped;
- ``stop()`` (wired to SIGTERM by the app) finishes the current record, drains and commits.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID, uuid4

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from ..events import DeadLetter, Event, parse_event
from ..logging import correlation
from ..metrics import (
    KAFKA_CONSUMED,
    KAFKA_DEADLETTERED,
    KAFKA_DUPLICATES,
    KAFKA_HANDLER_FAILURES,
    KAFKA_HANDLER_SECONDS,
    KAFKA_LAG,
)
from ..settings import KafkaSettings
from ..topics import TopicNamer
from .producer import EventProducer

log = logging.getLogger(__name__)


class TransientError(Exception):
    """Raise from a handler when a dependency is down: retried forever, never dead-lettered."""


class Poison(Exception):
    """A record that can never be processed: dead-lettered at once with this reason."""


TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    KafkaError,
    OSError,
    asyncio.TimeoutError,
)


LetterRedact = Callable[[bytes, str], tuple[bytes, str]]
"""Takes personal values out of a dead letter's bytes and reason (see ``privacy``)."""

#: Bytes of a dead-lettered value kept in the letter (base64 makes it 4/3 as large): far
#: under the dead-letter topic's 16 MiB max.message.bytes whatever arrived.
DEADLETTER_KEEP_BYTES = 1024 * 1024


def decode(value: bytes, topic: str, topics: TopicNamer) -> Event:
    """The event in a record of ``topic`` (its full name).

    Raises :class:`Poison` saying why when the bytes are not an event of this schema version,
    or are a valid event that belongs on another topic (no handler here expects it).
    """
    try:
        event = parse_event(value)
    except (ValidationError, ValueError) as exc:
        raise Poison(f"undecodable event: {exc}") from exc
    home = topics.for_event(event)
    if home != topic:
        raise Poison(f"wrong event type for {topic}: {event.type} belongs on {home}")  # type: ignore[attr-defined]
    return event


def dead_letter(
    *,
    group: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    error: str,
    attempts: int,
    event_id: UUID | None = None,
    redact: LetterRedact | None = None,
) -> DeadLetter:
    """The letter for a record that could not be processed, with the reason and its bytes.

    ``redact`` (a :class:`~flywheel_shared.privacy.LetterRedactor`) first takes personal
    values out of the bytes and the reason. A value over :data:`DEADLETTER_KEEP_BYTES` keeps
    its head and is named by size and sha256: the letter must fit on the dead-letter topic,
    or publishing it would fail on every retry and hold the partition forever.
    """
    if redact is not None:
        value, error = redact(value, error)
    if len(value) > DEADLETTER_KEEP_BYTES:
        digest = hashlib.sha256(value).hexdigest()
        error = (
            f"{error[:3000]} [value of {len(value)} bytes truncated to its first "
            f"{DEADLETTER_KEEP_BYTES}; sha256 {digest}]"
        )
        value = value[:DEADLETTER_KEEP_BYTES]
    return DeadLetter(
        event_id=event_id or uuid4(),
        consumer_group=group,
        source_topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value).decode(),
        error=error[:4200],
        attempts=attempts,
    )


@dataclass(frozen=True)
class Delivery:
    """Where a record came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None

    @property
    def tp(self) -> TopicPartition:
        """The record's topic-partition."""
        return TopicPartition(self.topic, self.partition)


Handler = Callable[[Event, Delivery], Awaitable[None]]


class ProcessedIds(Protocol):
    """Remembers which event ids were processed (consumer idempotency)."""

    def seen(self, event_id: UUID) -> bool:
        """True if ``event_id`` was processed before."""
        ...

    def mark(self, event_id: UUID) -> None:
        """Record ``event_id`` as processed."""
        ...


class MemoryProcessedIds:
    """Bounded in-memory LRU of processed event ids (durable stores can replace it)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[UUID, None] = OrderedDict()

    def seen(self, event_id: UUID) -> bool:
        """True if ``event_id`` is remembered."""
        return event_id in self._ids

    def mark(self, event_id: UUID) -> None:
        """Remember ``event_id``, forgetting the oldest beyond capacity."""
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


@dataclass
class ConsumerConfig:
    """What a consumer reads and how hard it tries."""

    group_id: str
    topics: Sequence[str]
    """Logical topic names, e.g. ``["data.raw"]``."""
    max_attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_records: int = 500
    poll_timeout_ms: int = 500


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"partitions": [str(tp) for tp in assigned]})


class EventConsumer:
    """Runs ``handler`` on every event of ``config.topics`` with the guarantees above."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: ConsumerConfig,
        handler: Handler,
        producer: EventProducer,
        *,
        processed: ProcessedIds | None = None,
        commit_barrier: Callable[[TopicPartition], int | None] | None = None,
        on_revoked: Callable[[set[TopicPartition]], Awaitable[None]] | None = None,
        on_tick: Callable[[], Awaitable[None]] | None = None,
        drain: Callable[[], Awaitable[None]] | None = None,
        redact: LetterRedact | None = None,
    ) -> None:
        self.settings = settings
        self.redact = redact
        self.config = config
        self.handler = handler
        self.producer = producer
        self.processed = processed or MemoryProcessedIds()
        self.commit_barrier = commit_barrier
        self.on_revoked = on_revoked
        self.on_tick = on_tick
        self.drain = drain
        self.topic_names = [producer.topics(t) for t in config.topics]
        self._namer = TopicNamer(settings.topic_prefix)
        self._consumer: AIOKafkaConsumer | None = None
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group and start the loop in a background task."""
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            **s.client_kwargs(),
            group_id=self.config.group_id,
            client_id=self.config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
            max_partition_fetch_bytes=s.max_request_bytes,
            fetch_max_bytes=s.max_request_bytes * 2,
        )
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()
            self._consumer = None
            raise
        self._consumer.subscribe(self.topic_names, listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.config.group_id}")

    async def stop(self) -> None:
        """Finish the record in hand, commit what is durable, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._consumer is not None:
            try:
                if self.drain is not None:
                    await self.drain()
                await self._commit()
            except Exception:
                log.warning("drain or final commit failed; records will be re-read", exc_info=True)
            await self._consumer.stop()
            self._consumer = None

    def alive(self) -> str | None:
        """Readiness: None while the loop runs, else why not."""
        if self._task is None:
            return "consumer not started"
        if self._task.done():
            return "consumer loop ended"
        return None

    # -- loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        self.running = True
        backoff = self.config.backoff_s
        try:
            while not self._stopping.is_set():
                try:
                    batch = await consumer.getmany(
                        timeout_ms=self.config.poll_timeout_ms,
                        max_records=self.config.max_records,
                    )
                    for tp, records in batch.items():
                        # Everything before the first fetched record is done: a rewind
                        # after a transient error comes back to it, never past it.
                        self._next.setdefault(tp, records[0].offset)
                        for rec in records:
                            if self._stopping.is_set():
                                break
                            delivery = Delivery(rec.topic, rec.partition, rec.offset, rec.key)
                            await self._process(delivery, rec.value or b"")
                            self._next[tp] = rec.offset + 1
                    if self.on_tick is not None:
                        await self.on_tick()
                    await self._commit()
                    self._observe_lag()
                    backoff = self.config.backoff_s
                except TRANSIENT as exc:
                    # Rewind every partition to the first record not fully processed.
                    log.warning(
                        "transient error, retrying", extra={"error": f"{type(exc).__name__}: {exc}"}
                    )
                    self._rewind()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.config.max_backoff_s)
        finally:
            self.running = False

    def _rewind(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            if tp in self._next:
                self._consumer.seek(tp, self._next[tp])

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _process(self, delivery: Delivery, value: bytes) -> None:
        group, topic = self.config.group_id, delivery.topic
        KAFKA_CONSUMED.labels(group, topic).inc()
        try:
            event = decode(value, topic, self._namer)
        except Poison as exc:
            await self._dead_letter(delivery, value, str(exc), attempts=1)
            return
        if self.processed.seen(event.event_id):
            KAFKA_DUPLICATES.labels(group, topic).inc()
            return
        attempt = 0
        with correlation(event.correlation_id):
            while True:
                attempt += 1
                started = time.perf_counter()
                try:
                    await self.handler(event, delivery)
                except TRANSIENT:
                    raise
                except Poison as exc:
                    KAFKA_HANDLER_FAILURES.labels(group, topic).inc()
                    await self._dead_letter(delivery, value, str(exc), attempts=attempt)
                    return
                except Exception as exc:
                    KAFKA_HANDLER_FAILURES.labels(group, topic).inc()
                    if attempt >= self.config.max_attempts:
                        log.error(
                            "handler failed, dead-lettering",
                            extra={"event_id": str(event.event_id), "attempts": attempt},
                            exc_info=True,
                        )
                        await self._dead_letter(
                            delivery, value, f"{type(exc).__name__}: {exc}", attempts=attempt
                        )
                        return
                    await self._sleep(
                        min(self.config.backoff_s * 2 ** (attempt - 1), self.config.max_backoff_s)
                    )
                    continue
                KAFKA_HANDLER_SECONDS.labels(group, topic).observe(time.perf_counter() - started)
                self.processed.mark(event.event_id)
                return

    async def _dead_letter(self, d: Delivery, value: bytes, error: str, *, attempts: int) -> None:
        letter = dead_letter(
            group=self.config.group_id,
            topic=d.topic,
            partition=d.partition,
            offset=d.offset,
            key=d.key,
            value=value,
            error=error,
            attempts=attempts,
            redact=self.redact,
        )
        error = letter.error
        await self.producer.publish(letter)  # a failure here is transient: rewind and retry
        KAFKA_DEADLETTERED.labels(self.config.group_id, d.topic).inc()
        log.warning(
            "record dead-lettered",
            extra={
                "topic": d.topic,
                "partition": d.partition,
                "offset": d.offset,
                "error": error[:300],
            },
        )

    # -- offsets --------------------------------------------------------------------------

    def _durable_offsets(self) -> dict[TopicPartition, int]:
        out = {}
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for tp, nxt in self._next.items():
            if tp not in assigned:
                continue
            barrier = self.commit_barrier(tp) if self.commit_barrier else None
            offset = nxt if barrier is None else min(nxt, barrier)
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    async def _commit(self) -> None:
        if self._consumer is None:
            return
        offsets = self._durable_offsets()
        if not offsets:
            return
        await self._consumer.commit(offsets)
        self._committed.update(offsets)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.on_revoked is not None:
            await self.on_revoked(revoked)
        try:
            await self._commit()
        except Exception:
            log.warning("commit on revoke failed; records will be re-read", exc_info=True)
        for tp in revoked:
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def _observe_lag(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is None:
                continue
            pos = self._next.get(tp, self._committed.get(tp, hw))
            KAFKA_LAG.labels(self.config.group_id, tp.topic, str(tp.partition)).set(
                max(0, hw - pos)
            )
