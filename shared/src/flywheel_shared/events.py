"""Versioned event contracts for the whole loop.

Every message Flywheel puts on Kafka is one of these classes, serialised as JSON. They are
frozen, refuse unknown fields and are discriminated by ``type``. Additive change = a new
optional field; a breaking change = a new class on a ``.v{N+1}`` topic (see ``topics.py``).
``make schemas`` writes their JSON Schema to ``shared/schemas/``; CI fails if it is stale.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args
from uuid import UUID, uuid4, uuid5

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from .aliases import Alias, VersionStatus

JsonRecord = dict[str, Any]
# Deterministic ids (uuid5) for events derived from other events, so that a re-run after a
# crash produces the same event_id and idempotent consumers drop the duplicate.
FLYWHEEL_NS = UUID("6c1c1a4e-2f55-4d59-9a4f-3c1f2b0e9f11")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def derived_id(*parts: object) -> UUID:
    """A stable UUID for an event derived from ``parts`` (same parts, same id)."""
    return uuid5(FLYWHEEL_NS, "/".join(str(p) for p in parts))


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4, description="unique; consumers dedupe on it")
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    correlation_id: UUID = Field(
        default_factory=uuid4,
        description="follows one loop iteration: data batch → model → rollout",
    )
    schema_version: Literal[1] = Field(
        1, description="the wire format's version; another one is refused (dead-lettered)"
    )

    #: Name of the logical topic (``topics.TOPICS``) this event goes to.
    topic: ClassVar[str]

    def key(self) -> str:
        """Partition key: the dataset or model the event is about."""
        for attr in ("model", "dataset"):
            value = getattr(self, attr, None)
            if isinstance(value, str):
                return value
        return str(self.event_id)


# --- data -----------------------------------------------------------------------------------


class RawRecords(Event):
    """Records published straight to Kafka by a producer, before validation."""

    topic: ClassVar[str] = "data.raw"
    type: Literal["data.raw"] = "data.raw"
    dataset: str
    records: list[JsonRecord] = Field(min_length=1)
    source: str | None = Field(None, description="who sent it (producer name)")


class RecordsValidated(Event):
    """Records that passed their dataset contract (normalised), ready to be stored."""

    topic: ClassVar[str] = "data.validated"
    type: Literal["data.validated"] = "data.validated"
    dataset: str
    records: list[JsonRecord]
    source: str | None = None

    @classmethod
    def trusted(
        cls,
        *,
        event_id: UUID,
        occurred_at: datetime,
        correlation_id: UUID,
        dataset: str,
        records: list[JsonRecord],
        source: str | None,
    ) -> RecordsValidated:
        """The event built without validation, every field set in wire order: for records a
        contract already normalised (ingest) or bytes already checked to be canonical
        (:func:`parse_event`), where pydantic would only repeat the work."""
        return cls.model_construct(
            event_id=event_id,
            occurred_at=occurred_at,
            correlation_id=correlation_id,
            schema_version=1,
            type="data.validated",
            dataset=dataset,
            records=records,
            source=source,
        )


class FieldError(BaseModel):
    """Why one field of one record was refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    field: str
    reason: str


class Rejection(BaseModel):
    """One refused record: its index in the request or event, the record, the errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    index: int
    errors: list[FieldError]
    record: Any = None


class RecordsRejected(Event):
    """Records that failed their dataset contract, with the reasons (the data DLQ)."""

    topic: ClassVar[str] = "data.rejected"
    type: Literal["data.rejected"] = "data.rejected"
    dataset: str
    rejections: list[Rejection]
    source: str | None = None


class NumericStats(BaseModel):
    """Summary of a numeric field in one segment."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    count: int
    nulls: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None


