"""The monitor's drift engine: one interface, two backends.

* ``permissive`` (default; numpy/scipy/river): calibrated sliding-window two-sample tests
  (Cramér-von Mises or Kolmogorov-Smirnov, chi-square) with one joint bootstrap threshold, plus
  ADWIN on the score stream. See :mod:`.permissive`.
* ``alibi`` (optional, BSL-1.1): alibi-detect's online CVM/FET detectors or its batch tests, with
  thresholds stored in the calibration so that loading never recalibrates. See
  :mod:`.alibi_backend`.

Use: ``cal = calibrate(reference_frame, config_from_spec(spec))`` (in a worker process), store
``cal.to_bytes()`` under ``cal.key``; then ``det = make_detector(Calibration.from_bytes(b), state)``
and ``det.update(rows, scores)`` per batch, keeping ``det.state_bytes()``.
"""

from .base import Detector, DriftReport
from .calibration import Calibration
from .config import SCORE, DriftConfig, FeatureKind, alibi_available, config_from_spec
from .engine import calibrate, make_detector

__all__ = [
    "SCORE",
    "Calibration",
    "Detector",
    "DriftConfig",
    "DriftReport",
    "FeatureKind",
    "alibi_available",
    "calibrate",
    "config_from_spec",
    "make_detector",
]
