"""The permissive engine's histograms, their two-sample statistics and their null tails.

Binning and the statistics (Cramér-von Mises, Kolmogorov-Smirnov, chi-square on histograms) and
the tail transforms that put every column on one ``-log10 p`` scale are described in
:mod:`.permissive`; the calibration and the detector there use these pieces.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .config import DriftConfig
from .encoding import Columns

TAIL = 0.01
"""Exceedance level above which null distributions are extrapolated with an exponential tail."""
N_TABLE = 513
"""Points of each column's stored null quantile table."""
MIN_VALID_SHARE = 0.2

FloatArray = npt.NDArray[np.float64]


# -- binning -----------------------------------------------------------------------------------


def _continuous_edges(x: FloatArray, n_bins: int) -> FloatArray:
    valid = x[np.isfinite(x)]
    uniq = np.unique(valid)
    if len(uniq) == 0:
        return np.zeros(0)
    if len(uniq) == 1:
        v = float(uniq[0])
        return np.array([v, np.nextafter(v, math.inf)])  # below / equal / above
    if len(uniq) <= n_bins:
        return uniq[1:].astype(np.float64)  # one bin per value (ints with few values)
    qs = np.quantile(valid, np.arange(1, n_bins) / n_bins)
    return np.unique(qs).astype(np.float64)


class _Binner:
    """Maps encoded columns to flat histogram codes ``c * kmax + bin`` (missing → dump)."""

    def __init__(self, config: DriftConfig, edges: Mapping[str, FloatArray], sizes: Sequence[int]):
        self.columns = config.columns
        self.kinds = [config.kind(c) for c in self.columns]
        self.edges = [edges.get(c) for c in self.columns]
        self.sizes = list(sizes)
        self.kmax = max(self.sizes)
        self.dump = len(self.columns) * self.kmax

    def codes(self, cols: Columns) -> npt.NDArray[np.int32]:
        """(rows, columns) int32 flat codes."""
        n = len(cols[self.columns[0]])
        out = np.empty((n, len(self.columns)), dtype=np.int32)
        for j, (c, kind) in enumerate(zip(self.columns, self.kinds, strict=True)):
            x = cols[c]
            if kind == "continuous":
                edges = self.edges[j]
                assert edges is not None
                b = np.searchsorted(edges, x, side="right").astype(np.int32)
                missing = np.isnan(x)
            else:
                b = x.astype(np.int32)
                missing = (b < 0) | (b >= self.sizes[j])
            code = b + j * self.kmax
            code[missing] = self.dump
            out[:, j] = code
        return out


# -- statistics --------------------------------------------------------------------------------