class CategoricalStats(BaseModel):
    """Summary of a categorical (or bool/string) field in one segment."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    count: int
    nulls: int
    counts: dict[str, int] = Field(default_factory=dict)


class BatchCommitted(Event):
    """A new Parquet segment is durable and listed in the dataset manifest: new data."""

    topic: ClassVar[str] = "data.batch.committed"
    type: Literal["data.batch.committed"] = "data.batch.committed"
    dataset: str
    segment_id: str
    segment_uri: str
    row_count: int
    content_hash: str = Field(description="sha256 of the segment file")
    snapshot_id: str = Field(description="sha256 of the ordered list of segment hashes")
    total_rows: int = Field(description="rows in the dataset at this snapshot")
    segment_count: int
    min_event_time: AwareDatetime | None = None
    max_event_time: AwareDatetime | None = None
    stats: dict[str, NumericStats | CategoricalStats] = Field(default_factory=dict)


class BatchFinding(BaseModel):
    """One check a batch failed against its baseline."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    check: str = Field(description="null_rate, range, categories, volume or duplicate_ids")
    field: str | None = None
    observed: float
    limit: float
    detail: str


class BatchQuarantined(Event):
    """A sealed segment failed its checks: stored and listed, but out of training snapshots
    until a person releases it (then ``data.batch.committed`` follows)."""

    topic: ClassVar[str] = "data.batch.quarantined"
    type: Literal["data.batch.quarantined"] = "data.batch.quarantined"
    dataset: str
    segment_id: str
    segment_uri: str
    row_count: int
    content_hash: str
    findings: list[BatchFinding] = Field(min_length=1)
    baseline_snapshot_id: str | None = Field(
        None, description="the snapshot compared with (the production model's)"
    )
    stats: dict[str, NumericStats | CategoricalStats] = Field(default_factory=dict)


class DataAudit(Event):
    """A person changed what training may use: released a quarantined batch, erased records."""

    topic: ClassVar[str] = "data.audit"
    type: Literal["data.audit"] = "data.audit"
    dataset: str
    action: Literal["release", "erase"]
    target: str = Field(description="the segment released, or the segments rewritten")
    count: int = Field(0, description="records affected (never their ids in clear)")
    reason: str
    actor: str
    token: str | None = Field(
        None, description="the name of the bearer token that asked (never its value)"
    )


class Label(BaseModel):
    """Ground truth for one record or prediction, arriving late."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    record_id: str | None = None
    prediction_id: str | None = None
    label: Any
    observed_at: AwareDatetime | None = None


class LabelsReceived(Event):
    """Late ground truth, joined by the monitor to predictions."""

    topic: ClassVar[str] = "data.labels"
    type: Literal["data.labels"] = "data.labels"
    dataset: str
    labels: list[Label] = Field(min_length=1)


# --- training -------------------------------------------------------------------------------


class TrainingStarted(Event):
    """A training run began."""

    topic: ClassVar[str] = "training.started"
    type: Literal["training.started"] = "training.started"
    model: str
    run_id: str
    trigger: Literal["new_data", "retrain", "staleness", "manual"]
    snapshot_id: str | None = None


class TrainingCompleted(Event):
    """A training run finished and was gated (passed or not)."""

    topic: ClassVar[str] = "training.completed"
    type: Literal["training.completed"] = "training.completed"
    model: str
    run_id: str
    version: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    champion_metrics: dict[str, float] | None = None
    passed_gate: bool
    gate_reasons: list[str] = Field(default_factory=list)
    duration_s: float


class TrainingFailed(Event):
    """A training run crashed or timed out."""

    topic: ClassVar[str] = "training.failed"
    type: Literal["training.failed"] = "training.failed"
    model: str
    run_id: str
    error: str


# --- registry -------------------------------------------------------------------------------


class ModelVersionRegistered(Event):
    """A new model version exists in the registry."""

    topic: ClassVar[str] = "model.version.registered"
    type: Literal["model.version.registered"] = "model.version.registered"
    model: str
    version: int
    status: VersionStatus
    artifact_uri: str
    artifact_sha256: str
    snapshot_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class ModelAliasChanged(Event):
    """An alias (production, canary, shadow) moved; serving follows it."""

    topic: ClassVar[str] = "model.alias.changed"
    type: Literal["model.alias.changed"] = "model.alias.changed"
    model: str
    alias: Alias
    version: int | None = Field(description="None = alias removed")
    previous_version: int | None = None
    weight: float | None = Field(None, ge=0, le=1, description="canary traffic share")
    reason: str = ""
    actor: str = ""


# --- serving & monitor ----------------------------------------------------------------------


class Prediction(BaseModel):
    """One answered prediction."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    prediction_id: str
    request_id: str
    record_id: str | None = Field(None, description="the record's id field, for the label join")
    version: int
    route: Alias
    features: JsonRecord
    output: Any
    latency_ms: float
    at: AwareDatetime


