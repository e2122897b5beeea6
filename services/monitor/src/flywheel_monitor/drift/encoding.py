"""Turning reference frames and live JSON rows into numeric columns, the same way for both.

Encodings (per monitored column):

* continuous -- float64; missing, null, non-numeric and non-finite values become NaN
  (numeric strings such as '1.5' are read as numbers);
* binary -- int8 1/0; anything that is not true/false/1/0 becomes -1 (missing);
* categorical -- int32 code into the reference's categories (sorted); a value the reference
  never showed maps to the extra "other" code ``len(categories)``; null/missing is -1.

Malformed values never raise: each column ignores what it cannot read (row by row, per column),
so one bad field costs only that field.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from .config import SCORE, DriftConfig

FloatArray = npt.NDArray[np.float64]
Columns = dict[str, npt.NDArray[Any]]


def _float_or_nan(v: Any) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, int | float | str):
        try:
            f = float(v)
        except (ValueError, OverflowError):
            return math.nan
        return f if math.isfinite(f) else math.nan
    return math.nan


def to_float(values: Sequence[Any]) -> FloatArray:
    """Numbers (and bools, and numeric strings) to float64; anything else to NaN."""
    try:
        # Fast path: numbers, bools, None (→ NaN) and numeric strings convert in C.
        out = np.array(values, dtype=np.float64)
        if out.ndim != 1:
            raise ValueError("nested values")
    except (ValueError, TypeError, OverflowError):
        out = np.fromiter((_float_or_nan(v) for v in values), dtype=np.float64, count=len(values))
    out[~np.isfinite(out)] = np.nan
    return out


def to_binary(values: Sequence[Any]) -> npt.NDArray[np.int8]:
    """True/1 → 1, False/0 → 0, anything else → -1."""
    x = to_float(values)
    out = np.full(len(x), -1, dtype=np.int8)
    out[x == 1.0] = 1
    out[x == 0.0] = 0
    return out


def category_lookup(categories: Sequence[str]) -> dict[Any, int]:
    """Value → code for a categorical column (null → -1)."""
    lut: dict[Any, int] = {c: i for i, c in enumerate(categories)}
    lut[None] = -1
    return lut


def to_codes(values: Sequence[Any], lut: Mapping[Any, int], other: int) -> npt.NDArray[np.int32]:
    """Category codes; unknown values → ``other``, null → -1."""
    try:
        codes = [lut.get(v, other) for v in values]
    except TypeError:  # unhashable (a list or dict in a malformed row)
        codes = [lut.get(v, other) if _hashable(v) else other for v in values]
    out = np.array(codes, dtype=np.int32)
    return out


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _ref_categories(series: pd.Series) -> tuple[str, ...]:
    values = {
        str(v) for v in series.tolist() if v is not None and not (isinstance(v, float) and v != v)
    }
    return tuple(sorted(values))


def encode_reference(
    reference: pd.DataFrame, config: DriftConfig
) -> tuple[Columns, dict[str, tuple[str, ...]]]:
    """Encode a reference frame's monitored columns; returns (columns, categories)."""
    missing = [c for c in config.columns if c not in reference.columns]
    if missing:
        raise ValueError(f"reference sample lacks columns {missing}")
    if len(reference) < 2 * config.window // 5 or len(reference) < 20:
        raise ValueError(f"reference sample too small: {len(reference)} rows")
    columns: Columns = {}
    categories: dict[str, tuple[str, ...]] = {}
    for col in config.columns:
        kind = config.kind(col)
        values = reference[col].tolist()
        if kind == "continuous":
            columns[col] = to_float(values)
        elif kind == "binary":
            columns[col] = to_binary(values)
        else:
            cats = _ref_categories(reference[col])
            categories[col] = cats
            strs = [
                None if (v is None or (isinstance(v, float) and v != v)) else str(v) for v in values
            ]
            columns[col] = to_codes(strs, category_lookup(cats), len(cats))
    return columns, categories


def reference_digest(columns: Columns) -> str:
    """sha256 of the encoded reference content (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name in sorted(columns):
        arr = np.ascontiguousarray(columns[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class RowEncoder:
    """Encodes batches of live rows (dicts of JSON values) like the reference."""

    def __init__(self, config: DriftConfig, categories: Mapping[str, Sequence[str]]) -> None:
        self.columns = config.columns
        self.kinds = {c: config.kind(c) for c in self.columns}
        self._luts = {c: category_lookup(categories[c]) for c in categories}
        self._other = {c: len(categories[c]) for c in categories}
        self._features = [c for c in self.columns if c != SCORE]
        self._getter = operator.itemgetter(*self._features)

    def encode(self, rows: Sequence[Mapping[str, Any]], scores: Sequence[float | None]) -> Columns:
        """Encoded columns of a batch; raises ValueError when lengths differ."""
        if len(rows) != len(scores):
            raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
        feature_values = self._extract(rows)
        out: Columns = {}
        for j, col in enumerate(self.columns):
            values: Sequence[Any] = scores if col == SCORE else feature_values[j]
            kind = self.kinds[col]
            if kind == "continuous":
                out[col] = to_float(values)
            elif kind == "binary":
                out[col] = to_binary(values)
            else:
                out[col] = to_codes(values, self._luts[col], self._other[col])
        return out

    def _extract(self, rows: Sequence[Mapping[str, Any]]) -> list[Sequence[Any]]:
        """Per feature column, its values (None when missing)."""
        if not rows:
            return [[] for _ in self._features]
        try:
            # Fast path in C: one itemgetter call per row, then a transpose.
            if len(self._features) == 1:
                return [list(map(self._getter, rows))]
            return list(zip(*map(self._getter, rows), strict=True))
        except (KeyError, TypeError, IndexError, AttributeError):
            pass
        return [
            [r.get(f) if isinstance(r, Mapping) else None for r in rows] for f in self._features
        ]
