"""Alias rules without a database: moves, verdicts per rollout policy, rollback targets."""

from __future__ import annotations

import pytest

from flywheel_registry.domain.aliases import (
    DEFAULT_CANARY_WEIGHT,
    Change,
    HistoryItem,
    Pointer,
    first_alias,
    next_canary_weight,
    plan_move,
    plan_verdict,
    previous_production,
)
from flywheel_registry.domain.errors import Unprocessable

STEPS = [0.1, 0.5]


def verdict(aliases: dict[str, Pointer], decision: str, alias: str, version: int = 2):
    return plan_verdict(
        aliases,
        version=version,
        alias=alias,
        decision=decision,  # type: ignore[arg-type]
        canary_steps=STEPS,
    )


def test_move_is_a_noop_when_the_alias_already_points_there() -> None:
    aliases = {"canary": Pointer(2, 0.1)}
    assert plan_move(aliases, "canary", 2, 0.1) == []
    assert plan_move(aliases, "canary", 2, 0.5) == [Change("canary", 2, 0.5)]
    assert plan_move(aliases, "shadow", 3, None) == [Change("shadow", 3, None)]


def test_moving_production_clears_trials_of_the_same_version() -> None:
    aliases = {"production": Pointer(1), "canary": Pointer(2, 0.5), "shadow": Pointer(3)}
    assert plan_move(aliases, "production", 2, None) == [
        Change("production", 2, None),
        Change("canary", None),
    ]
    assert plan_move({"production": Pointer(2), "shadow": Pointer(2)}, "production", 2, None) == [
        Change("shadow", None)
    ]


def test_next_canary_weight_walks_the_steps_then_ends() -> None:
    assert next_canary_weight(STEPS, None) == 0.1
    assert next_canary_weight(STEPS, 0.1) == 0.5
    assert next_canary_weight(STEPS, 0.3) == 0.5  # a hand-set weight between steps
    assert next_canary_weight(STEPS, 0.5) is None
    assert next_canary_weight([], 0.1) is None


def test_advance_shadow_becomes_canary_at_the_first_step() -> None:
    plan = verdict({"production": Pointer(1), "shadow": Pointer(2)}, "advance", "shadow")
    assert plan.outcome == "applied"
    assert plan.changes == [Change("shadow", None), Change("canary", 2, 0.1)]


def test_advance_canary_goes_to_the_next_step_then_promotes() -> None:
    plan = verdict({"production": Pointer(1), "canary": Pointer(2, 0.1)}, "advance", "canary")
    assert plan.changes == [Change("canary", 2, 0.5)]
    plan = verdict({"production": Pointer(1), "canary": Pointer(2, 0.5)}, "advance", "canary")
    assert plan.changes == [Change("production", 2, None), Change("canary", None)]
    assert "last canary step" in plan.note


def test_advance_shadow_without_canary_steps_promotes() -> None:
    plan = plan_verdict(
        {"shadow": Pointer(2)}, version=2, alias="shadow", decision="advance", canary_steps=[]
    )
    assert plan.changes == [Change("production", 2, None), Change("shadow", None)]


def test_promote_sets_production_and_clears_the_trial() -> None:
    plan = verdict({"production": Pointer(1), "canary": Pointer(2, 0.1)}, "promote", "canary")
    assert plan.changes == [Change("production", 2, None), Change("canary", None)]


def test_rollback_removes_only_the_trial_aliases_on_that_version() -> None:
    aliases = {"production": Pointer(1), "canary": Pointer(2, 0.5), "shadow": Pointer(3)}
    plan = verdict(aliases, "rollback", "canary")
    assert plan.changes == [Change("canary", None)]
    plan = verdict({"canary": Pointer(2, 0.1), "shadow": Pointer(2)}, "rollback", "shadow")
    assert plan.changes == [Change("canary", None), Change("shadow", None)]


@pytest.mark.parametrize("decision", ["advance", "promote", "rollback"])
def test_a_verdict_on_a_version_no_longer_on_trial_is_stale(decision: str) -> None:
    plan = verdict({"production": Pointer(1), "canary": Pointer(3, 0.1)}, decision, "canary")
    assert plan.outcome == "stale" and plan.changes == []


def test_hold_changes_nothing() -> None:
    plan = verdict({"canary": Pointer(2, 0.1)}, "hold", "canary")
    assert plan.outcome == "hold" and plan.changes == []


def _moves(*versions: int | None) -> list[HistoryItem]:
    out, prev = [], None
    for v in versions:
        out.append(HistoryItem("move", prev, v))
        prev = v
    return out


def test_rollback_target_walks_back_without_toggling() -> None:
    history = _moves(1, 2, 3)
    assert previous_production(history, 3, lambda v: True) == 2
    history.append(HistoryItem("rollback", 3, 2))
    assert previous_production(history, 2, lambda v: True) == 1
    history.append(HistoryItem("rollback", 2, 1))
    assert previous_production(history, 1, lambda v: True) is None


def test_rollback_target_after_a_new_move_and_skipping_retired_versions() -> None:
    history = [*_moves(1, 2, 3), HistoryItem("rollback", 3, 2), HistoryItem("move", 2, 4)]
    assert previous_production(history, 4, lambda v: True) == 2
    assert previous_production(history, 4, lambda v: v != 2) == 1
    assert previous_production([], None, lambda v: True) is None
    assert previous_production(_moves(5), 5, lambda v: True) is None


def test_rollback_after_production_was_removed_restores_the_last_version() -> None:
    history = [*_moves(1, 2), HistoryItem("remove", 2, None)]
    assert previous_production(history, None, lambda v: True) == 2


def start(**kw: object) -> tuple[str, float | None] | None:
    args: dict[str, object] = {
        "status": "candidate",
        "alias": None,
        "weight": None,
        "rollout": True,
        "rollout_first_alias": "canary",
        "canary_steps": STEPS,
        "serving": True,
    }
    return first_alias(**{**args, **kw})  # type: ignore[arg-type]


def test_the_rollout_policy_picks_a_registration_s_first_alias() -> None:
    assert start(serving=False) == ("production", None)  # nothing serves: it goes live
    assert start() == ("canary", 0.1)  # else the spec's first alias, at the first step
    assert start(canary_steps=[]) == ("canary", DEFAULT_CANARY_WEIGHT)
    assert start(rollout_first_alias="shadow") == ("shadow", None)
    assert start(status="rejected") is None and start(status="rejected", serving=False) is None
    assert start(rollout=False) is None
    assert start(rollout=False, alias="canary", weight=0.3) == ("canary", 0.3)
    assert start(rollout=False, alias="shadow", weight=0.3) == ("shadow", None)
    with pytest.raises(Unprocessable):
        start(alias="shadow")