class PredictionsLogged(Event):
    """A batch of predictions made by one model (the monitor's input)."""

    topic: ClassVar[str] = "predictions"
    type: Literal["predictions"] = "predictions"
    model: str
    predictions: list[Prediction] = Field(min_length=1)


class DriftDetected(Event):
    """The monitor found the live input distribution drifting from the reference."""

    topic: ClassVar[str] = "drift.detected"
    type: Literal["drift.detected"] = "drift.detected"
    model: str
    version: int
    detector: str
    features: list[str]
    statistics: dict[str, float] = Field(default_factory=dict)
    p_values: dict[str, float] = Field(default_factory=dict)
    threshold: float
    window: int


class RetrainRequested(Event):
    """Ask the trainer to train a model now (drift, decay, or a person)."""

    topic: ClassVar[str] = "retrain.requested"
    type: Literal["retrain.requested"] = "retrain.requested"
    model: str
    reason: str
    requested_by: str = "monitor"
    cause_event_id: UUID | None = None


class RolloutVerdict(Event):
    """The monitor's judgement of a shadow/canary version; the registry applies it."""

    topic: ClassVar[str] = "rollout.verdict"
    type: Literal["rollout.verdict"] = "rollout.verdict"
    model: str
    version: int
    alias: Literal["shadow", "canary"]
    decision: Literal["advance", "promote", "rollback", "hold"]
    reasons: list[str] = Field(default_factory=list)
    evidence: dict[str, float] = Field(default_factory=dict)


# --- kernel ---------------------------------------------------------------------------------


class DeadLetter(Event):
    """A message a consumer could not process, with the error and the original bytes."""

    topic: ClassVar[str] = "deadletter"
    type: Literal["deadletter"] = "deadletter"
    consumer_group: str
    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str
    error: str
    attempts: int


AnyEvent = Annotated[
    RawRecords
    | RecordsValidated
    | RecordsRejected
    | BatchCommitted
    | BatchQuarantined
    | DataAudit
    | LabelsReceived
    | TrainingStarted
    | TrainingCompleted
    | TrainingFailed
    | ModelVersionRegistered
    | ModelAliasChanged
    | PredictionsLogged
    | DriftDetected
    | RetrainRequested
    | RolloutVerdict
    | DeadLetter,
    Field(discriminator="type"),
]

EVENT_CLASSES: tuple[type[Event], ...] = get_args(get_args(AnyEvent)[0])

_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


# What encode_event writes for a RecordsValidated: every field, in this order.
_VALIDATED_KEYS = (
    "event_id",
    "occurred_at",
    "correlation_id",
    "schema_version",
    "type",
    "dataset",
    "records",
    "source",
)
_VALIDATED_HINT = b'"type":"data.validated"'
_VALIDATED_HINT_STR = _VALIDATED_HINT.decode()
# RFC 3339 as encode_event writes it (orjson: microseconds or none, "Z" or an offset).
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z")


