"""Record validation against a dataset contract: one code path for every service's input
(ingest's HTTP and Kafka records and labels, serving's prediction requests, the monitor's
predictions and labels).

The contract is compiled once into a list of per-field checks, so validating a record is a
tight loop of plain comparisons (this runs at tens of thousands of records a second).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flywheel_shared.events import FieldError, JsonRecord, Label, Rejection
from flywheel_shared.privacy import WITHHELD, redact
from flywheel_shared.spec import DatasetContract, FieldSpec, FieldType, UnknownFieldPolicy

# A check returns (normalised value, None) or (None, reason).
Check = Callable[[Any], tuple[Any, str | None]]

#: Short reason codes, used as the metric label.
REASONS = ("missing", "null", "type", "range", "category", "length", "unknown_field", "not_object")


def _shown(spec: FieldSpec) -> Callable[[Any], str]:
    """How a message quotes a value: as it is, or ``<withheld>`` for a personal field."""
    if spec.personal:
        return lambda _v: WITHHELD
    return str


def _numeric(spec: FieldSpec, integral: bool) -> Check:
    lo, hi = spec.min, spec.max
    kind = "an integer" if integral else "a number"
    show = _shown(spec)

    def check(v: Any) -> tuple[Any, str | None]:
        t = type(v)
        if t is bool or not (t is int or (t is float and not integral)):
            if integral and t is float and v.is_integer():
                v = int(v)
            else:
                return None, f"type: expected {kind}, got {_tname(v)}"
        if t is float and not math.isfinite(v):
            return None, "range: NaN and infinity are not accepted"
        if lo is not None and v < lo:
            return None, f"range: {show(v)} is below the minimum {lo:g}"
        if hi is not None and v > hi:
            return None, f"range: {show(v)} is above the maximum {hi:g}"
        return v, None

    return check


def _boolean(_: FieldSpec) -> Check:
    def check(v: Any) -> tuple[Any, str | None]:
        if type(v) is bool:
            return v, None
        return None, f"type: expected a boolean, got {_tname(v)}"

    return check


def _string(spec: FieldSpec) -> Check:
    limit = spec.max_length

    def check(v: Any) -> tuple[Any, str | None]:
        if type(v) is not str:
            return None, f"type: expected a string, got {_tname(v)}"
        if limit is not None and len(v) > limit:
            return None, f"length: longer than {limit} characters"
        return v, None

    return check


def _category(spec: FieldSpec) -> Check:
    allowed = frozenset(spec.categories or ())
    shown = ", ".join(sorted(allowed)[:10])
    show = _shown(spec)

    def check(v: Any) -> tuple[Any, str | None]:
        if type(v) is not str:
            return None, f"type: expected a category string, got {_tname(v)}"
        if v not in allowed:
            return None, f"category: {show(repr(v[:50]))} is not one of: {shown}"
        return v, None

    return check


def _datetime(spec: FieldSpec) -> Check:
    show = _shown(spec)

    def check(v: Any) -> tuple[Any, str | None]:
        if type(v) is not str:
            return None, f"type: expected an RFC 3339 timestamp string, got {_tname(v)}"
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return None, f"type: {show(repr(v[:40]))} is not an RFC 3339 timestamp"
        if dt.tzinfo is None:
            return None, "type: timestamp needs a time zone (e.g. 'Z' or '+00:00')"
        if dt.utcoffset():
            dt = dt.astimezone(UTC)
            return dt.isoformat(), None
        return v, None

    return check


_BUILDERS: dict[FieldType, Callable[[FieldSpec], Check]] = {
    FieldType.INT: lambda s: _numeric(s, True),
    FieldType.FLOAT: lambda s: _numeric(s, False),
    FieldType.BOOL: _boolean,
    FieldType.STRING: _string,
    FieldType.CATEGORY: _category,
    FieldType.DATETIME: _datetime,
}


def _tname(v: Any) -> str:
    return (
        "null" if v is None else type(v).__name__.replace("dict", "object").replace("list", "array")
    )


@dataclass(frozen=True)
class Outcome:
    """Valid records (normalised) and the rejections, with indexes into the input."""

    valid: list[JsonRecord]
    rejections: list[Rejection]


class ContractValidator:
    """Validates records against one dataset contract."""

    def __init__(
        self,
        contract: DatasetContract,
        *,
        fields: Sequence[str] | None = None,
        optional: Sequence[str] = (),
        unknown_fields: UnknownFieldPolicy | None = None,
    ) -> None:
        """Check every field of ``contract``, or only ``fields`` (in that order).

        Fields named in ``optional`` may be absent or null whatever the contract says;
        ``unknown_fields`` overrides the contract's policy for undeclared keys.
        """
        self.contract = contract
        names = list(contract.fields) if fields is None else list(fields)
        missing = [n for n in names if n not in contract.fields]
        if missing:
            raise ValueError(f"fields not in contract '{contract.name}': {missing}")
        specs = {n: contract.fields[n] for n in names}
        self._fields: list[tuple[str, bool, bool, Check]] = [
            (
                name,
                spec.required and name not in optional,
                spec.nullable or name in optional,
                _BUILDERS[spec.type](spec),
            )
            for name, spec in specs.items()
        ]
        self._known = frozenset(specs)
        self._specs = specs
        self._policy = contract.unknown_fields if unknown_fields is None else unknown_fields
        self._personal = any(f.personal for f in contract.fields.values())
        self._fast = _compile_fast(
            [
                (n, s, req, null)
                for (n, req, null, _), s in zip(self._fields, specs.values(), strict=True)
            ],
            self._known,
        )

    def check(self, record: Any) -> tuple[JsonRecord | None, list[FieldError]]:
        """Validate one record: (normalised record, []) or (None, errors)."""
        if type(record) is not dict:
            return None, [FieldError(field="", reason=f"not_object: got {_tname(record)}")]
        out: JsonRecord = {}
        errors: list[FieldError] | None = None
        for name, required, nullable, check in self._fields:
            if name not in record:
                if required:
                    errors = errors or []
                    errors.append(FieldError(field=name, reason="missing: required field"))
                continue
            v = record[name]
            if v is None:
                if not nullable:
                    errors = errors or []
                    errors.append(FieldError(field=name, reason="null: field is not nullable"))
                else:
                    out[name] = None
                continue
            value, reason = check(v)
            if reason is not None:
                errors = errors or []
                errors.append(FieldError(field=name, reason=reason))
            else:
                out[name] = value
        if len(record) != len(out) and self._policy is not UnknownFieldPolicy.DROP:
            extra = [k for k in record if k not in self._known]
            if extra and self._policy is UnknownFieldPolicy.REJECT:
                errors = errors or []
                errors.extend(
                    FieldError(field=str(k), reason="unknown_field: not in the contract")
                    for k in extra[:20]
                )
            elif extra:
                for k in extra:
                    out[k] = record[k]
        if errors:
            return None, errors
        return out, []

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the records this validator accepts (for API documents).

        Exact for types, bounds, categories, lengths, required and nullable fields and
        unknown keys; a datetime is documented as RFC 3339 (``format: date-time``)."""
        properties: dict[str, Any] = {}
        for name, _required, nullable, _ in self._fields:
            schema = _field_schema(self._specs[name])
            properties[name] = {"anyOf": [schema, {"type": "null"}]} if nullable else schema
        out: dict[str, Any] = {
            "type": "object",
            "title": f"{self.contract.name} record",
            "properties": properties,
            "required": [name for name, required, _, _ in self._fields if required],
            "additionalProperties": self._policy is not UnknownFieldPolicy.REJECT,
        }
        return out

    def example(self) -> JsonRecord:
        """A record this validator accepts (every field, each with a plain valid value)."""
        return {name: _example(self._specs[name]) for name in self._specs}

    def validate(self, records: Sequence[Any], *, keep_rejected: bool = True) -> Outcome:
        """Validate many records; rejections keep the input index (and record, if asked:
        redacted when the contract has personal fields, see :func:`.privacy.redact`)."""
        valid: list[JsonRecord] = []
        rejections: list[Rejection] = []
        fast = self._fast
        for i, record in enumerate(records):
            if fast(record):
                valid.append(record)
                continue
            ok, errors = self.check(record)
            if ok is not None:
                valid.append(ok)
            else:
                kept = None
                if keep_rejected:
                    kept = redact(record, self.contract) if self._personal else record
                rejections.append(Rejection(index=i, errors=errors, record=kept))
        return Outcome(valid, rejections)


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    t = spec.type
    schema: dict[str, Any]
    if t in (FieldType.INT, FieldType.FLOAT):
        schema = {"type": "integer" if t is FieldType.INT else "number"}
        if spec.min is not None:
            schema["minimum"] = spec.min
        if spec.max is not None:
            schema["maximum"] = spec.max
    elif t is FieldType.BOOL:
        schema = {"type": "boolean"}
    elif t is FieldType.CATEGORY:
        schema = {"type": "string", "enum": list(spec.categories or ())}
    elif t is FieldType.DATETIME:
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": "string"}
        if spec.max_length is not None:
            schema["maxLength"] = spec.max_length
    if spec.description:
        schema["description"] = spec.description
    return schema


