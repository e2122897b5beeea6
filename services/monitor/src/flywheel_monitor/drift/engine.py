"""Backend dispatch: calibrate a reference, build a detector from a calibration.

``alibi_backend`` is imported only when a calibration asks for it: alibi-detect is an optional,
BSL-licensed dependency and takes seconds to import.
"""

from __future__ import annotations

import pandas as pd

from .base import Detector
from .calibration import Calibration
from .config import DriftConfig


def calibrate(reference: pd.DataFrame, config: DriftConfig) -> Calibration:
    """Calibrate the configured backend on a reference sample.

    Slow and CPU-bound (seconds for the permissive backend, minutes for alibi with large
    ``n_bootstrap``): run it in a separate process. Deterministic given ``config.seed``.
    """
    if config.backend == "alibi":
        from .alibi_backend import calibrate_alibi

        return calibrate_alibi(reference, config)
    from .permissive import calibrate_permissive

    return calibrate_permissive(reference, config)


def make_detector(cal: Calibration, state: bytes | None = None) -> Detector:
    """A detector from a calibration (no recalibration), restored from ``state`` if given."""
    if cal.config.backend == "alibi":
        from .alibi_backend import AlibiDetector

        return AlibiDetector(cal, state)
    from .permissive import PermissiveDetector

    return PermissiveDetector(cal, state)
