"""Approval gates (a spec's ``rollout.require_approval``): which automatic step waits for a
person, and what a held step changes when it is approved, if it still applies.

Only automatic steps are gated: a rollout verdict or a registration moving a version *into*
the gated alias (a canary's weight steps are not). An operator's own moves and rollbacks are
decisions already and are not held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .aliases import Change, Decision, Pointer, plan_move, plan_verdict


@dataclass(frozen=True)
class Held:
    """A step held for approval, as recorded: the version entering ``alias`` and what asked."""

    version: int
    alias: str
    weight: float | None
    source: str
    """``verdict`` (``decision`` on the version judged as ``judged_alias``) or ``registration``."""
    decision: Decision | None = None
    judged_alias: str | None = None


def gated_change(
    changes: Sequence[Change], aliases: Mapping[str, Pointer], gate: str | None
) -> Change | None:
    """The change among ``changes`` that moves a version into the ``gate`` alias (one it is
    not in yet), or None: nothing needs approval."""
    if gate is None:
        return None
    for change in changes:
        current = aliases.get(gate)
        entering = current is None or current.version != change.version
        if change.alias == gate and change.version is not None and entering:
            return change
    return None


def replan(
    aliases: Mapping[str, Pointer],
    held: Held,
    *,
    status: str,
    canary_steps: Sequence[float],
) -> list[Change] | None:
    """The changes the held step makes against the current aliases, or None when it no
    longer applies (the version is no longer a candidate, the judged alias moved on, or the
    version is in the gated alias already): the approval is stale."""
    if status != "candidate":
        return None
    if held.source == "verdict":
        if held.decision is None or held.judged_alias is None:
            return None
        plan = plan_verdict(
            aliases,
            version=held.version,
            alias=held.judged_alias,
            decision=held.decision,
            canary_steps=canary_steps,
        )
        if plan.outcome != "applied":
            return None
        changes = plan.changes
    else:
        changes = plan_move(aliases, held.alias, held.version, held.weight)
    if gated_change(changes, aliases, held.alias) is None:
        return None
    return changes
