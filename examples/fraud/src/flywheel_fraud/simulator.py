"""A deterministic stream of labelled card transactions, with drift that can be switched on.

`FraudSimulator` produces JSON-ready records that satisfy the ``transactions`` contract in
``examples/fraud/flywheel.yaml``. Features are drawn from a market model (merchant mix,
customer spend level, online share, ...) and the fraud label from a logistic "fraud
pattern" over those features, with an intercept calibrated so that the fraud rate is
``fraud_rate`` in every regime.

Two kinds of drift can start once ``drift_at`` records have been emitted:

* **covariate** -- the market changes: larger amounts and spend levels, longer distances,
  more online, foreign and late-night shopping, younger accounts, a merchant mix tilted to
  electronics and digital goods. The fraud pattern is unchanged.
* **concept** -- fraudsters change tactics: from large online purchases with far-away,
  foreign cards at night to small, card-present purchases with skimmed cards of
  established customers, near home, at fuel stations and restaurants. The features are
  unchanged; a model trained before the switch ranks the new fraud as safe.
* **both** -- the two at once.

Records are generated in fixed blocks of indices, each from its own random stream, so the
output depends only on the constructor arguments and the record index: the same seed gives
the same records however they are split into batches, and a drifting simulator emits
exactly the records of a non-drifting one before ``drift_at``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import numpy.typing as npt

Drift = Literal["none", "covariate", "concept", "both"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Columns = dict[str, npt.NDArray[Any]]

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "fuel",
    "restaurant",
    "retail",
    "electronics",
    "travel",
    "digital_goods",
    "jewelry",
)
FEATURES: tuple[str, ...] = (
    "amount",
    "avg_amount_30d",
    "distance_from_home_km",
    "minutes_since_last_tx",
    "hour",
    "tx_count_24h",
    "account_age_days",
    "card_present",
    "foreign",
    "merchant_category",
)

MAX_AMOUNT = 25_000.0
MAX_AVG_AMOUNT = 10_000.0
MAX_DISTANCE_KM = 20_000.0
MAX_MINUTES_SINCE_LAST = 43_200.0
MAX_TX_COUNT = 200
MAX_ACCOUNT_AGE_DAYS = 36_500

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)

_BLOCK = 2048
_CALIBRATION_ROWS = 200_000
_CALIBRATION_SEED = 20_250_101
_UNIFORMS = 6
_NORMALS = 5


@dataclass(frozen=True)
class _Market:
    """Parameters of the feature distribution in one regime."""

    category_p: tuple[float, ...]
    card_present_p: tuple[float, ...]
    foreign_p: float
    foreign_p_travel: float
    avg_amount_median: float
    amount_factor: float
    distance_factor: float
    hour_weights: tuple[float, ...]
    tx_rate: float
    account_age_median: float


_HOURS_0_11 = (1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4.0, 5.0, 5.5, 6.0)
_HOURS_12_23 = (7.0, 6.5, 6.0, 6.0, 6.5, 7.0, 7.5, 7.0, 6.0, 4.5, 3.0, 2.0)

_BASE = _Market(
    category_p=(0.24, 0.12, 0.18, 0.18, 0.07, 0.05, 0.12, 0.04),
    card_present_p=(0.92, 0.95, 0.88, 0.70, 0.50, 0.30, 0.0, 0.65),
    foreign_p=0.03,
    foreign_p_travel=0.25,
    avg_amount_median=60.0,
    amount_factor=1.0,
    distance_factor=1.0,
    hour_weights=_HOURS_0_11 + _HOURS_12_23,
    tx_rate=2.5,
    account_age_median=1100.0,
)
_SHIFTED = _Market(
    category_p=(0.14, 0.07, 0.12, 0.15, 0.17, 0.08, 0.21, 0.06),
    card_present_p=(0.60, 0.70, 0.55, 0.35, 0.20, 0.15, 0.0, 0.35),
    foreign_p=0.10,
    foreign_p_travel=0.45,
    avg_amount_median=95.0,
    amount_factor=1.6,
    distance_factor=3.0,
    hour_weights=tuple(np.roll(np.array(_HOURS_0_11 + _HOURS_12_23), 3).tolist()),
    tx_rate=4.5,
    account_age_median=450.0,
)

# Median purchase relative to the customer's 30-day average, per merchant category.
_AMOUNT_MULTIPLIER = np.array([0.9, 0.8, 0.6, 1.2, 3.0, 4.0, 0.4, 5.0])

# Per-category log-odds of the fraud pattern before and after a concept drift.
_RISK_OLD = np.array([-0.6, -0.3, -0.4, 0.1, 1.0, 0.5, 0.8, 1.2])
_RISK_NEW = np.array([0.3, 1.5, 1.0, 0.0, -0.8, -0.6, -1.0, -0.5])


def _pick(shifted: BoolArray, before: float, after: float) -> FloatArray:
    return np.where(shifted, after, before).astype(np.float64)


def _inverse_cdf(u: FloatArray, weights: FloatArray) -> IntArray:
    """Index drawn with probability ``weights[i]`` for each uniform in ``u``."""
    cdf = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(weights) - 1).astype(np.int64)


def _poisson_quantile(u: FloatArray, rate: float) -> IntArray:
    """Poisson(rate) draws by inversion, so each record uses exactly one uniform."""
    k = np.arange(MAX_TX_COUNT + 1, dtype=np.float64)
    log_pmf = k * np.log(rate) - rate - np.cumsum(np.log(np.maximum(k, 1.0)))
    return _inverse_cdf(u, np.exp(log_pmf))


def _features(rng: np.random.Generator, shifted: BoolArray) -> Columns:
    """Draw one block of features; rows where ``shifted`` is true follow the drifted market.

    The number of draws does not depend on ``shifted``, so unshifted rows are identical
    whatever the mask.
    """
    n = len(shifted)
    u = rng.random((_UNIFORMS, n))
    z = rng.standard_normal((_NORMALS, n))
    gap = rng.standard_exponential(n)

    category = np.empty(n, dtype=np.int64)
    hour = np.empty(n, dtype=np.int64)
    tx_count = np.empty(n, dtype=np.int64)
    card_present_p = np.empty(n, dtype=np.float64)
    for market, rows in ((_BASE, ~shifted), (_SHIFTED, shifted)):
        if not rows.any():
            continue
        category[rows] = _inverse_cdf(u[0, rows], np.array(market.category_p))
        hour[rows] = _inverse_cdf(u[1, rows], np.array(market.hour_weights))
        tx_count[rows] = _poisson_quantile(u[2, rows], market.tx_rate)
        card_present_p[rows] = np.array(market.card_present_p)[category[rows]]

    card_present = u[3] < card_present_p
    travel = category == MERCHANT_CATEGORIES.index("travel")
    foreign_p = np.where(
        travel,
        _pick(shifted, _BASE.foreign_p_travel, _SHIFTED.foreign_p_travel),
        _pick(shifted, _BASE.foreign_p, _SHIFTED.foreign_p),
    )
    foreign = u[4] < foreign_p

    avg_median = _pick(shifted, _BASE.avg_amount_median, _SHIFTED.avg_amount_median)
    avg_amount = np.clip(avg_median * np.exp(0.6 * z[0]), 1.0, MAX_AVG_AMOUNT)

    amount_factor = _pick(shifted, _BASE.amount_factor, _SHIFTED.amount_factor)
    amount = avg_amount * _AMOUNT_MULTIPLIER[category] * amount_factor * np.exp(0.8 * z[1])
    amount = np.clip(amount, 0.5, MAX_AMOUNT)

    local_km = np.where(card_present, 6.0 * np.exp(1.0 * z[2]), 40.0 * np.exp(1.2 * z[2]))
    abroad_km = np.where(foreign, 2000.0 * np.exp(0.6 * z[3]), 0.0)
    distance_factor = _pick(shifted, _BASE.distance_factor, _SHIFTED.distance_factor)
    distance = np.clip((local_km + abroad_km) * distance_factor, 0.0, MAX_DISTANCE_KM)

    minutes = np.clip(gap * 1440.0 / (tx_count + 0.5), 0.0, MAX_MINUTES_SINCE_LAST)

    age_median = _pick(shifted, _BASE.account_age_median, _SHIFTED.account_age_median)
    account_age = np.clip(np.floor(age_median * np.exp(0.9 * z[4])), 0, MAX_ACCOUNT_AGE_DAYS)

    return {
        "amount": np.round(amount, 2),
        "avg_amount_30d": np.round(avg_amount, 2),
        "distance_from_home_km": np.round(distance, 2),
        "minutes_since_last_tx": np.round(minutes, 2),
        "hour": hour,
        "tx_count_24h": tx_count,
        "account_age_days": account_age.astype(np.int64),
        "card_present": card_present,
        "foreign": foreign,
        "merchant_category": category,
        "label_uniform": u[5],
    }


def _log_spend_ratio(c: Columns) -> FloatArray:
    ratio: FloatArray = np.log1p(c["amount"]) - np.log1p(c["avg_amount_30d"])
    return ratio


def _old_pattern(c: Columns) -> FloatArray:
    """Card-not-present fraud: big unusual purchases, far away, abroad, at night, new cards."""
    night = c["hour"] <= 5
    score: FloatArray = (
        1.0 * _log_spend_ratio(c)
        + 1.1 * c["foreign"]
        + 1.0 * ~c["card_present"]
        + 0.3 * np.log1p(c["distance_from_home_km"])
        + 1.3 * night
        + 0.1 * np.minimum(c["tx_count_24h"], 20)
        - 0.2 * np.log1p(c["minutes_since_last_tx"])
        - 0.4 * np.log1p(c["account_age_days"] / 30.0)
        + _RISK_OLD[c["merchant_category"]]
    )
    return score


def _new_pattern(c: Columns) -> FloatArray:
    """Skimmed cards used in person: small domestic purchases near home, in quick bursts."""
    afternoon = (c["hour"] >= 14) & (c["hour"] <= 20)
    score: FloatArray = (
        -1.4 * _log_spend_ratio(c)
        - 0.8 * c["foreign"]
        + 2.6 * c["card_present"]
        - 0.4 * np.log1p(c["distance_from_home_km"])
        + 1.2 * afternoon
        + 0.15 * np.minimum(c["tx_count_24h"], 20)
        - 0.35 * np.log1p(c["minutes_since_last_tx"])
        + 0.4 * np.log1p(c["account_age_days"] / 30.0)
        + 1.3 * _RISK_NEW[c["merchant_category"]]
    )
    return score


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


@lru_cache(maxsize=32)
def _intercept(shifted: bool, new_pattern: bool, fraud_rate: float) -> float:
    """Intercept that makes the mean fraud probability ``fraud_rate`` in a regime."""
    rng = np.random.default_rng(_CALIBRATION_SEED)
    columns = _features(rng, np.full(_CALIBRATION_ROWS, shifted))
    score = (_new_pattern if new_pattern else _old_pattern)(columns)
    lo, hi = -40.0, 40.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(_sigmoid(score + mid).mean()) < fraud_rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class FraudSimulator:
    """Labelled card transactions for the ``transactions`` dataset, optionally drifting.

    Deterministic given its arguments; does no I/O. ``start`` defaults to a fixed instant
    (2025-01-01T00:00:00Z) so that output is reproducible; pass ``datetime.now(UTC)`` for a
    live-looking stream.
    """

    dataset: ClassVar[str] = "transactions"
    label_field: ClassVar[str] = "is_fraud"
    id_field: ClassVar[str] = "transaction_id"
    time_field: ClassVar[str] = "event_time"
    features: ClassVar[tuple[str, ...]] = FEATURES

    def __init__(
        self,
        *,
        seed: int = 0,
        drift_at: int | None = None,
        drift: Drift = "none",
        fraud_rate: float = 0.02,
        start: datetime | None = None,
        rate_per_s: float = 100.0,
    ) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if drift not in get_args(Drift):
            raise ValueError(f"drift must be one of {get_args(Drift)}, got {drift!r}")
        if drift_at is not None and drift_at < 0:
            raise ValueError(f"drift_at must be >= 0, got {drift_at}")
        if not 0.0 < fraud_rate < 1.0:
            raise ValueError(f"fraud_rate must be in (0, 1), got {fraud_rate}")
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        self.seed = seed
        self.drift_at = drift_at
        self.drift: Drift = drift
        self.fraud_rate = float(fraud_rate)
        start = DEFAULT_START if start is None else start
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.start = start.astimezone(UTC)
        self.rate_per_s = float(rate_per_s)
        self.emitted = 0
        self._block: tuple[int, Columns] | None = None

    @property
    def covariate_drift(self) -> bool:
        """Whether the drift, once on, shifts the feature distributions."""
        return self.drift in ("covariate", "both")

    @property
    def concept_drift(self) -> bool:
        """Whether the drift, once on, changes the fraud pattern."""
        return self.drift in ("concept", "both")

    @property
    def drifting(self) -> bool:
        """Whether the next record is generated under drift."""
        return self.drift != "none" and self.drift_at is not None and self.emitted >= self.drift_at

    def start_drift(self, drift: Drift | None = None) -> int:
        """Switch the drift on from the next record (``drift``: its kind, default the
        constructor's); returns that record's index, the new ``drift_at``."""
        if drift is not None:
            if drift not in get_args(Drift):
                raise ValueError(f"drift must be one of {get_args(Drift)}, got {drift!r}")
            self.drift = drift
        self.drift_at = self.emitted
        self._block = None  # the current block was drawn before the switch
        return self.emitted

    def batch(self, n: int) -> list[dict[str, Any]]:
        """Return the next ``n`` records, fully labelled, and advance ``emitted``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        first = self.emitted
        parts: list[Columns] = []
        index = first
        while index < first + n:
            block_no, offset = divmod(index, _BLOCK)
            take = min(_BLOCK - offset, first + n - index)
            block = self._columns(block_no)
            parts.append({k: v[offset : offset + take] for k, v in block.items()})
            index += take
        self.emitted = first + n
        if not parts:
            return []
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return self._records(first, cols)

    def _drifted(self, indices: IntArray) -> BoolArray:
        if self.drift == "none" or self.drift_at is None:
            return np.zeros(len(indices), dtype=np.bool_)
        return indices >= self.drift_at

    def _columns(self, block_no: int) -> Columns:
        if self._block is not None and self._block[0] == block_no:
            return self._block[1]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, block_no]))
        indices = np.arange(block_no * _BLOCK, (block_no + 1) * _BLOCK, dtype=np.int64)
        drifted = self._drifted(indices)
        shifted = drifted & self.covariate_drift
        new_pattern = drifted & self.concept_drift
        cols = _features(rng, shifted)

        logit = np.empty(_BLOCK, dtype=np.float64)
        patterns: tuple[tuple[bool, Callable[[Columns], FloatArray]], ...] = (
            (False, _old_pattern),
            (True, _new_pattern),
        )
        for is_new, pattern in patterns:
            rows_pattern = new_pattern == is_new
            if not rows_pattern.any():
                continue
            score = pattern(cols)
            for is_shifted in (False, True):
                rows = rows_pattern & (shifted == is_shifted)
                if rows.any():
                    logit[rows] = score[rows] + _intercept(is_shifted, is_new, self.fraud_rate)
        cols["is_fraud"] = cols.pop("label_uniform") < _sigmoid(logit)
        self._block = (block_no, cols)
        return cols

    def _records(self, first: int, cols: Columns) -> list[dict[str, Any]]:
        n = len(cols["amount"])
        indices = np.arange(first, first + n, dtype=np.int64)
        origin = np.datetime64(self.start.replace(tzinfo=None), "us")
        offsets = np.round(indices * (1e6 / self.rate_per_s)).astype("timedelta64[us]")
        times = [f"{t}Z" for t in np.datetime_as_string(origin + offsets, unit="us")]
        ids = [f"tx-{self.seed}-{i}" for i in indices.tolist()]
        categories = [MERCHANT_CATEGORIES[c] for c in cols["merchant_category"].tolist()]
        columns: list[list[Any]] = [
            ids,
            times,
            *(cols[f].tolist() for f in FEATURES[:-1]),
            categories,
            cols["is_fraud"].tolist(),
        ]
        keys = (self.id_field, self.time_field, *FEATURES, self.label_field)
        return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