def _example(spec: FieldSpec) -> Any:
    t = spec.type
    if t in (FieldType.INT, FieldType.FLOAT):  # 0, or the bound nearest to it
        value = 0.0
        if spec.min is not None:
            value = max(value, spec.min)
        if spec.max is not None:
            value = min(value, spec.max)
        if t is FieldType.INT:
            return math.ceil(value) if value >= 0 else math.floor(value)
        return value
    if t is FieldType.BOOL:
        return False
    if t is FieldType.CATEGORY:
        return (spec.categories or ("",))[0]
    if t is FieldType.DATETIME:
        return "2025-01-01T00:00:00+00:00"
    return "x"


_MISSING = object()


def _compile_fast(
    fields: list[tuple[str, FieldSpec, bool, bool]], known: frozenset[str]
) -> Callable[[Any], bool]:
    """A straight-line function (generated once per contract) that says whether a record is
    valid *and already normal*, so it can be stored as it came. Anything else — an error, a
    value to normalise, an unknown key — returns False and takes the full path, which explains
    errors and normalises values. This is the hot path of ingest.
    """
    env: dict[str, Any] = {"MISSING": _MISSING, "known": known, "isfinite": math.isfinite}
    env["fromiso"] = datetime.fromisoformat
    lines = [
        "def fast(r):",
        "    if type(r) is not dict or not r.keys() <= known:",
        "        return False",
    ]
    for i, (name, spec, required, nullable) in enumerate(fields):
        v = f"v{i}"
        lines.append(f"    {v} = r.get({name!r}, MISSING)")
        absent = "return False" if required else "pass"
        none = "pass" if nullable else "return False"
        lines += [
            f"    if {v} is MISSING:",
            f"        {absent}",
            f"    elif {v} is None:",
            f"        {none}",
        ]
        t = spec.type
        if t in (FieldType.INT, FieldType.FLOAT):
            types = (
                f"type({v}) is int"
                if t is FieldType.INT
                else f"(type({v}) is float or type({v}) is int)"
            )
            cond = [types]
            if t is FieldType.FLOAT:
                cond.append(f"isfinite({v})")
            # Bounds are passed as values, never written into the source.
            if spec.min is not None:
                env[f"lo{i}"] = spec.min
                cond.append(f"{v} >= lo{i}")
            if spec.max is not None:
                env[f"hi{i}"] = spec.max
                cond.append(f"{v} <= hi{i}")
            lines.append(f"    elif not ({' and '.join(cond)}):")
        elif t is FieldType.BOOL:
            lines.append(f"    elif type({v}) is not bool:")
        elif t is FieldType.STRING:
            if spec.max_length:
                env[f"len{i}"] = spec.max_length
            limit = f" or len({v}) > len{i}" if spec.max_length else ""
            lines.append(f"    elif type({v}) is not str{limit}:")
        elif t is FieldType.CATEGORY:
            env[f"cats{i}"] = frozenset(spec.categories or ())
            lines.append(f"    elif type({v}) is not str or {v} not in cats{i}:")
        else:  # datetime: only UTC timestamps are already normal
            utc = f"{v}.endswith('Z') or {v}.endswith('+00:00')"
            lines.append(f"    elif type({v}) is not str or not ({utc}):")
            lines.append("        return False")
            lines.append("    else:")
            lines.append("        try:")
            lines.append(f"            fromiso({v})")
            lines.append("        except ValueError:")
            lines.append("            return False")
            continue
        lines.append("        return False")
    lines.append("    return True")
    # The source holds only our own code, indices and repr()'d field names; every value from
    # the contract (bounds, lengths, categories) is bound through `env`.
    exec("\n".join(lines), env)  # noqa: S102
    fast: Callable[[Any], bool] = env["fast"]
    return fast


