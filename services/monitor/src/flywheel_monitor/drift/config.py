"""Drift configuration: what to monitor, how, and how strictly.

A :class:`DriftConfig` is plain, JSON-serialisable data. It is derived from a model spec's
``drift`` section once (:func:`config_from_spec`), hashed into the calibration key, and shipped
to the calibration process as a dict.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from flywheel_shared.spec import FieldType, ModelSpec

FeatureKind = Literal["continuous", "binary", "categorical"]
Backend = Literal["permissive", "alibi"]
Mode = Literal["online", "batch"]

SCORE = "_score"
"""Name of the model-score column: monitored as a continuous column (prediction drift)."""

_KIND_OF: dict[FieldType, FeatureKind] = {
    FieldType.INT: "continuous",
    FieldType.FLOAT: "continuous",
    FieldType.BOOL: "binary",
    FieldType.CATEGORY: "categorical",
    FieldType.STRING: "categorical",
}

# Defaults of n_bootstrap per backend. The permissive bootstrap is vectorised (≈ 8 s of CPU for
# 10^5 draws, 11 columns). alibi-detect's online calibration simulates streams one by one:
# with window 500 it needs n_bootstrap ≥ 2040 at all, 10^4 calibrate an ERT of ≈ 600 rows for
# 9 continuous columns and take minutes (FET ≈ 35 s per 10^4 per doubled binary column; see
# alibi_backend). Tests override both with small values.
DEFAULT_BOOTSTRAP: dict[Backend, int] = {"permissive": 100_000, "alibi": 10_000}


@dataclass(frozen=True)
class DriftConfig:
    """Everything that determines a calibration and a detector's behaviour.

    ``features`` are the monitored model features (``_score`` is added by the engine as a
    continuous column); ``kinds`` maps each feature to its test family. ``window`` rows are
    tested every ``step`` rows; ``ert`` is the spec's expected run time between false alarms
    (rows); ``p_value`` the per-window false-alarm probability of batch tests (calibrated, not
    nominal); ``max_update_rate`` caps the rows per second fed to alibi's online detectors.
    """

    backend: Backend
    mode: Mode
    features: tuple[str, ...]
    kinds: dict[str, FeatureKind]
    window: int = 500
    step: int = 50
    ert: int = 5000
    p_value: float = 0.01
    n_bootstrap: int = DEFAULT_BOOTSTRAP["permissive"]
    seed: int = 0
    max_update_rate: float = 50.0
    continuous_test: Literal["cvm", "ks"] = "cvm"
    binary_test: Literal["fet", "chi2"] = "fet"
    categorical_test: Literal["chi2", "tabular"] = "chi2"
    n_bins: int = 64
    """Permissive: continuous columns are tested on at most this many reference-quantile bins."""
    score_detector: Literal["page_hinkley", "adwin", "none"] = "page_hinkley"
    """Sequential change detector on the score stream, reported as a second detector."""
    score_delta: float = 1e-5
    """ADWIN's confidence parameter (score_detector="adwin" only)."""
    n_ref: int = 500
    """alibi online: the reference is subsampled to this many rows (update cost ∝ n_ref)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific knobs (JSON values); part of the calibration key."""

    def __post_init__(self) -> None:
        if self.backend not in ("permissive", "alibi"):
            raise ValueError(f"backend must be 'permissive' or 'alibi', got {self.backend!r}")
        if self.mode not in ("online", "batch"):
            raise ValueError(f"mode must be 'online' or 'batch', got {self.mode!r}")
        if not self.features:
            raise ValueError("no features to monitor")
        missing = [f for f in self.features if f not in self.kinds]
        if missing:
            raise ValueError(f"features without a kind: {missing}")
        bad = {
            f: k for f, k in self.kinds.items() if k not in ("continuous", "binary", "categorical")
        }
        if bad:
            raise ValueError(f"unknown feature kinds: {bad}")
        if SCORE in self.features:
            raise ValueError(f"{SCORE!r} is reserved for the model score")
        if self.window < 10:
            raise ValueError(f"window must be >= 10, got {self.window}")
        if not 1 <= self.step <= self.window:
            raise ValueError(f"step must be in [1, window], got {self.step}")
        if self.ert < 1:
            raise ValueError(f"ert must be >= 1, got {self.ert}")
        if not 0 < self.p_value < 1:
            raise ValueError(f"p_value must be in (0, 1), got {self.p_value}")
        if self.n_bootstrap < 10:
            raise ValueError(f"n_bootstrap must be >= 10, got {self.n_bootstrap}")
        if not self.max_update_rate > 0:
            raise ValueError(
                f"max_update_rate must be > 0 (inf: feed every row), got {self.max_update_rate}"
            )
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")

    @property
    def columns(self) -> tuple[str, ...]:
        """Monitored columns: the features, then the score."""
        return (*self.features, SCORE)

    def kind(self, column: str) -> FeatureKind:
        """The test family of a monitored column."""
        return "continuous" if column == SCORE else self.kinds[column]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``inf`` as the string "inf"); inverse of :meth:`from_dict`."""
        data = asdict(self)
        data["features"] = list(self.features)
        data["kinds"] = {f: self.kinds[f] for f in self.features}
        if math.isinf(self.max_update_rate):
            data["max_update_rate"] = "inf"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown drift config keys: {sorted(unknown)}")
        values = dict(data)
        values["features"] = tuple(values["features"])
        values["kinds"] = dict(values["kinds"])
        if "max_update_rate" in values:
            values["max_update_rate"] = float(values["max_update_rate"])
        if "extra" in values:
            values["extra"] = dict(values["extra"])
        return cls(**values)


@functools.cache
def alibi_available() -> bool:
    """Whether ``import alibi_detect`` works (tried once per process; it takes ≈ 5 s)."""
    try:
        if importlib.util.find_spec("alibi_detect") is None:
            return False
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        importlib.import_module("alibi_detect")
    except Exception:  # a broken optional install must not take the monitor down
        return False
    return True


def config_from_spec(
    spec: ModelSpec,
    *,
    backend: Literal["auto", "permissive", "alibi"] = "auto",
    seed: int = 0,
    **overrides: Any,
) -> DriftConfig:
    """The drift configuration of a model spec.

    ``backend="auto"`` picks alibi-detect when it is importable, else the permissive engine.
    ``step`` defaults to ``window // 10`` online (sliding windows) and to ``window`` in batch
    mode (tumbling windows). ``overrides`` replace any :class:`DriftConfig` field.
    """
    chosen: Backend
    if backend == "auto":
        chosen = "alibi" if alibi_available() else "permissive"
    elif backend in ("permissive", "alibi"):
        chosen = backend
    else:
        raise ValueError(f"backend must be auto, permissive or alibi, got {backend!r}")
    d = spec.drift
    # Personal features are not monitored: serving logs only their keyed hash (or nothing),
    # and the trainer's reference sample leaves them out (see flywheel_shared.privacy).
    fields = spec.dataset.fields
    features = tuple(d.features) if d.features else tuple(spec.features)
    features = tuple(f for f in features if f not in fields or not fields[f].personal)
    kinds: dict[str, FeatureKind] = {}
    for f in features:
        if f not in spec.dataset.fields:
            raise ValueError(f"drift feature {f!r} is not a dataset field")
        ftype = spec.dataset.fields[f].type
        if ftype not in _KIND_OF:
            raise ValueError(f"drift feature {f!r} has type {ftype}, which cannot be monitored")
        kinds[f] = _KIND_OF[ftype]
    config = DriftConfig(
        backend=chosen,
        mode=d.mode,
        features=features,
        kinds=kinds,
        window=d.window,
        step=max(1, d.window // 10) if d.mode == "online" else d.window,
        ert=d.ert,
        p_value=d.p_value,
        n_bootstrap=DEFAULT_BOOTSTRAP[chosen],
        seed=seed,
        continuous_test=d.continuous,
        binary_test=d.binary,
        categorical_test=d.categorical,
    )
    if "window" in overrides and "step" not in overrides:
        window = int(overrides["window"])
        overrides["step"] = max(1, window // 10) if config.mode == "online" else window
    if "backend" in overrides and "n_bootstrap" not in overrides:
        overrides["n_bootstrap"] = DEFAULT_BOOTSTRAP[overrides["backend"]]
    return replace(config, **overrides) if overrides else config
