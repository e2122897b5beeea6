"""Retrain episodes: k-of-m confirmation, one request per episode, cooldown, hysteresis."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace

import pytest

from flywheel_monitor.domain.episodes import (
    EpisodeState,
    Finding,
    RetrainDecision,
    RetrainPolicy,
)
from flywheel_shared.spec import DatasetContract, Drift, FieldSpec, ModelSpec, Recipe

POLICY = RetrainPolicy(cooldown_s=0)


def _drift(
    window: int,
    alarm: bool,
    *,
    value: float | None = None,
    source: str = "drift:fraud:v3",
    version: int = 3,
    at: float | None = None,
) -> Finding:
    return Finding(
        kind="drift",
        source=source,
        window_id=window,
        alarm=alarm,
        value=(0.5 if alarm else 0.05) if value is None else value,
        threshold=0.2,
        at=window * 60.0 if at is None else at,
        version=version,
        cause_event_id=f"evt-{source}-{window}",
        correlation_id="corr-v3",
    )


def _auc(
    window: int, value: float, *, at: float | None = None, clear: float | None = None
) -> Finding:
    return Finding(
        kind="metric",
        source="roc_auc",
        window_id=window,
        alarm=value < 0.8,
        value=value,
        threshold=0.8,
        at=window * 60.0 if at is None else at,
        version=3,
        higher_is_worse=False,
        clear_threshold=clear,
    )


def _run(
    state: EpisodeState, findings: Iterable[Finding], policy: RetrainPolicy = POLICY
) -> list[RetrainDecision]:
    return [d for f in findings if (d := state.observe(f, policy)) is not None]


def test_a_single_alarm_does_not_fire() -> None:
    state = EpisodeState(model="fraud")
    assert _run(state, [_drift(1, True), _drift(2, False), _drift(3, False)]) == []
    # 1 alarm in the last 3 windows, again and again: never 2 of 3
    assert _run(state, [_drift(w, w % 3 == 0) for w in range(4, 40)]) == []
    assert not state.open


def test_k_of_m_confirms_on_the_confirming_alarm() -> None:
    state = EpisodeState(model="fraud")
    assert _run(state, [_drift(1, True), _drift(2, False)]) == []
    decisions = _run(state, [_drift(3, True)])  # 2 of the last 3
    assert len(decisions) == 1
    d = decisions[0]
    assert d.model == "fraud" and d.version == 3 and d.episode == 1
    assert d.cause_event_id == "evt-drift:fraud:v3-3"
    assert d.correlation_id == "corr-v3"
    assert d.key == "fraud/episode/1/drift:fraud:v3@3"
    assert "drift:fraud:v3 0.5 > 0.2" in d.reason
    assert "2 of the last 3" in d.reason
    assert state.open


def test_a_storm_of_alarms_gives_exactly_one_decision() -> None:
    state = EpisodeState(model="fraud")
    storm = [
        _drift(w, True, source=f"drift:fraud:v3:{feature}")
        for w in range(1, 50)
        for feature in ("amount", "hour", "distance", "age", "score")
    ]
    storm += [_auc(w, 0.6) for w in range(1, 50)]
    decisions = _run(state, storm)
    assert len(decisions) == 1
    assert decisions[0].source == "drift:fraud:v3:amount"
    assert decisions[0].window_id == 2


def test_same_findings_give_the_same_decisions_and_keys() -> None:
    findings = [_drift(w, w % 4 != 1) for w in range(1, 30)]
    a, b = EpisodeState(model="fraud"), EpisodeState(model="fraud")
    assert _run(a, findings) == _run(b, findings)
    assert a.to_dict() == b.to_dict()


def test_redelivered_findings_change_nothing() -> None:
    state = EpisodeState(model="fraud")
    first = _drift(1, True)
    assert _run(state, [first, first, first]) == []  # one alarm, three times
    assert len(_run(state, [_drift(2, True), _drift(2, True)])) == 1


def test_hysteresis_the_episode_closes_only_after_clear_windows() -> None:
    state = EpisodeState(model="fraud")
    assert len(_run(state, [_drift(1, True), _drift(2, True)])) == 1
    # below the threshold (0.2) but not below 0.8 * 0.2: the episode stays open
    assert _run(state, [_drift(w, False, value=0.19) for w in range(3, 10)]) == []
    assert state.open
    # two clear windows, then an alarm: the streak restarts, nothing is emitted
    assert _run(state, [_drift(10, False), _drift(11, False), _drift(12, True)]) == []
    assert state.open
    assert _run(state, [_drift(w, False, value=0.1) for w in (13, 14)]) == []
    assert state.open
    assert _run(state, [_drift(15, False, value=0.1)]) == []
    assert not state.open  # three consecutive clear windows
    decisions = _run(state, [_drift(16, True), _drift(17, True)])
    assert [d.episode for d in decisions] == [2]  # a new episode, a new request


def test_every_source_that_alarmed_must_clear() -> None:
    state = EpisodeState(model="fraud")
    assert len(_run(state, [_drift(1, True), _drift(2, True)])) == 1
    _run(state, [_drift(3, True, source="drift:fraud:v3:hour")])  # joins the episode
    _run(state, [_drift(w, False) for w in (3, 4, 5)])
    assert state.open  # the second source has not cleared
    _run(state, [_drift(w, False, source="drift:fraud:v3:hour") for w in (4, 5, 6)])
    assert not state.open


def test_metric_floors_clear_above_the_floor_divided_by_the_ratio() -> None:
    state = EpisodeState(model="fraud")
    decisions = _run(state, [_auc(1, 0.7), _auc(2, 0.75)])
    assert len(decisions) == 1
    assert decisions[0].cause_event_id is None
    assert "roc_auc 0.75 < 0.8" in decisions[0].reason  # the metric and its value
    _run(state, [_auc(w, 0.9) for w in (3, 4, 5)])  # above the floor, below 0.8 / 0.8 = 1.0
    assert state.open
    lenient = RetrainPolicy(cooldown_s=0, clear_ratio=0.95)  # clears above 0.842
    _run(state, [_auc(w, 0.9) for w in (6, 7, 8)], lenient)
    assert not state.open


def test_a_finding_can_carry_its_own_clear_threshold() -> None:
    state = EpisodeState(model="fraud")
    assert len(_run(state, [_auc(1, 0.7, clear=0.84), _auc(2, 0.7, clear=0.84)])) == 1
    _run(state, [_auc(w, 0.83, clear=0.84) for w in (3, 4, 5)])
    assert state.open  # above the floor, inside the band
    _run(state, [_auc(w, 0.85, clear=0.84) for w in (6, 7, 8)])
    assert not state.open


def test_cooldown_defers_the_request_without_losing_it() -> None:
    policy = RetrainPolicy(cooldown_s=600)
    state = EpisodeState(model="fraud")
    assert len(_run(state, [_drift(1, True), _drift(2, True)], policy)) == 1  # at t=120
    _run(state, [_drift(w, False) for w in (3, 4, 5)], policy)
    assert not state.open
    # a new episode opens at t=360 and t=420, inside the cooldown: deferred
    assert _run(state, [_drift(6, True), _drift(7, True)], policy) == []
    assert state.open and not state.requested
    assert _run(state, [_drift(w, True) for w in (8, 9, 10, 11)], policy) == []  # t <= 660
    late = _run(state, [_drift(12, True), _drift(13, True)], policy)  # t=720: 600 s after 120
    assert [(d.episode, d.window_id, d.at) for d in late] == [(2, 12, 720.0)]
    assert _run(state, [_drift(w, True) for w in range(14, 30)], policy) == []


def test_an_episode_that_clears_during_the_cooldown_closes_without_a_request() -> None:
    policy = RetrainPolicy(cooldown_s=3600)
    state = EpisodeState(model="fraud")
    assert len(_run(state, [_drift(1, True), _drift(2, True)], policy)) == 1
    _run(state, [_drift(w, False) for w in (3, 4, 5)], policy)
    assert _run(state, [_drift(6, True), _drift(7, True)], policy) == []
    _run(state, [_drift(w, False) for w in (8, 9, 10)], policy)
    assert not state.open
    assert state.episodes == 2


def test_a_new_production_version_starts_clean() -> None:
    state = EpisodeState(model="fraud")
    assert len(_run(state, [_drift(1, True), _drift(2, True)])) == 1
    state.on_new_production(4, correlation_id="corr-v4")
    assert not state.open and state.recent == {}
    v4 = [_drift(w, True, source="drift:fraud:v4", version=4) for w in (3, 4)]
    # one alarm of v4 does not confirm (v3's windows were forgotten), two do
    first = _run(state, v4[:1])
    assert first == []
    decisions = _run(state, v4[1:])
    assert [(d.episode, d.version) for d in decisions] == [(2, 4)]
    assert decisions[0].correlation_id == "corr-v3"  # the finding's own id wins
    # findings about v3 arriving late are ignored
    assert _run(state, [_drift(w, True) for w in (5, 6, 7)]) == []


def test_a_finding_about_a_newer_version_is_adopted() -> None:
    state = EpisodeState(model="fraud")
    state.on_new_production(3, correlation_id="corr-v3")
    _run(state, [_drift(1, True)])
    newer = [_drift(w, True, source="drift:fraud:v5", version=5) for w in (2, 3)]
    decisions = _run(state, newer)
    assert state.version == 5
    assert [d.window_id for d in decisions] == [3]  # v3's alarm did not count for v5


def test_episode_state_round_trips_mid_episode_and_carries_on_identically() -> None:
    policy = RetrainPolicy(cooldown_s=300)
    findings = [_drift(w, w % 5 != 0) for w in range(1, 7)]  # confirms at t=120
    findings += [_drift(w, False) for w in range(7, 10)]  # clears
    findings += [_auc(w, 0.7 if w < 14 else 0.95, clear=0.84) for w in range(10, 17)]
    findings += [_drift(w, True, source="drift:x") for w in range(17, 40)]
    whole = EpisodeState(model="fraud")
    expected = _run(whole, findings, policy)

    resumed = EpisodeState(model="fraud")
    got: list[RetrainDecision] = []
    for f in findings:
        data = json.loads(json.dumps(resumed.to_dict(), allow_nan=False))
        resumed = EpisodeState.from_dict(data)
        assert resumed.to_dict() == data
        if (d := resumed.observe(f, policy)) is not None:
            got.append(d)
    assert got == expected
    assert resumed == whole
    assert [d.episode for d in expected] == [1, 2, 3]
    for d in expected:
        assert RetrainDecision.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    for f in findings:
        assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def test_string_window_ids_round_trip() -> None:
    state = EpisodeState(model="fraud")
    _run(state, [replace(_drift(1, True), window_id="w-1")])
    back = EpisodeState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back == state
    assert back.recent["drift:fraud:v3"] == [("w-1", True)]


def _spec(cooldown_s: float) -> ModelSpec:
    return ModelSpec(
        name="fraud",
        dataset=DatasetContract(
            name="transactions",
            id_field="id",
            time_field="at",
            label_field="y",
            fields={
                "id": FieldSpec(type="string"),
                "at": FieldSpec(type="datetime"),
                "y": FieldSpec(type="bool"),
                "amount": FieldSpec(type="float"),
            },
        ),
        features=("amount",),
        recipe=Recipe(entrypoint="pkg.mod:train"),
        drift=Drift(cooldown_s=cooldown_s),
    )


def test_policy_from_spec_and_validation() -> None:
    policy = RetrainPolicy.from_spec(_spec(900))
    assert policy == RetrainPolicy(cooldown_s=900)
    assert (policy.confirm_k, policy.confirm_m, policy.clear_windows) == (2, 3, 3)
    with pytest.raises(ValueError):
        RetrainPolicy(cooldown_s=0, confirm_k=4, confirm_m=3)
    with pytest.raises(ValueError):
        RetrainPolicy(cooldown_s=0, clear_ratio=1.5)
    with pytest.raises(ValueError):
        RetrainPolicy(cooldown_s=-1)
