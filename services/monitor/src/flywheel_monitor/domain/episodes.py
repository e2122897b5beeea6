"""Retrain requests that do not storm: one persisted state machine per model.

Findings (one per closed window of a source: a drift detector, a live metric) feed
``EpisodeState.observe``. The rules, in the order they apply:

1. *Confirmation*: a source confirms when its current window alarms and at least
   ``confirm_k`` of its last ``confirm_m`` windows alarmed. A single noisy window does not.
2. *Episode*: the first confirmation opens an episode; the episode asks for ONE retrain,
   carrying the cause (drift event id, or the metric's name and value) and the correlation id
   of the watched version. While the episode is open, further alarms of any source emit
   nothing.
3. *Hysteresis*: the episode closes only when every source that alarmed in it has had
   ``clear_windows`` consecutive windows clearly back on the good side of its threshold
   (below ``clear_ratio * threshold`` when higher is worse; above ``threshold / clear_ratio``
   for a floor; or beyond the finding's own ``clear_threshold``). A window between the
   threshold and that bound resets the streak.
4. *Cooldown* (event time): no retrain within ``cooldown_s`` of the previous one, even in a
   new episode. The request is deferred, not lost: it goes out at the episode's first
   confirming window after the cooldown. An episode that clears before then closes without
   a request (the problem went away).
5. *New production*: ``on_new_production`` closes the episode and forgets all windows: a new
   model starts clean (the cooldown still counts from the last request).

Findings about an older version than the watched one are ignored; a newer version is adopted
as if ``on_new_production`` had been called (the alias event may arrive after its first
predictions). A finding for a window the source already reported is ignored, so redelivered
findings change nothing. Feed findings about the production version only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flywheel_shared.spec import ModelSpec

WindowId = int | str


@dataclass(frozen=True, kw_only=True)
class RetrainPolicy:
    """How many alarms confirm an episode, how it clears, and the spacing of retrains."""

    confirm_k: int = 2
    confirm_m: int = 3
    cooldown_s: float
    clear_windows: int = 3
    clear_ratio: float = 0.8

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_k <= self.confirm_m:
            raise ValueError(
                f"need 1 <= confirm_k <= confirm_m, got {self.confirm_k}, {self.confirm_m}"
            )
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {self.cooldown_s}")
        if self.clear_windows < 1:
            raise ValueError(f"clear_windows must be >= 1, got {self.clear_windows}")
        if not 0 < self.clear_ratio <= 1:
            raise ValueError(f"clear_ratio must be in (0, 1], got {self.clear_ratio}")

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> RetrainPolicy:
        """The spec's policy: cooldown from ``drift.cooldown_s``, the rest defaults."""
        return cls(cooldown_s=spec.drift.cooldown_s)


