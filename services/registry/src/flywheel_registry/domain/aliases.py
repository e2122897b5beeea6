"""Alias rules: which moves are allowed, where a new candidate starts its rollout, and what a
move, a verdict or a rollback changes, as a list of alias changes.

Aliases: ``production`` (serves all traffic but the canary's share), ``canary`` (serves
``weight`` of the traffic) and ``shadow`` (scored on live traffic, never served).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flywheel_shared.aliases import ALIASES as ALIASES
from flywheel_shared.aliases import VERSION_STATUSES

from .errors import Conflict, Invalid, Unprocessable

Decision = Literal["advance", "promote", "rollback", "hold"]
DEFAULT_CANARY_WEIGHT = 0.1
"""A canary's weight when neither the request nor the spec's rollout names one."""
_EPS = 1e-9


@dataclass(frozen=True)
class Pointer:
    """Where an alias points now."""

    version: int
    weight: float | None = None


@dataclass(frozen=True)
class Change:
    """Point ``alias`` at ``version`` (None: remove the alias)."""

    alias: str
    version: int | None
    weight: float | None = None


@dataclass(frozen=True)
class Plan:
    """The changes a decision leads to, and why (``applied``, ``stale``, ``hold``...)."""

    outcome: str
    changes: list[Change] = field(default_factory=list)
    note: str = ""


@dataclass(frozen=True)
class HistoryItem:
    """One production audit entry, as the rollback rule needs it."""

    action: str
    from_version: int | None
    to_version: int | None


def check_alias(alias: str) -> None:
    """Refuse an alias name that is not production, canary or shadow."""
    if alias not in ALIASES:
        raise Invalid("invalid_alias", f"alias must be one of {', '.join(ALIASES)}")


def check_move(alias: str, weight: float | None) -> None:
    """Refuse a move request that names an unknown alias or weighs a non-canary alias."""
    check_alias(alias)
    if weight is not None and alias != "canary":
        raise Invalid("invalid_weight", "only the canary alias takes a weight")


def check_servable(version: int, status: str) -> None:
    """Only candidates take an alias."""
    if status != "candidate":
        raise Conflict(
            "version_not_servable",
            f"version {version} is {status}; only candidates can take an alias",
        )


def check_status(status: str) -> None:
    """Refuse a status that is not candidate, rejected or archived."""
    if status not in VERSION_STATUSES:
        raise Invalid("invalid_status", "status must be candidate, rejected or archived")


def check_retirable(aliases: Mapping[str, Pointer], version: int, status: str) -> None:
    """A version an alias points at stays a candidate until the alias moves."""
    if status == "candidate":
        return
    using = [a for a, p in aliases.items() if p.version == version]
    if using:
        raise Conflict(
            "version_in_use",
            f"version {version} is {', '.join(sorted(using))}; move the alias first",
        )


def canary_weight(canary_steps: Sequence[float], weight: float | None = None) -> float:
    """A canary's weight: the one asked for, else the rollout's first step, else the default."""
    if weight is not None:
        return weight
    return canary_steps[0] if canary_steps else DEFAULT_CANARY_WEIGHT


def first_alias(
    *,
    status: str,
    alias: str | None,
    weight: float | None,
    rollout: bool,
    rollout_first_alias: str,
    canary_steps: Sequence[float],
    serving: bool,
) -> tuple[str, float | None] | None:
    """The alias (and weight) a version takes as it is registered; None for no alias.

    A registration names its ``alias`` or asks for the ``rollout``: then a candidate goes to
    production while nothing serves yet (the first good model goes live), else to the
    spec's first rollout alias. Only candidates take an alias; only a canary has a weight
    (the one asked for, else the first canary step's).
    """
    if rollout and alias is not None:
        raise Unprocessable(
            "invalid_body", "a registration for the rollout names no first_alias of its own"
        )
    if status != "candidate":
        return None
    if rollout:
        alias = rollout_first_alias if serving else "production"
    if alias is None:
        return None
    return alias, canary_weight(canary_steps, weight) if alias == "canary" else None


def rollout_reason(decision: str, reasons: Sequence[str]) -> str:
    """The audit reason of the alias changes a verdict makes."""
    reason = f"rollout verdict {decision}"
    return reason + ": " + "; ".join(reasons) if reasons else reason


def rollback_reason(reason: str, current: int | None) -> str:
    """The audit reason of a rollback: the one given, else where it rolled back from."""
    return reason or f"rollback from version {current}"


def plan_move(
    aliases: Mapping[str, Pointer], alias: str, version: int, weight: float | None
) -> list[Change]:
    """Changes for pointing ``alias`` at ``version``; empty when it already points there.

    Making a version production also clears a canary or shadow alias on the same version:
    a candidate that became the champion is no longer on trial.
    """
    changes: list[Change] = []
    current = aliases.get(alias)
    if current is None or current.version != version or not _same(current.weight, weight):
        changes.append(Change(alias, version, weight))
    if alias == "production":
        changes += _clear_trials(aliases, version)
    return changes


def plan_promote(aliases: Mapping[str, Pointer], version: int) -> list[Change]:
    """Production becomes ``version``; canary/shadow pointing at it are removed."""
    return plan_move(aliases, "production", version, None)


def next_canary_weight(steps: Sequence[float], current: float | None) -> float | None:
    """Weight of the canary step after ``current``; None when past the last step."""
    for weight in steps:
        if current is None or weight > current + _EPS:
            return weight
    return None


def plan_verdict(
    aliases: Mapping[str, Pointer],
    *,
    version: int,
    alias: str,
    decision: Decision,
    canary_steps: Sequence[float],
) -> Plan:
    """Apply the monitor's verdict on ``version`` (judged as ``alias``) per the rollout policy.

    - ``promote``: production = version; canary/shadow on it are cleared.
    - ``rollback``: the canary/shadow alias on that version is removed; nothing else changes
      (production keeps serving).
    - ``advance``: shadow → canary at the first step's weight; canary → the next step's
      weight; past the last step → promote.
    - ``hold``: nothing.

    A verdict about a version the judged alias no longer points at is ``stale`` and ignored,
    so a late verdict cannot undo a person's decision.
    """
    if decision == "hold":
        return Plan("hold", note="hold: nothing to do")
    trials = [a for a in ("canary", "shadow") if _points(aliases, a, version)]
    if decision == "rollback":
        if not trials:
            return Plan("stale", note=f"no canary or shadow alias on version {version}")
        return Plan("applied", [Change(a, None) for a in trials])
    if not _points(aliases, alias, version):
        return Plan("stale", note=f"{alias} does not point at version {version}")
    if decision == "promote":
        return Plan("applied", plan_promote(aliases, version))
    # advance
    if alias == "shadow":
        if not canary_steps:
            return Plan("applied", plan_promote(aliases, version), "no canary steps: promoted")
        return Plan("applied", [Change("shadow", None), Change("canary", version, canary_steps[0])])
    weight = next_canary_weight(canary_steps, aliases["canary"].weight)
    if weight is None:
        return Plan("applied", plan_promote(aliases, version), "past the last canary step")
    return Plan("applied", [Change("canary", version, weight)])


def previous_production(
    history: Iterable[HistoryItem], current: int | None, servable: Callable[[int], bool]
) -> int | None:
    """The version production should roll back to, from its audit history (oldest first).

    Replays the history as a stack: a move pushes the new version, a rollback pops the one
    it left. The answer is the newest servable version below the current one, so repeated
    rollbacks walk further back instead of toggling between two versions.
    """
    stack: list[int | None] = []
    for item in history:
        if item.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != item.to_version:
            stack.append(item.to_version)
    if stack and stack[-1] == current:
        stack.pop()
    for version in reversed(stack):
        if version is not None and version != current and servable(version):
            return version
    return None


def _points(aliases: Mapping[str, Pointer], alias: str, version: int) -> bool:
    pointer = aliases.get(alias)
    return pointer is not None and pointer.version == version


def _clear_trials(aliases: Mapping[str, Pointer], version: int) -> list[Change]:
    return [Change(a, None) for a in ("canary", "shadow") if _points(aliases, a, version)]


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < _EPS