def describe(rejections: Sequence[Rejection], *, what: str = "record", limit: int = 5) -> str:
    """The rejections in one line: ``record 0: amount: range: ...; hour: type: ...``."""
    parts = [
        f"{what} {r.index}: " + "; ".join(f"{e.field}: {e.reason}" for e in r.errors)
        for r in rejections[:limit]
    ]
    more = len(rejections) - limit
    return " | ".join(parts) + (f" | and {more} more" if more > 0 else "")


def label_errors(contract: DatasetContract, labels: Sequence[Label]) -> list[str]:
    """Why ``labels`` break ``contract`` (empty when they do not): each names its record or
    prediction, and its value passes the contract's label field."""
    label_field = contract.label_field
    if label_field is None:
        return [f"dataset '{contract.name}' declares no label field"]
    check = ContractValidator(contract, fields=[label_field])
    errors = []
    for i, lab in enumerate(labels):
        if lab.record_id is None and lab.prediction_id is None:
            errors.append(f"label {i}: give record_id or prediction_id")
            continue
        _, problems = check.check({label_field: lab.label})
        if problems:
            errors.append(f"label {i}: {label_field}: {problems[0].reason}")
    return errors


def reason_code(error: FieldError) -> str:
    """The short code of an error (``range``, ``missing``, ...), for metric labels."""
    code = error.reason.split(":", 1)[0]
    return code if code in REASONS else "other"
