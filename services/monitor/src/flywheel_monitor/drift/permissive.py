"""The permissive drift engine (numpy/scipy/river only): calibrated sliding-window tests.

Tests
-----
Every monitored column (the features and ``_score``) is reduced to a histogram over fixed bins:
continuous columns over at most ``n_bins`` bins between reference quantiles (integer features
with few values get one bin per value), binary columns over {0, 1}, categorical columns over the
reference's categories plus "other". A live row costs one ``searchsorted`` per continuous column
and a ``bincount`` per chunk; a test costs O(columns x bins), whatever the window. On those
histograms, between the reference (n rows) and the last ``window`` rows (m rows):

* continuous, ``cvm`` -- two-sample Cramér-von Mises, ``nm/(n+m) Σ_k h_k (F_k - G_k)²`` with
  ``F``/``G`` the cumulative histograms and ``h`` the pooled bin mass;
* continuous, ``ks`` -- squared two-sample Kolmogorov-Smirnov, ``nm/(n+m) max_k (F_k - G_k)²``;
* binary and categorical -- the chi-square statistic of the 2 x K contingency table.

Rows where a column is missing or unreadable are left out of that column's histogram only
(``m`` is per column); a column with fewer than ``window / 5`` valid rows is not tested.

Calibration (why the false-alarm rate holds)
--------------------------------------------
Nominal p-values are not trusted (a fixed reference has its own sampling noise; features are
correlated; sliding tests overlap). Instead, calibration draws ``n_bootstrap`` null pairs from
the reference itself: a *pseudo-reference* of n rows and a *window* of ``window`` rows, both
resampled with replacement (rows are drawn whole, so the features' dependence is kept). The
pseudo-reference puts the reference's own sampling noise into the null, as the live test
compares a finite reference with the stream. (Pseudo-references are drawn ``n_pseudo`` times and
each is paired with ``n_bootstrap / n_pseudo`` windows: that keeps the reference-to-reference
variation, which dominates the conditional false-alarm rate, at a fraction of the cost.)

1. Per column, the bootstrap null of its statistic gives a tail probability ``p_c(s)``:
   empirical where ``p ≥ 0.01``, an exponential tail fitted to the top 1 % beyond (the
   statistics above have exponential-type tails). ``T_c = -log10 p_c`` puts all columns on one
   scale, whatever their test or number of bins.
2. The joint statistic is ``M = max_c T_c``; its threshold ``t`` is the ``1 - alpha`` quantile of
   ``M`` over the same bootstrap draws (again with an exponential tail fit above the 99 %
   quantile), so the false-alarm probability of one test holds for all columns together,
   correlated or not.
3. ``alpha`` per test: tests run every ``step`` rows. A false alarm needs at least one test to
   exceed ``t``; by the union bound the expected false alarms per row are at most ``alpha / step``
   (the overlapping tests are positively correlated, so the true rate is lower). Requiring an
   expected run time ``ERT_eff = max(ert, 2x10^5)`` rows between false alarms, with a safety
   margin of 2 for the tail fit and for references that are worse than average, gives
   ``alpha = step / (2 · ERT_eff)`` -- with step 50: alpha = 1.25x10^-4, i.e. ≤ 1 false alarm per
   4x10^5 rows by the bound, comfortably inside the target of 1 per 10^5.

After an alarm the window is cleared (the next test needs ``window`` fresh rows), so one drift
gives one alarm per window rather than one per step.

Score detector
--------------
A sequential change detector on the score stream is reported as a second detector
(``score.page_hinkley`` by default; see :mod:`.score_watch`), calibrated to the same ERT_eff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import codec
from .base import DriftReport
from .calibration import Calibration
from .config import SCORE, DriftConfig
from .encoding import RowEncoder, encode_reference
from .histograms import (
    N_TABLE,
    TAIL,
    _Binner,
    _continuous_edges,
    _fit_tail,
    _interp,
    _joint_threshold,
    _LiveStats,
    _Stats,
    _tail_p,
)
from .score_watch import ScoreWatch

MIN_ERT = 200_000
"""Rows between false alarms the permissive engine targets at least (see module docstring)."""
SAFETY = 2.0
_CHUNK_ROWS = 2_000_000  # bootstrap rows resampled per chunk (memory ≈ 8 bytes x columns x this)

FloatArray = npt.NDArray[np.float64]


def per_test_alpha(config: DriftConfig) -> float:
    """False-alarm probability allowed to one test (see module docstring)."""
    return config.step / (SAFETY * max(config.ert, MIN_ERT))


# -- calibration -------------------------------------------------------------------------------


def calibrate_permissive(reference: pd.DataFrame, config: DriftConfig) -> Calibration:
    """Calibrate the permissive engine on a reference sample (deterministic given the seed)."""
    cols, categories = encode_reference(reference, config)
    edges: dict[str, FloatArray] = {}
    sizes: list[int] = []
    for c in config.columns:
        kind = config.kind(c)
        if kind == "continuous":
            edges[c] = _continuous_edges(cols[c], config.n_bins)
            sizes.append(len(edges[c]) + 1)
        elif kind == "binary":
            sizes.append(2)
        else:
            sizes.append(len(categories[c]) + 1)
    binner = _Binner(config, edges, sizes)
    codes = binner.codes(cols)  # (n, C)
    n, ncol = codes.shape
    width = binner.dump + 1
    ref_counts = np.bincount(codes.ravel(), minlength=width)[:-1].reshape(ncol, binner.kmax)

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x5EED]))
    b_total = int(config.n_bootstrap)
    n_pseudo = int(config.extra.get("n_pseudo", min(1000, b_total)))
    stats = _Stats(config)

    def histograms(count: int, size: int) -> FloatArray:
        out = np.empty((count, ncol, binner.kmax))
        per = max(1, _CHUNK_ROWS // (size * ncol))
        for start in range(0, count, per):
            k = min(per, count - start)
            idx = rng.integers(0, n, size=(k, size))
            flat = codes[idx] + (np.arange(k) * width)[:, None, None]
            h = np.bincount(flat.ravel(), minlength=k * width).reshape(k, width)[:, :-1]
            out[start : start + k] = h.reshape(k, ncol, binner.kmax)
        return out

    pseudo = histograms(n_pseudo, n)
    null = np.empty((b_total, ncol))
    per = max(1, _CHUNK_ROWS // (config.window * ncol))
    for start in range(0, b_total, per):
        k = min(per, b_total - start)
        win = histograms(k, config.window)
        refs = pseudo[np.arange(start, start + k) % n_pseudo]
        null[start : start + k] = stats(refs, win)

    arrays: dict[str, npt.NDArray[Any]] = {"ref_counts": ref_counts.astype(np.float64)}
    tails: list[tuple[float, float]] = []
    transformed = np.empty_like(null)
    for j, c in enumerate(config.columns):
        table, levels, u, sigma = _fit_tail(null[:, j])
        arrays[f"table/{c}"] = table
        if c in edges:
            arrays[f"edges/{c}"] = edges[c]
        tails.append((u, sigma))
        transformed[:, j] = -np.log10(_tail_p(null[:, j], table, levels, u, sigma))
    joint = transformed.max(axis=1)
    alpha = per_test_alpha(config)
    threshold = _joint_threshold(joint, alpha)
    score_ref = cols[SCORE][np.isfinite(cols[SCORE])]
    values = {
        "sizes": sizes,
        "tails": [list(t) for t in tails],
        "threshold": threshold,
        "alpha": alpha,
        "joint_null_q99": float(np.quantile(joint, 1.0 - TAIL)),
        "score_mean": float(score_ref.mean()) if len(score_ref) else 0.0,
        "score_std": float(score_ref.std()) if len(score_ref) > 1 else 0.0,
    }
    return Calibration.of_reference(config, cols, categories, arrays, values)


# -- detector ----------------------------------------------------------------------------------


class PermissiveDetector:
    """Sliding-window joint test plus a sequential detector on the score (module docstring)."""

    sampling_rate: float = 1.0

    def __init__(self, cal: Calibration, state: bytes | None = None) -> None:
        cfg = cal.config
        self.config = cfg
        self._key = cal.key
        self.columns = cfg.columns
        self._encoder = RowEncoder(cfg, cal.categories)
        edges = {c[6:]: v for c, v in cal.arrays.items() if c.startswith("edges/")}
        self._binner = _Binner(cfg, edges, cal.values["sizes"])
        self._live = _LiveStats(cfg, cal.arrays["ref_counts"], cal.values["sizes"])
        levels = np.linspace(0.0, 1.0 - TAIL, N_TABLE)
        self._tails = []
        for c, (u, sigma) in zip(self.columns, cal.values["tails"], strict=True):
            uniq, first = np.unique(cal.arrays[f"table/{c}"], return_index=True)
            self._tails.append((uniq.tolist(), levels[first].tolist(), float(u), float(sigma)))
        self.threshold = float(cal.values["threshold"])
        self._score_mean = float(cal.values["score_mean"])
        self._score_std = float(cal.values["score_std"]) or 1.0
        self._width = self._binner.dump + 1
        self.name = f"window.{cfg.continuous_test}"
        self.seen = 0
        self.alarms = 0
        self._watch = ScoreWatch(cfg, cal.reference[SCORE], max(cfg.ert, MIN_ERT))
        self.reset()
        if state is not None:
            self._load(state)

    # -- window --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear the window and the score detector's memory (``seen`` is kept)."""
        self._reset_window()
        self._watch.reset(self.seen)

    def _reset_window(self) -> None:
        self._buf = np.full((self.config.window, len(self.columns)), self._binner.dump, np.int32)
        self._counts = np.zeros(self._width, dtype=np.int64)
        self._head = 0
        self._since = 0

    def _push(self, codes: npt.NDArray[np.int32]) -> None:
        k = len(codes)
        idx = (self._head + np.arange(k)) % self.config.window
        self._counts -= np.bincount(self._buf[idx].ravel(), minlength=self._width)
        self._counts += np.bincount(codes.ravel(), minlength=self._width)
        self._counts[-1] = 0
        self._buf[idx] = codes
        self._head = (self._head + k) % self.config.window
        self._since += k

    def _test(self) -> DriftReport:
        win = self._counts[:-1].reshape(len(self.columns), self._binner.kmax).astype(np.float64)
        s = self._live(win).tolist()
        t_values: dict[str, float] = {}
        p_values: dict[str, float] = {}
        for j, c in enumerate(self.columns):
            uniq, lev, u, sigma = self._tails[j]
            sj = s[j]
            if sj > u:
                p = max(TAIL * math.exp(-(sj - u) / sigma), 1e-300)
            else:
                p = 1.0 - _interp(sj, uniq, lev)
            p_values[c] = p
            t_values[c] = -math.log10(p)
        joint = max(t_values.values())
        drift = joint > self.threshold
        return DriftReport(
            detector=self.name,
            drift=drift,
            statistics=t_values,
            thresholds=dict.fromkeys(self.columns, self.threshold),
            p_values=p_values,
            drifted_features=[c for c in self.columns if t_values[c] > self.threshold],
            window=min(self._since, self.config.window),
            position=self.seen,
            score=joint,
            threshold=self.threshold,
        )

    # -- port ----------------------------------------------------------------------------------

    def update(
        self, rows: Sequence[Mapping[str, Any]], scores: Sequence[float | None]
    ) -> list[DriftReport]:
        """Feed a batch; one report per window test (every ``step`` rows) and per score alarm."""
        cols = self._encoder.encode(rows, scores)
        codes = self._binner.codes(cols)
        first = self.seen
        window, step = self.config.window, self.config.step
        reports: list[DriftReport] = []
        i = 0
        total = len(codes)
        while i < total:
            if self._since < window:
                until = window - self._since
            else:
                until = step - (self._since - window) % step
            take = min(until, total - i)
            self._push(codes[i : i + take])
            self.seen += take
            i += take
            if take == until:
                report = self._test()
                reports.append(report)
                if report.drift:
                    self.alarms += 1
                    self._reset_window()
        score_reports = self._watch.update(cols[SCORE], first)
        if score_reports:
            reports = sorted(reports + score_reports, key=lambda r: r.position)
        return reports

    def state_bytes(self) -> bytes:
        """Window buffer, counters and the score detector (bounded: O(window x columns))."""
        meta = {
            "key": self._key,
            "seen": self.seen,
            "head": self._head,
            "since": self._since,
            "alarms": self.alarms,
        }
        arrays: dict[str, npt.NDArray[Any]] = {"buf": self._buf, "counts": self._counts}
        watch_meta, watch_arrays = self._watch.state()
        meta.update(watch_meta)
        arrays.update(watch_arrays)
        return codec.pack(meta, arrays)

    def _load(self, state: bytes) -> None:
        meta, arrays = codec.unpack(state)
        if meta["key"] != self._key:
            raise ValueError("detector state belongs to another calibration")
        if arrays["buf"].shape != self._buf.shape:
            raise ValueError("detector state has the wrong window shape")
        self.seen = int(meta["seen"])
        self._head = int(meta["head"])
        self._since = int(meta["since"])
        self.alarms = int(meta["alarms"])
        self._buf = arrays["buf"].astype(np.int32)
        self._counts = arrays["counts"].astype(np.int64)
        self._watch.load(meta, arrays)
