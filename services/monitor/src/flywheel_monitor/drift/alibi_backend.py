"""The alibi-detect drift backend (optional; alibi-detect is BSL-1.1: non-production use).

This module and its parts (:mod:`.alibi_columns`: layout, encoding and windowed tests;
:mod:`.alibi_calibrate`: calibration; :mod:`.alibi_online`: the restored online detectors) are
the only modules that import ``alibi_detect``; the engine imports this one lazily.

Detectors
---------
mode ``online``:

* ``CVMDriftOnline`` on the continuous features and ``_score`` (rows with a missing continuous
  value are not fed to it), ``window_sizes=[window]``;
* ``FETDriftOnline`` on the binary features (``binary_test="fet"``). FET online is one-sided,
  so each binary column is fed twice, as ``x`` and ``1 - x``, with ``alternative="greater"``:
  both directions of change are watched by one detector. A binary column that is constant in
  the reference cannot be calibrated by alibi and is left out;
* categorical features (and binary ones with ``binary_test="chi2"``): online alibi has no
  categorical detector, so batch ``ChiSquareDrift`` runs on the last ``window`` rows every
  ``step`` rows, with a threshold calibrated on the reference (below), not the nominal p-value.

The online detectors share the ERT: each of the k sub-detectors is calibrated to ``k · ert`` so
that together they expect one false alarm per ``ert`` rows fed. alibi's online thresholds assume
independent features and need ``n_bootstrap ≳ ERT x d`` simulations (alibi refuses otherwise):
the ERT actually calibrated is at most ``n_bootstrap / (1.5 e d)`` (see ``_supported_ert``),
stored as ``cvm_ert`` and ``fet_ert`` in the calibration's values. With the default 2000
bootstraps that is far below the spec's ert: more bootstraps cost minutes (see FACTS); for
fewer false alarms use the permissive backend.

mode ``batch``: the last ``window`` rows are tested every ``step`` rows (tumbling windows by
default) with ``KSDrift`` or ``CVMDrift`` (``continuous_test``) and ``ChiSquareDrift``, or one
``TabularDrift`` over all columns (``categorical_test="tabular"``).

Windowed tests (both modes) are calibrated like the permissive engine: the joint statistic is
``-log10`` of the smallest per-feature p-value, and its threshold is its ``1 - alpha`` quantile over
``n_bootstrap`` null draws of (pseudo-reference, window), both resampled from the reference. alpha
is ``min(p_value, step / ert)`` per test in batch mode and ``step / (k · ert)`` online.

Thresholds are stored, never recomputed
---------------------------------------
alibi's ``save_detector`` drops the thresholds and ``load_detector`` recalibrates with an
unseeded RNG. Here calibration seeds numpy's global RNG (alibi draws from it), reads the
detectors' ``thresholds`` (and FET's ``permit_probs``) and stores them; ``make_detector``
constructs subclasses whose ``_configure_thresholds`` installs the stored arrays instead of
simulating streams, so loading costs milliseconds and gives bit-identical thresholds.

Cost, sampling and state
------------------------
An online update costs ≈ 0.4-7 ms per row (it grows with ``n_ref`` and d), so rows are fed to
the online detectors at most ``max_update_rate`` per second: the detector measures the arrival
rate (``clock``, wall time by default) and feeds every k-th row, ``sampling_rate = 1/k``
(``max_update_rate=inf`` feeds every row). The reference is subsampled to ``n_ref`` rows.
alibi's online state grows with every row (``xs``, ``test_stats``, ``drift_preds``); it is
trimmed to what the next update reads after every row, and ``reset_state()`` is called after an
alarm and every ``ert`` fed rows. ``state_bytes`` stores the last ``window`` fed rows and
counters; CVM's comparison matrices are rebuilt from them on load (they are a function of the
window and the reference). FET's tie-breaking draws from numpy's global RNG: each call runs
with the detector's own RNG state swapped in, so a restored detector draws the same numbers.

Calibration time: CVM simulations cost ≈ (n_ref + 2·window)² per bootstrap; FET ≈ 10 s per
1000 bootstraps per (doubled) binary column at window 500. Keep ``n_bootstrap`` small in tests.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import numpy.typing as npt

from . import codec
from .alibi_calibrate import calibrate_alibi
from .alibi_columns import (
    FloatArray,
    _complete,
    _joint,
    _Layout,
    _matrix_keep_negative,
    _numpy_global_rng,
    _rng_from_json,
    _rng_to_json,
    _window_detectors,
    _window_p_values,
)
from .alibi_online import _PresetCVM, _PresetFET, _rebuild_cvm, _trim, restored
from .base import DriftReport
from .calibration import Calibration
from .encoding import RowEncoder

__all__ = ["AlibiDetector", "calibrate_alibi"]


class AlibiDetector:
    """alibi-detect detectors restored from a calibration (see module docstring)."""

    def __init__(self, cal: Calibration, state: bytes | None = None) -> None:
        cfg = cal.config
        self.config = cfg
        self._key = cal.key
        self.layout = _Layout(cfg)
        self._kinds = {c: cfg.kind(c) for c in cfg.columns}
        self._encoder = RowEncoder(cfg, cal.categories)
        self.clock: Callable[[], float] = time.monotonic
        self.seen = 0
        self.fed = 0
        self.alarms = 0
        v = cal.values
        self._cvm: Any = None
        self._fet: Any = None
        self.fet_columns: list[str] = list(v.get("fet_columns", []))
        if "cvm/x_ref" in cal.arrays:
            self._cvm = restored(
                _PresetCVM,
                {"_preset": cal.arrays["cvm/thresholds"]},
                cal.arrays["cvm/x_ref"],
                v["cvm_ert"],
                cfg.window,
            )
        if "fet/x_ref" in cal.arrays:
            self._fet = restored(
                _PresetFET,
                {
                    "_preset": cal.arrays["fet/thresholds"],
                    "_preset_permit": cal.arrays["fet/permit_probs"],
                },
                cal.arrays["fet/x_ref"],
                v["fet_ert"],
                cfg.window,
            )
        self._window_threshold = float(v.get("window_threshold", math.inf))
        self._dets: list[tuple[list[int], Any]] = []
        self._refs: list[FloatArray] = []
        if self.layout.window:
            ref = _matrix_keep_negative(cal.reference, self.layout.window, self._kinds)
            self._dets = _window_detectors(cfg, self.layout, ref)
            self._refs = [_complete(ref[:, idx]) for idx, _ in self._dets]
        self._rng = {"rng": _rng_from_json(v["rng"])}
        self._stride = 1
        self._countdown = 0
        self._fed_since_reset = 0
        self._last_time: float | None = None
        self._rate = 0.0
        self._measured = False
        self._last_online: dict[str, tuple[float, float]] = {}
        self._since_status = 0
        self._reset_windows()
        if state is not None:
            self._load(state)

    @property
    def sampling_rate(self) -> float:
        """Share of rows fed to the online detectors (1.0 in batch mode)."""
        return 1.0 / self._stride if (self._cvm is not None or self._fet is not None) else 1.0

    # -- windows ---------------------------------------------------------------------------------

    def _reset_windows(self) -> None:
        self._buf = np.full((self.config.window, len(self.layout.window)), np.nan)
        self._head = 0
        self._since = 0

    def reset(self) -> None:
        """Clear the windows and the online detectors' state (``seen`` is kept)."""
        self._reset_windows()
        for det in (self._cvm, self._fet):
            if det is not None:
                det.reset_state()
        self._fed_since_reset = 0

    def _window_report(self) -> DriftReport:
        filled = min(self._since, self.config.window)
        order = (np.arange(filled) + self._head - filled) % self.config.window
        win = self._buf[order]
        p = _window_p_values(self._dets, self._refs, win, len(self.layout.window))
        joint = _joint(p)
        t = self._window_threshold
        stats = {
            c: float(-math.log10(max(float(pv), 1e-300)))
            for c, pv in zip(self.layout.window, p, strict=True)
        }
        name = "alibi." + "+".join(type(d).__name__ for _, d in self._dets)
        return DriftReport(
            detector=name,
            drift=joint > t,
            statistics=stats,
            thresholds=dict.fromkeys(self.layout.window, t),
            p_values={c: float(pv) for c, pv in zip(self.layout.window, p, strict=True)},
            drifted_features=[c for c in self.layout.window if stats[c] > t],
            window=filled,
            position=self.seen,
            score=joint,
            threshold=t,
        )

    def _windows(self, x: FloatArray, first: int) -> list[DriftReport]:
        reports: list[DriftReport] = []
        window, step = self.config.window, self.config.step
        i, total = 0, len(x)
        while i < total:
            until = (
                window - self._since
                if self._since < window
                else step - (self._since - window) % step
            )
            take = min(until, total - i)
            idx = (self._head + np.arange(take)) % window
            self._buf[idx] = x[i : i + take]
            self._head = (self._head + take) % window
            self._since += take
            i += take
            if take == until:
                self.seen = first + i
                report = self._window_report()
                reports.append(report)
                if report.drift:
                    self.alarms += 1
                    self._reset_windows()
        return reports

    # -- online ----------------------------------------------------------------------------------

    def _adapt_stride(self, n: int) -> None:
        if math.isinf(self.config.max_update_rate):
            self._stride = 1
            return
        now = self.clock()
        if self._last_time is not None and now > self._last_time:
            rate = n / (now - self._last_time)
            self._rate = 0.7 * self._rate + 0.3 * rate if self._measured else rate
            self._measured = True
        elif self._last_time is None and self._rate == 0:
            self._rate = float(n)  # first batch: assume it took a second to arrive
        self._last_time = now
        self._stride = max(1, math.ceil(self._rate / self.config.max_update_rate))
        self._countdown = min(self._countdown, self._stride - 1)

    def _online(self, cvm_x: FloatArray, fet_x: FloatArray, first: int) -> list[DriftReport]:
        reports: list[DriftReport] = []
        n = len(cvm_x) if self._cvm is not None else len(fet_x)
        k = self._stride
        start = self._countdown
        for i in range(start, n, k):
            pos = first + i + 1
            fired: list[str] = []
            stats: dict[str, float] = {}
            thresholds: dict[str, float] = {}
            for name, det, x, cols in (
                ("cvm", self._cvm, cvm_x, self.layout.cvm),
                ("fet", self._fet, fet_x, self.fet_columns),
            ):
                if det is None or np.isnan(x[i]).any():
                    continue
                row = x[i] if name == "cvm" else np.concatenate([x[i], 1.0 - x[i]])
                with _numpy_global_rng(self._rng):
                    out = det.predict(row)
                _trim(det)
                st = np.asarray(out["data"]["test_stat"], dtype=np.float64)
                th = np.asarray(out["data"]["threshold"], dtype=np.float64).ravel()
                per = (
                    np.nanmax(st, axis=0)
                    if st.size and not np.isnan(st).all()
                    else np.zeros(st.shape[-1])
                )
                if name == "fet":  # x and 1 - x: report the larger side per column
                    half = len(cols)
                    per2 = np.maximum(per[:half], per[half:])
                    th2 = np.minimum(th[:half], th[half:]) if len(th) > 1 else np.repeat(th, half)
                else:
                    per2, th2 = per, np.broadcast_to(th, per.shape)
                for c, s, t in zip(cols, per2, th2, strict=True):
                    if math.isfinite(float(t)):  # NaN until the window is full
                        stats[c], thresholds[c] = float(np.nan_to_num(s)), float(t)
                if out["data"]["is_drift"]:
                    fired.append(name)
                    det.reset_state()
            self.fed += 1
            self._fed_since_reset += 1
            if stats:
                self._last_online = {c: (stats[c], thresholds[c]) for c in stats}
            if fired:
                self.alarms += 1
                reports.append(self._online_report(pos, True, fired))
            if self._fed_since_reset >= self.config.ert:
                for det in (self._cvm, self._fet):
                    if det is not None:
                        det.reset_state()
                self._fed_since_reset = 0
        self._countdown = start - n if start >= n else (start + ((n - 1 - start) // k + 1) * k) - n
        return reports

    def _online_report(self, position: int, drift: bool, fired: Sequence[str]) -> DriftReport:
        stats = {c: s for c, (s, _) in self._last_online.items()}
        thresholds = {c: t for c, (_, t) in self._last_online.items()}
        ratios = [s / t for s, t in self._last_online.values() if t > 0 and math.isfinite(t)]
        score = max(ratios, default=0.0)
        return DriftReport(
            detector="alibi." + "+".join(fired) + "_online" if fired else "alibi.online",
            drift=drift,
            statistics=stats,
            thresholds=thresholds,
            p_values={},
            drifted_features=[c for c, (s, t) in self._last_online.items() if s > t],
            window=min(self.config.window, self.fed),
            position=position,
            score=score,
            threshold=1.0,
        )

    # -- port ------------------------------------------------------------------------------------

    def update(
        self, rows: Sequence[Mapping[str, Any]], scores: Sequence[float | None]
    ) -> list[DriftReport]:
        """Feed a batch; reports: window tests, online alarms, an online status every step rows."""
        cols = self._encoder.encode(rows, scores)
        first = self.seen
        n = len(rows)
        reports: list[DriftReport] = []
        if self._dets:
            reports += self._windows(
                _matrix_keep_negative(cols, self.layout.window, self._kinds), first
            )
        if self._cvm is not None or self._fet is not None:
            self._adapt_stride(n)
            cvm_x = _matrix_keep_negative(cols, self.layout.cvm, self._kinds)
            fet_x = _matrix_keep_negative(cols, self.fet_columns, self._kinds)
            reports += self._online(cvm_x, fet_x, first)
            self._since_status += n
            if self._since_status >= self.config.step and self._last_online:
                self._since_status = 0
                reports.append(self._online_report(first + n, False, []))
        self.seen = first + n
        return sorted(reports, key=lambda r: r.position)

    def state_bytes(self) -> bytes:
        """Counters, windows and the online detectors' last ``window`` fed rows."""
        meta: dict[str, Any] = {
            "key": self._key,
            "seen": self.seen,
            "fed": self.fed,
            "alarms": self.alarms,
            "head": self._head,
            "since": self._since,
            "stride": self._stride,
            "countdown": self._countdown,
            "rate": self._rate,
            "measured": self._measured,
            "since_status": self._since_status,
            "fed_since_reset": self._fed_since_reset,
            "rng": _rng_to_json(self._rng["rng"]),
            "last_online": {c: list(v) for c, v in self._last_online.items()},
        }
        arrays: dict[str, npt.NDArray[Any]] = {"buf": self._buf}
        for name, det in (("cvm", self._cvm), ("fet", self._fet)):
            if det is None:
                continue
            meta[f"{name}_t"] = int(det.t)
            if det.t > 0:
                arrays[f"{name}_xs"] = np.asarray(det.xs, dtype=np.float64)
                arrays[f"{name}_stats"] = np.asarray(det.test_stats[-1:])
        return codec.pack(meta, arrays)

    def _load(self, state: bytes) -> None:
        meta, arrays = codec.unpack(state)
        if meta["key"] != self._key:
            raise ValueError("detector state belongs to another calibration")
        self.seen, self.fed, self.alarms = int(meta["seen"]), int(meta["fed"]), int(meta["alarms"])
        self._head, self._since = int(meta["head"]), int(meta["since"])
        self._stride, self._rate = int(meta["stride"]), float(meta["rate"])
        self._countdown = int(meta["countdown"])
        self._measured = bool(meta["measured"])
        self._since_status = int(meta["since_status"])
        self._fed_since_reset = int(meta["fed_since_reset"])
        self._rng = {"rng": _rng_from_json(meta["rng"])}
        self._last_online = {c: (float(v[0]), float(v[1])) for c, v in meta["last_online"].items()}
        self._buf = arrays["buf"]
        for name, det in (("cvm", self._cvm), ("fet", self._fet)):
            if det is None:
                continue
            det.reset_state()
            t = int(meta[f"{name}_t"])
            if t == 0:
                continue
            xs = arrays[f"{name}_xs"]
            det.t = t
            det.xs = xs
            det.test_stats = arrays[f"{name}_stats"]
            det.drift_preds = np.array([])
            if name == "cvm":
                _rebuild_cvm(det, xs)
