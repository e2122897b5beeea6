"""Calibration of the alibi backend: simulated online thresholds, bootstrapped window tests.

Part of the optional alibi-detect backend (see :mod:`.alibi_backend` for the method).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from alibi_detect.cd import CVMDriftOnline, FETDriftOnline

from .alibi_columns import (
    FloatArray,
    _complete,
    _joint,
    _Layout,
    _matrix_keep_negative,
    _numpy_global_rng,
    _rng_to_json,
    _seeded_rng_state,
    _window_detectors,
    _window_p_values,
)
from .calibration import Calibration
from .config import DriftConfig
from .encoding import encode_reference
from .histograms import _joint_threshold

_BOOL_MEMORY = 2**27  # bytes of boolean comparisons per CVM simulation batch


def _sizes(config: DriftConfig, categories: Mapping[str, Sequence[str]]) -> dict[str, int]:
    out = {}
    for c in config.columns:
        kind = config.kind(c)
        if kind == "binary":
            out[c] = 2
        elif kind == "categorical":
            out[c] = len(categories[c]) + 1
    return out


def _n_online(layout: _Layout) -> int:
    return int(bool(layout.cvm)) + int(bool(layout.fet)) + int(bool(layout.window))


def _fet_columns(layout: _Layout, ref_bin: FloatArray) -> list[int]:
    """Binary columns FET can calibrate (not constant in the reference)."""
    keep = []
    for j in range(ref_bin.shape[1]):
        x = ref_bin[:, j]
        x = x[~np.isnan(x)]
        if len(x) and 0 < x.mean() < 1:
            keep.append(j)
    return keep


def _two_sided(x: FloatArray) -> FloatArray:
    return np.concatenate([x, 1.0 - x], axis=1)


def _supported_ert(ert: int, n_bootstrap: int, d: int, window: int) -> int:
    """The largest ERT (≤ ``ert``) alibi can calibrate with ``n_bootstrap`` streams, d features.

    alibi targets the 1 - β quantile, β ≈ 1/(ERT·d), at each of ``window`` time steps, drops the
    streams that crossed, and refuses once fewer than 1/β remain: it needs
    ``n_bootstrap ≥ x·e^(window/x)`` with x = ERT·d (times 1.5 here, for headroom).
    """
    d = max(d, 1)

    def needed(x: float) -> float:
        return 1.5 * x * math.exp(min(window / x, 700.0))

    if needed(ert * d) <= n_bootstrap:
        return ert
    if needed(window) > n_bootstrap:
        raise ValueError(
            f"n_bootstrap={n_bootstrap} is too small for an alibi online detector with window "
            f"{window}: it needs at least {math.ceil(needed(window))}"
        )
    lo, hi = float(window), float(ert * d)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if needed(mid) <= n_bootstrap else (lo, mid)
    return max(2, int(lo // d))


def _simulated(
    cls: type[Any],
    x_ref: FloatArray,
    ert: int,
    config: DriftConfig,
    rng_state: dict[str, Any],
    **kwargs: Any,
) -> tuple[int, Any]:
    """(ERT calibrated, detector): an online detector whose thresholds alibi simulates now."""
    supported = _supported_ert(ert, config.n_bootstrap, x_ref.shape[1], config.window)
    with _numpy_global_rng(rng_state):
        det = cls(
            x_ref,
            ert=supported,
            window_sizes=[config.window],
            n_bootstraps=config.n_bootstrap,
            verbose=False,
            **kwargs,
        )
    return supported, det


def calibrate_alibi(reference: pd.DataFrame, config: DriftConfig) -> Calibration:
    """Calibrate the alibi backend (deterministic given ``config.seed``)."""
    cols, categories = encode_reference(reference, config)
    layout = _Layout(config)
    kinds = {c: config.kind(c) for c in config.columns}
    sizes = _sizes(config, categories)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xA11B0]))
    arrays: dict[str, npt.NDArray[Any]] = {}
    values: dict[str, Any] = {"sizes": sizes}
    k_online = _n_online(layout) if config.mode == "online" else 1
    ert_sub = config.ert * k_online
    values["ert_sub"] = ert_sub
    rng_state = {"rng": _seeded_rng_state(config.seed)}

    def subsample(x: FloatArray) -> FloatArray:
        x = _complete(x)
        if len(x) > config.n_ref:
            x = x[np.sort(rng.choice(len(x), config.n_ref, replace=False))]
        return x

    if layout.cvm:
        x_ref = subsample(_matrix_keep_negative(cols, layout.cvm, kinds))
        total = len(x_ref) + 2 * config.window
        batch = max(1, min(64, _BOOL_MEMORY // (total * total)))
        values["cvm_ert"], det = _simulated(
            CVMDriftOnline, x_ref, ert_sub, config, rng_state, batch_size=batch
        )
        arrays["cvm/x_ref"] = x_ref
        arrays["cvm/thresholds"] = np.asarray(det.thresholds, dtype=np.float64)
    if layout.fet:
        ref_bin = _matrix_keep_negative(cols, layout.fet, kinds)
        keep = _fet_columns(layout, ref_bin)
        values["fet_columns"] = [layout.fet[j] for j in keep]
        if keep:
            x_ref = _two_sided(subsample(ref_bin[:, keep]))
            values["fet_ert"], det = _simulated(FETDriftOnline, x_ref, ert_sub, config, rng_state)
            arrays["fet/x_ref"] = x_ref
            arrays["fet/thresholds"] = np.asarray(det.thresholds)
            arrays["fet/permit_probs"] = np.asarray(det.permit_probs, dtype=np.float64)
    if layout.window:
        ref = _matrix_keep_negative(cols, layout.window, kinds)
        dets = _window_detectors(config, layout, ref)
        n = len(ref)
        null = np.empty(config.n_bootstrap)
        for b in range(config.n_bootstrap):
            pseudo = ref[rng.integers(0, n, n)]
            win = ref[rng.integers(0, n, config.window)]
            refs = [_complete(pseudo[:, idx]) for idx, _ in dets]
            null[b] = _joint(_window_p_values(dets, refs, win, len(layout.window)))
        if config.mode == "batch":
            alpha = min(config.p_value, config.step / config.ert)
        else:
            alpha = config.step / ert_sub
        values["window_alpha"] = alpha
        values["window_threshold"] = _joint_threshold(null, alpha)
    values["rng"] = _rng_to_json(rng_state["rng"])
    return Calibration.of_reference(config, cols, categories, arrays, values)
