"""Checks of a new batch against a baseline snapshot: a batch that looks unlike the data the
production model was trained on (nulls jump, numbers far out of range, category shares move,
the label rate moves, volume collapses or explodes) or repeats record ids. Pure functions on
statistics.

Every baseline check needs a baseline of at least ``min_baseline_rows`` rows; the duplicate-id
check needs none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from flywheel_shared.events import CategoricalStats, NumericStats
from flywheel_shared.snapshots import FieldStats
from flywheel_shared.spec import BatchChecks

#: Fewer values than this in a batch say little about category shares: not compared.
MIN_CATEGORY_VALUES = 10
Check = Literal["null_rate", "range", "categories", "label_rate", "volume", "duplicate_ids"]


@dataclass(frozen=True)
class Finding:
    """One check a batch failed."""

    check: Check
    field: str | None
    observed: float
    limit: float
    detail: str


@dataclass(frozen=True)
class Baseline:
    """What a batch is compared with: a snapshot's rows, segments and merged statistics."""

    rows: int
    segments: int
    stats: FieldStats


def duplicate_ids(table: pa.Table, id_field: str) -> int:
    """Rows of ``table`` whose id another row of it has already."""
    ids = table.column(id_field).drop_null()
    return len(ids) - int(pc.count_distinct(ids).as_py())


def _null_rate(s: NumericStats | CategoricalStats) -> float:
    total = s.count + s.nulls
    return s.nulls / total if total else 0.0


def _range(name: str, new: NumericStats, base: NumericStats, k: float) -> Finding | None:
    if None in (new.min, new.max, base.min, base.max):
        return None
    assert new.min is not None and new.max is not None
    assert base.min is not None and base.max is not None
    width = base.max - base.min
    lo, hi = base.min - k * width, base.max + k * width
    if new.min >= lo and new.max <= hi:
        return None
    # How far out, in baseline widths beyond the baseline's range (inf for a constant field).
    beyond = max(base.min - new.min, new.max - base.max)
    excess = beyond / width if width else float("inf")
    return Finding(
        "range",
        name,
        excess,
        k,
        f"{name}: batch [{new.min:g}, {new.max:g}] reaches {excess:.2f} baseline widths beyond "
        f"[{base.min:g}, {base.max:g}] (limit {k:g})",
    )


def total_variation(a: dict[str, int], b: dict[str, int]) -> float:
    """Total-variation distance of two count tables' shares (0: same, 1: disjoint)."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return 0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in {*a, *b})


def _field(
    name: str,
    new: NumericStats | CategoricalStats,
    base: NumericStats | CategoricalStats,
    policy: BatchChecks,
) -> list[Finding]:
    out: list[Finding] = []
    jump = _null_rate(new) - _null_rate(base)
    if jump > policy.null_rate_jump:
        out.append(
            Finding(
                "null_rate",
                name,
                jump,
                policy.null_rate_jump,
                f"{name}: null rate {_null_rate(new):.1%} vs {_null_rate(base):.1%} in the "
                f"baseline (+{jump:.1%}, limit +{policy.null_rate_jump:.1%})",
            )
        )
    if isinstance(new, NumericStats) and isinstance(base, NumericStats):
        found = _range(name, new, base, policy.range_excess)
        if found is not None:
            out.append(found)
    elif (
        isinstance(new, CategoricalStats)
        and isinstance(base, CategoricalStats)
        and new.count >= MIN_CATEGORY_VALUES
    ):
        tv = total_variation(new.counts, base.counts)
        if tv > policy.category_tv:
            out.append(
                Finding(
                    "categories",
                    name,
                    tv,
                    policy.category_tv,
                    f"{name}: category shares moved by {tv:.2f} (total variation, limit "
                    f"{policy.category_tv:g})",
                )
            )
    return out


def _label_rate(
    name: str, new: CategoricalStats, base: CategoricalStats, z: float
) -> Finding | None:
    """The label value whose share moved most, in standard errors of the batch's share."""
    nb, n0 = sum(new.counts.values()), sum(base.counts.values())
    if nb < MIN_CATEGORY_VALUES or not n0:
        return None
    worst: tuple[float, str, float, float] | None = None
    for k, c in base.counts.items():
        p0, pb = c / n0, new.counts.get(k, 0) / nb
        if 0 < p0 < 1:
            score = abs(pb - p0) / math.sqrt(p0 * (1 - p0) / nb)
            if worst is None or score > worst[0]:
                worst = (score, k, pb, p0)
    if worst is None or worst[0] <= z:
        return None
    score, k, pb, p0 = worst
    return Finding(
        "label_rate",
        name,
        score,
        z,
        f"{name}: {k!r} is {pb:.1%} of the batch's labels vs {p0:.1%} in the baseline "
        f"({score:.1f} standard errors, limit {z:g})",
    )


def check_batch(
    policy: BatchChecks,
    batch: FieldStats,
    rows: int,
    baseline: Baseline | None,
    *,
    duplicates: int = 0,
    label_field: str | None = None,
) -> list[Finding]:
    """What is wrong with a batch of ``rows`` rows with statistics ``batch`` (and ``duplicates``
    repeated ids) compared with ``baseline``; empty: nothing. Fields the baseline lacks (new
    in the contract) or whose kind changed are not compared; a categorical ``label_field``
    is also checked for a label-rate change (unlabelled rows are not counted)."""
    out: list[Finding] = []
    if duplicates > policy.max_duplicate_ids:
        out.append(
            Finding(
                "duplicate_ids",
                None,
                duplicates,
                policy.max_duplicate_ids,
                f"{duplicates} repeated record ids in the batch (limit {policy.max_duplicate_ids})",
            )
        )
    if baseline is None or baseline.rows < policy.min_baseline_rows or not baseline.segments:
        return out
    per_segment = baseline.rows / baseline.segments
    ratio = rows / per_segment
    low, high = policy.volume_ratio
    if not low < ratio < high:
        out.append(
            Finding(
                "volume",
                None,
                ratio,
                low if ratio <= low else high,
                f"{rows} rows: {ratio:.3g} times the baseline's {per_segment:.0f} rows per "
                f"segment (allowed: between {low:g} and {high:g} times)",
            )
        )
    for name, new in batch.items():
        base = baseline.stats.get(name)
        if base is not None:
            out.extend(_field(name, new, base, policy))
        if (
            name == label_field
            and isinstance(new, CategoricalStats)
            and isinstance(base, CategoricalStats)
        ):
            found = _label_rate(name, new, base, policy.label_rate_z)
            if found is not None:
                out.append(found)
    return out
