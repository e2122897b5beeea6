"""The alibi backend's online detectors, restored from a calibration without simulations.

Part of the optional alibi-detect backend (see :mod:`.alibi_backend`, "Thresholds are stored,
never recomputed" and "Cost, sampling and state").
"""

from __future__ import annotations

from typing import Any

from alibi_detect.cd import CVMDriftOnline, FETDriftOnline

from .alibi_columns import FloatArray


class _PresetCVM(CVMDriftOnline):
    """``CVMDriftOnline`` whose thresholds come from a calibration instead of simulations."""

    _preset: FloatArray

    def _configure_thresholds(self) -> None:
        self.thresholds = self._preset.copy()


class _PresetFET(FETDriftOnline):
    """``FETDriftOnline`` whose thresholds come from a calibration instead of simulations."""

    _preset: FloatArray
    _preset_permit: FloatArray

    def _configure_thresholds(self) -> None:
        self.thresholds = self._preset.copy()
        self.permit_probs = self._preset_permit.copy()


def _build(cls: type[Any], preset: dict[str, FloatArray], *args: Any, **kwargs: Any) -> Any:
    obj = object.__new__(cls)
    for name, value in preset.items():
        setattr(obj, name, value)
    obj.__init__(*args, **kwargs)
    return obj


def restored(
    cls: type[Any], preset: dict[str, FloatArray], x_ref: FloatArray, ert: int, window: int
) -> Any:
    """An online detector of class ``cls`` on ``x_ref`` with the stored thresholds ``preset``."""
    return _build(cls, preset, x_ref, ert=ert, window_sizes=[window], n_bootstraps=1, verbose=False)


def _trim(det: Any) -> None:
    """Drop the online state alibi keeps but never reads again (it grows with every row)."""
    keep = int(det.max_ws)
    if len(det.xs) > keep:
        det.xs = det.xs[-keep:]
    if len(det.test_stats) > 1:
        det.test_stats = det.test_stats[-1:]
    if len(det.drift_preds) > 1:
        det.drift_preds = det.drift_preds[-1:]


def _rebuild_cvm(det: Any, xs: FloatArray) -> None:
    """CVMDriftOnline's comparison matrices, rebuilt from its window ``xs``."""
    x_ref = det.x_ref
    det.ids_ref_wins = xs[None, :, :] >= x_ref[:, None, :]
    det.ids_wins_ref = xs[:, None, :] <= x_ref[None, :, :]
    det.ids_wins_wins = xs[None, :, :] >= xs[:, None, :]