def _uuid(value: object) -> UUID | None:
    if type(value) is not str or len(value) != 36:
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _fast_validated(data: bytes | str) -> RecordsValidated | None:
    """A ``data.validated`` event exactly as ``encode_event`` writes it, decoded without
    pydantic (its records are hundreds of plain objects, each re-validated by pydantic for
    nothing: ``dict[str, Any]`` accepts any JSON object). Anything else -- another shape, a
    value that is not in canonical form, invalid JSON -- returns None for the full path,
    which gives the same event or the same error."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or tuple(obj) != _VALIDATED_KEYS:
        return None
    eid, cid, at = _uuid(obj["event_id"]), _uuid(obj["correlation_id"]), obj["occurred_at"]
    records, dataset, source = obj["records"], obj["dataset"], obj["source"]
    if (
        eid is None
        or cid is None
        or type(at) is not str
        or not _RFC3339.match(at)
        or type(obj["schema_version"]) is not int
        or obj["schema_version"] != 1
        or obj["type"] != "data.validated"
        or type(dataset) is not str
        or not (source is None or type(source) is str)
        or type(records) is not list
    ):
        return None
    for record in records:
        if type(record) is not dict:
            return None
    try:
        occurred_at = datetime.fromisoformat(at)
    except ValueError:
        return None
    return RecordsValidated.trusted(
        event_id=eid,
        occurred_at=occurred_at,
        correlation_id=cid,
        dataset=dataset,
        records=records,
        source=source,
    )


class _EncodedMemo:
    """The ``data.validated`` events this process encoded, by event id, with their bytes
    (off unless :func:`remember_encoded` turned it on; bounded, oldest dropped first).

    A process that consumes what it publishes (ingest with its dataset writer) gets the very
    event it encoded back when the bytes it reads are exactly the bytes it wrote, instead of
    parsing hundreds of records again. The bytes are compared in full, so the event returned
    is the one those bytes encode."""

    def __init__(self) -> None:
        self.capacity = 0
        self._events: OrderedDict[str, tuple[bytes, Event]] = OrderedDict()

    def put(self, data: bytes, event: Event) -> None:
        self._events[str(event.event_id)] = (data, event)
        while len(self._events) > self.capacity:
            self._events.popitem(last=False)

    def take(self, data: bytes) -> Event | None:
        # encode_event writes {"event_id":"<36 characters>",...
        hit = self._events.get(data[13:49].decode("ascii", "replace"))
        if hit is None or hit[0] != data:
            return None
        del self._events[str(hit[1].event_id)]  # consumed: one consumer per process
        return hit[1]


_MEMO = _EncodedMemo()


def remember_encoded(capacity: int) -> None:
    """Keep the last ``capacity`` ``data.validated`` events this process encodes, so that
    :func:`parse_event` returns them for the same bytes without decoding (0: off)."""
    _MEMO.capacity = capacity
    while len(_MEMO._events) > capacity:
        _MEMO._events.popitem(last=False)


def parse_event(data: bytes | str) -> Event:
    """Decode one event from JSON; raises ``pydantic.ValidationError`` on anything else."""
    head = data[:256]
    if _MEMO.capacity and isinstance(data, bytes) and _VALIDATED_HINT in head:
        mine = _MEMO.take(data)
        if mine is not None:
            return mine
    if (_VALIDATED_HINT in head) if isinstance(head, bytes) else (_VALIDATED_HINT_STR in head):
        fast = _fast_validated(data)
        if fast is not None:
            return fast
    event: Event = _ADAPTER.validate_json(data)
    return event


def _plain(obj: object) -> object:
    if isinstance(obj, BaseModel):
        return obj.__dict__
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def encode_event(event: Event) -> bytes:
    """Serialise an event to JSON bytes (the wire format).

    orjson over the field values: the same JSON pydantic writes (UTC as ``Z``, NaN as null)
    at a third of the cost, which matters for events carrying hundreds of records.
    """
    data = orjson.dumps(event.__dict__, default=_plain, option=orjson.OPT_UTC_Z)
    if _MEMO.capacity and type(event) is RecordsValidated:
        _MEMO.put(data, event)
    return data