class _Stats:
    """Vectorised statistics of stacks of histogram pairs, shape (samples, columns, kmax)."""

    def __init__(self, config: DriftConfig) -> None:
        kinds = [config.kind(c) for c in config.columns]
        cont = [j for j, k in enumerate(kinds) if k == "continuous"]
        self.cvm = np.array(cont if config.continuous_test == "cvm" else [], dtype=np.int64)
        self.ks = np.array(cont if config.continuous_test == "ks" else [], dtype=np.int64)
        self.chi = np.array([j for j, k in enumerate(kinds) if k != "continuous"], dtype=np.int64)
        self.min_valid = max(2.0, MIN_VALID_SHARE * config.window)

    def __call__(self, ref: FloatArray, win: FloatArray) -> FloatArray:
        n = ref.sum(-1)
        m = win.sum(-1)
        out = np.zeros(n.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = n * m / (n + m)
            for idx, which in ((self.cvm, "cvm"), (self.ks, "ks")):
                if not len(idx):
                    continue
                r, w = ref[:, idx], win[:, idx]
                nn, mm = n[:, idx, None], m[:, idx, None]
                d = np.cumsum(r, -1) / nn - np.cumsum(w, -1) / mm
                d2 = d * d
                if which == "cvm":
                    out[:, idx] = scale[:, idx] * np.sum((r + w) * d2, -1) / (nn + mm)[..., 0]
                else:
                    out[:, idx] = scale[:, idx] * d2.max(-1)
            if len(self.chi):
                r, w = ref[:, self.chi], win[:, self.chi]
                nn, mm = n[:, self.chi, None], m[:, self.chi, None]
                tot = r + w
                num = r * mm - w * nn
                terms = num * num / (np.where(tot > 0, tot, 1.0) * nn * mm)
                out[:, self.chi] = terms.sum(-1)
        out[(m < self.min_valid) | (n < 1) | ~np.isfinite(out)] = 0.0
        return out


class _LiveStats:
    """The statistics of :class:`_Stats` for one window against the fixed reference.

    Same numbers, fewer numpy calls: continuous and count columns are handled as two small
    matrices, and cumulative sums are one matrix product with a triangular matrix.
    """

    def __init__(self, config: DriftConfig, ref_counts: FloatArray, sizes: Sequence[int]) -> None:
        kinds = [config.kind(c) for c in config.columns]
        self.ncol = len(kinds)
        self.cont = np.array([j for j, k in enumerate(kinds) if k == "continuous"], dtype=np.int64)
        self.chi = np.array([j for j, k in enumerate(kinds) if k != "continuous"], dtype=np.int64)
        self.kcont = max([sizes[j] for j in self.cont], default=1)
        self.kchi = max([sizes[j] for j in self.chi], default=1)
        self.ks = config.continuous_test == "ks"
        self.min_valid = max(2.0, MIN_VALID_SHARE * config.window)
        n = ref_counts.sum(1)
        self.n_ok = n >= 1
        self.n = np.maximum(n, 1.0)
        self.upper = np.triu(np.ones((self.kcont, self.kcont)))
        r_cont = ref_counts[self.cont, : self.kcont]
        self.r_cont = r_cont
        self.f_cont = (r_cont @ self.upper) / self.n[self.cont, None]
        self.n_cont = self.n[self.cont]
        self.r_chi = ref_counts[self.chi, : self.kchi]
        self.n_chi = self.n[self.chi]

    def __call__(self, win: FloatArray) -> FloatArray:
        m = win.sum(1)
        mm = np.maximum(m, 1.0)
        out = np.zeros(self.ncol)
        if len(self.cont):
            w = win[self.cont, : self.kcont]
            mc, n = mm[self.cont], self.n_cont
            d = self.f_cont - (w @ self.upper) / mc[:, None]
            d *= d
            if self.ks:
                out[self.cont] = (n * mc / (n + mc)) * d.max(1)
            else:
                out[self.cont] = (n * mc / ((n + mc) * (n + mc))) * np.einsum(
                    "ij,ij->i", self.r_cont + w, d
                )
        if len(self.chi):
            w = win[self.chi, : self.kchi]
            mc, n = mm[self.chi], self.n_chi
            tot = self.r_chi + w
            num = self.r_chi * mc[:, None] - w * n[:, None]
            out[self.chi] = np.einsum("ij,ij->i", num, num / np.where(tot > 0, tot, 1.0)) / (n * mc)
        out[(m < self.min_valid) | ~self.n_ok | ~np.isfinite(out)] = 0.0
        return out


# -- tail transforms ---------------------------------------------------------------------------


def _fit_tail(values: FloatArray) -> tuple[FloatArray, FloatArray, float, float]:
    """(table values, table levels, u, sigma) of a null sample (see module docstring)."""
    v = np.sort(values)
    levels = np.linspace(0.0, 1.0 - TAIL, N_TABLE)
    table = np.quantile(v, levels)
    u = float(table[-1])
    excess = v[v > u] - u
    sigma = float(excess.mean()) if len(excess) else 0.0
    if not sigma > 0:
        sigma = max(abs(u), 1.0) * 1e-6  # degenerate null (constant column): any excess is huge
    return table, levels, u, sigma


def _tail_p(
    s: FloatArray, table: FloatArray, levels: FloatArray, u: float, sigma: float
) -> FloatArray:
    """Null exceedance probability P(S ≥ s) of statistics ``s``."""
    uniq, first = np.unique(table, return_index=True)  # ties: the smallest level (conservative)
    cdf = np.interp(s, uniq, levels[first], left=0.0, right=1.0 - TAIL)
    p = np.where(s > u, TAIL * np.exp(-(s - u) / sigma), 1.0 - cdf)
    return np.clip(p, 1e-300, 1.0)


def _interp(x: float, xp: list[float], fp: list[float]) -> float:
    """``np.interp`` for one point on Python lists (no numpy call overhead on the hot path)."""
    i = bisect.bisect_right(xp, x)
    if i == 0:
        return 0.0 if x < xp[0] else fp[0]
    if i == len(xp):
        return fp[-1]
    x0, x1 = xp[i - 1], xp[i]
    return fp[i - 1] + (fp[i] - fp[i - 1]) * (x - x0) / (x1 - x0)


def _joint_threshold(m: FloatArray, alpha: float) -> float:
    """The 1 - alpha quantile of the joint statistic, exponential tail beyond the 99 % one."""
    if alpha >= TAIL:
        return float(np.quantile(m, 1.0 - alpha))
    u = float(np.quantile(m, 1.0 - TAIL))
    excess = m[m > u] - u
    sigma = float(excess.mean()) if len(excess) else 1.0
    t = u + sigma * math.log(TAIL / alpha)
    if alpha * len(m) >= 5:  # enough draws for a direct estimate: never go below it
        t = max(t, float(np.quantile(m, 1.0 - alpha)))
    return t
