"""The alibi backend's column layout, encoding, windowed tests and RNG handling.

Part of the optional alibi-detect backend (see :mod:`.alibi_backend`): imported only by the
backend's modules, never by the base package.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
from alibi_detect.cd import ChiSquareDrift, CVMDrift, KSDrift, TabularDrift

from .config import DriftConfig
from .encoding import Columns

FloatArray = npt.NDArray[np.float64]


@contextmanager
def _numpy_global_rng(state: dict[str, Any]) -> Iterator[None]:
    """Run with numpy's global RNG set to ``state["rng"]``; store its new state back."""
    saved = np.random.get_state()
    np.random.set_state(state["rng"])
    try:
        yield
    finally:
        state["rng"] = np.random.get_state()
        np.random.set_state(saved)


def _seeded_rng_state(seed: int) -> Any:
    return np.random.RandomState(
        np.random.SeedSequence([seed, 0xA11B1]).generate_state(1)[0]
    ).get_state()


# -- layout ------------------------------------------------------------------------------------


class _Layout:
    """Which columns go to which alibi detector."""

    def __init__(self, config: DriftConfig) -> None:
        cols = config.columns
        self.cont = [c for c in cols if config.kind(c) == "continuous"]
        self.binary = [c for c in cols if config.kind(c) == "binary"]
        self.cat = [c for c in cols if config.kind(c) == "categorical"]
        if config.mode == "online":
            self.cvm = list(self.cont)
            self.fet = list(self.binary) if config.binary_test == "fet" else []
            self.window_cont: list[str] = []
            self.window_cat = self.cat + ([] if self.fet else self.binary)
            self.tabular = False
        else:
            self.cvm, self.fet = [], []
            self.tabular = config.categorical_test == "tabular"
            self.window_cont = list(self.cont)
            self.window_cat = self.binary + self.cat
        self.window = self.window_cont + self.window_cat


def _matrix_keep_negative(
    cols: Columns, names: Sequence[str], kinds: Mapping[str, str]
) -> FloatArray:
    """Rows x names float matrix; missing as NaN (codes of binary/categorical: -1)."""
    if not names:
        n = len(next(iter(cols.values())))
        return np.zeros((n, 0))
    parts = []
    for c in names:
        x = cols[c].astype(np.float64)
        if kinds[c] != "continuous":
            x[x < 0] = np.nan
        parts.append(x)
    return np.column_stack(parts)


def _complete(x: FloatArray) -> FloatArray:
    out: FloatArray = x[~np.isnan(x).any(axis=1)]
    return out


# -- windowed (batch) tests --------------------------------------------------------------------


def _window_detectors(
    config: DriftConfig, layout: _Layout, ref: FloatArray
) -> list[tuple[list[int], Any]]:
    """(column indices into layout.window, detector) pairs for the windowed tests."""
    out: list[tuple[list[int], Any]] = []
    n_cont = len(layout.window_cont)
    cat_idx = list(range(n_cont, len(layout.window)))
    if layout.tabular and layout.window:
        # None: categories from the reference (alibi's chi2 fails on categories absent from both)
        cats: dict[int, int | None] = dict.fromkeys(cat_idx)
        det = TabularDrift(_complete(ref), p_val=0.05, categories_per_feature=cats)
        out.append((list(range(len(layout.window))), det))
        return out
    if n_cont:
        x = _complete(ref[:, :n_cont])
        cls = CVMDrift if config.continuous_test == "cvm" else KSDrift
        out.append((list(range(n_cont)), cls(x, p_val=0.05)))
    if cat_idx:
        x = _complete(ref[:, cat_idx])
        out.append((cat_idx, ChiSquareDrift(x, p_val=0.05)))
    return out


def _window_p_values(
    dets: Sequence[tuple[list[int], Any]],
    refs: Sequence[FloatArray],
    window: FloatArray,
    width: int,
) -> FloatArray:
    """Per-column p-values of one window (1.0 where a group has too few complete rows)."""
    p = np.ones(width)
    for (idx, det), ref in zip(dets, refs, strict=True):
        x = _complete(window[:, idx])
        if len(x) < 5:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                pv, _ = det.feature_score(ref, x)
            except ValueError:  # chi2 on a category absent from both samples: no evidence
                continue
        p[idx] = np.where(np.isfinite(pv), pv, 1.0)
    return p


def _joint(p: FloatArray) -> float:
    return float(-math.log10(max(float(np.min(p)), 1e-300))) if len(p) else 0.0


def _rng_to_json(state: Any) -> dict[str, Any]:
    _name, key, pos, has_gauss, cached = state
    return {"key": [int(k) for k in key], "pos": int(pos), "g": int(has_gauss), "c": float(cached)}


def _rng_from_json(data: Mapping[str, Any]) -> Any:
    return ("MT19937", np.array(data["key"], dtype=np.uint32), data["pos"], data["g"], data["c"])
