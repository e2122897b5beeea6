"""Sparse histograms (bin index → count or weight) shared by the mergeable statistics.

Stored as plain dicts so that a statistic with few distinct bins stays small in its table
value; :func:`sparse_out` / :func:`counts_in` / :func:`weights_in` are their JSON form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray


def dense(sparse: Mapping[int, float], bins: int) -> NDArray[np.float64]:
    """A sparse histogram (bin → value) as a dense array of ``bins`` values."""
    out = np.zeros(bins, dtype=np.float64)
    if sparse:
        keys = np.fromiter(sparse.keys(), dtype=np.int64, count=len(sparse))
        out[keys] = np.fromiter(sparse.values(), dtype=np.float64, count=len(sparse))
    return out


def count_into(target: dict[int, int], idx: NDArray[np.int64], offset: int = 0) -> None:
    """Add the occurrences of each index (all >= ``offset``) to a sparse histogram."""
    if idx.size == 0:
        return
    counts = np.bincount(idx - offset)
    keys = np.flatnonzero(counts)
    for k, c in zip((keys + offset).tolist(), counts[keys].tolist(), strict=True):
        target[k] = target.get(k, 0) + c


def merge_into(target: dict[int, Any], other: Mapping[int, Any]) -> None:
    """Add another sparse histogram into ``target``, bin by bin."""
    for k, v in list(other.items()):
        target[k] = target.get(k, 0) + v


def sparse_out(d: Mapping[int, Any]) -> dict[str, Any]:
    """JSON form of a sparse histogram: bins as strings, in order."""
    return {str(k): d[k] for k in sorted(d)}


def counts_in(d: Mapping[str, Any]) -> dict[int, int]:
    """Inverse of :func:`sparse_out` for counts."""
    return {int(k): int(v) for k, v in d.items()}


def weights_in(d: Mapping[str, Any]) -> dict[int, float]:
    """Inverse of :func:`sparse_out` for weights."""
    return {int(k): float(v) for k, v in d.items()}


def same_bins(a: int, b: int) -> None:
    """Refuse to merge histograms over different bins."""
    if a != b:
        raise ValueError(f"cannot merge histograms with {a} and {b} bins")