@dataclass(frozen=True)
class Finding:
    """One closed window of one source, judged against its threshold.

    ``higher_is_worse``: True for drift statistics and error-like metrics (alarm when
    ``value > threshold``), False for floors such as ``roc_auc >= 0.8`` or p-values
    (alarm when ``value < threshold``). ``alarm`` is the source's own verdict; ``value`` and
    ``threshold`` decide when the alarm has clearly cleared. Thresholds are positive.

    ``clear_threshold`` overrides the policy's relative rule for this source: the window is
    clear when ``value`` is below it (higher is worse) or above it (a floor). Metrics bounded
    by 1 need it: ``roc_auc >= 0.8`` would only clear above 0.8 / 0.8 = 1.0; pass e.g.
    ``1 - clear_ratio * (1 - floor)`` (0.84) instead.
    """

    kind: Literal["drift", "metric"]
    source: str
    window_id: WindowId
    alarm: bool
    value: float
    threshold: float
    at: float
    version: int
    cause_event_id: str | None = None
    correlation_id: str | None = None
    higher_is_worse: bool = True
    clear_threshold: float | None = None

    def clear_bound(self, ratio: float) -> float:
        """The value a window must be clearly beyond (below, or above for a floor) to clear."""
        if self.clear_threshold is not None:
            return self.clear_threshold
        return ratio * self.threshold if self.higher_is_worse else self.threshold / ratio

    def clears(self, ratio: float) -> bool:
        """True when the window is clearly back on the good side of the threshold."""
        if self.alarm:
            return False
        bound = self.clear_bound(ratio)
        return self.value < bound if self.higher_is_worse else self.value > bound

    def describe(self) -> str:
        """``source value op threshold`` for humans."""
        op = ">" if self.higher_is_worse else "<"
        if not self.alarm:
            op = "<=" if self.higher_is_worse else ">="
        return f"{self.source} {self.value:.4g} {op} {self.threshold:.4g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "kind": self.kind,
            "source": self.source,
            "window_id": self.window_id,
            "alarm": self.alarm,
            "value": self.value,
            "threshold": self.threshold,
            "at": self.at,
            "version": self.version,
            "cause_event_id": self.cause_event_id,
            "correlation_id": self.correlation_id,
            "higher_is_worse": self.higher_is_worse,
            "clear_threshold": self.clear_threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of ``to_dict``."""
        kind = data["kind"]
        clear = data.get("clear_threshold")
        if kind not in ("drift", "metric"):
            raise ValueError(f"unknown finding kind {kind!r}")
        return cls(
            kind=kind,
            source=str(data["source"]),
            window_id=data["window_id"],
            alarm=bool(data["alarm"]),
            value=float(data["value"]),
            threshold=float(data["threshold"]),
            at=float(data["at"]),
            version=int(data["version"]),
            cause_event_id=data.get("cause_event_id"),
            correlation_id=data.get("correlation_id"),
            higher_is_worse=bool(data.get("higher_is_worse", True)),
            clear_threshold=None if clear is None else float(clear),
        )


@dataclass(frozen=True)
class RetrainDecision:
    """Ask for a retrain: the payload of one ``RetrainRequested`` event.

    ``key`` is unique per decision and the same on a replay of the same findings; use it for
    the event id (``derived_id("retrain", decision.key)``). It names the model, the episode
    and the confirming window, so it does not collide even if the episode counter restarted.
    """

    model: str
    version: int
    episode: int
    key: str
    reason: str
    source: str
    window_id: WindowId
    value: float
    threshold: float
    at: float
    cause_event_id: str | None
    correlation_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "model": self.model,
            "version": self.version,
            "episode": self.episode,
            "key": self.key,
            "reason": self.reason,
            "source": self.source,
            "window_id": self.window_id,
            "value": self.value,
            "threshold": self.threshold,
            "at": self.at,
            "cause_event_id": self.cause_event_id,
            "correlation_id": self.correlation_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainDecision:
        """Inverse of ``to_dict``."""
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            episode=int(data["episode"]),
            key=str(data["key"]),
            reason=str(data["reason"]),
            source=str(data["source"]),
            window_id=data["window_id"],
            value=float(data["value"]),
            threshold=float(data["threshold"]),
            at=float(data["at"]),
            cause_event_id=data.get("cause_event_id"),
            correlation_id=data.get("correlation_id"),
        )


@dataclass
class EpisodeState:
    """The retrain state machine of one model (see the module docstring for the rules)."""

    model: str
    #: The production version being watched (None until the first finding or promotion).
    version: int | None = None
    #: Correlation id of the watched version, when known from its promotion.
    correlation_id: str | None = None
    #: Episodes opened so far (the current one is number ``episodes`` while ``open``).
    episodes: int = 0
    open: bool = False
    #: Whether the open episode's retrain was requested (False: deferred by the cooldown).
    requested: bool = False
    opened_at: float | None = None
    last_request_at: float | None = None
    #: Sources that alarmed in the open episode → consecutive clear windows since.
    clear_streak: dict[str, int] = field(default_factory=dict)
    #: Per source, its last windows as (window_id, alarm), oldest first, at most confirm_m.
    recent: dict[str, list[tuple[WindowId, bool]]] = field(default_factory=dict)

    def on_new_production(self, version: int, correlation_id: str | None = None) -> None:
        """A new production version: close any episode and forget every window."""
        self.version = version
        self.correlation_id = correlation_id
        self._close()
        self.recent = {}

    def observe(self, finding: Finding, policy: RetrainPolicy) -> RetrainDecision | None:
        """Apply one finding; the retrain to request now, if any (in place)."""
        if self.version is not None and finding.version < self.version:
            return None  # about a model that is no longer in production
        if self.version is None or finding.version > self.version:
            self.on_new_production(finding.version, finding.correlation_id)

        history = self.recent.setdefault(finding.source, [])
        if any(w == finding.window_id for w, _ in history):
            return None  # redelivered
        history.append((finding.window_id, finding.alarm))
        del history[: max(0, len(history) - policy.confirm_m)]
        alarms = sum(1 for _, alarm in history if alarm)
        confirmed = finding.alarm and alarms >= policy.confirm_k

        if not self.open:
            if not confirmed:
                return None
            self.episodes += 1
            self.open, self.requested, self.opened_at = True, False, finding.at
            self.clear_streak = {finding.source: 0}
            return self._request(finding, policy, alarms)

        if finding.alarm:
            self.clear_streak[finding.source] = 0
            if confirmed and not self.requested:
                return self._request(finding, policy, alarms)
            return None
        if finding.source in self.clear_streak:
            if finding.clears(policy.clear_ratio):
                self.clear_streak[finding.source] += 1
            else:
                self.clear_streak[finding.source] = 0
            if all(n >= policy.clear_windows for n in self.clear_streak.values()):
                self._close()
        return None

    def _request(
        self, finding: Finding, policy: RetrainPolicy, alarms: int
    ) -> RetrainDecision | None:
        last = self.last_request_at
        if last is not None and finding.at - last < policy.cooldown_s:
            return None  # deferred to the next confirming window after the cooldown
        self.requested = True
        self.last_request_at = finding.at
        what = "drift" if finding.kind == "drift" else "metric"
        reason = (
            f"{what} confirmed: {finding.describe()} in {alarms} of the last "
            f"{policy.confirm_m} windows (window {finding.window_id}, version {finding.version})"
        )
        return RetrainDecision(
            model=self.model,
            version=finding.version,
            episode=self.episodes,
            key=f"{self.model}/episode/{self.episodes}/{finding.source}@{finding.window_id}",
            reason=reason,
            source=finding.source,
            window_id=finding.window_id,
            value=finding.value,
            threshold=finding.threshold,
            at=finding.at,
            cause_event_id=finding.cause_event_id,
            correlation_id=finding.correlation_id or self.correlation_id,
        )

    def _close(self) -> None:
        self.open, self.requested, self.opened_at = False, False, None
        self.clear_streak = {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "model": self.model,
            "version": self.version,
            "correlation_id": self.correlation_id,
            "episodes": self.episodes,
            "open": self.open,
            "requested": self.requested,
            "opened_at": self.opened_at,
            "last_request_at": self.last_request_at,
            "clear_streak": {s: self.clear_streak[s] for s in sorted(self.clear_streak)},
            "recent": {s: [[w, a] for w, a in self.recent[s]] for s in sorted(self.recent)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpisodeState:
        """Inverse of ``to_dict``."""
        version = data.get("version")
        opened_at = data.get("opened_at")
        last = data.get("last_request_at")
        return cls(
            model=str(data["model"]),
            version=None if version is None else int(version),
            correlation_id=data.get("correlation_id"),
            episodes=int(data.get("episodes", 0)),
            open=bool(data.get("open", False)),
            requested=bool(data.get("requested", False)),
            opened_at=None if opened_at is None else float(opened_at),
            last_request_at=None if last is None else float(last),
            clear_streak={str(s): int(n) for s, n in data.get("clear_streak", {}).items()},
            recent={
                str(s): [(w, bool(a)) for w, a in items]
                for s, items in data.get("recent", {}).items()
            },
        )
