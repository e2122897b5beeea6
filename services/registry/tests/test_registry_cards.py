"""Model cards, pure: built from a version, its spec, the audit log, approvals and facts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flywheel_registry.domain.card_markdown import SECTIONS
from flywheel_registry.domain.cards import CardInputs, Fact, build_card, render_markdown
from flywheel_shared.events import CategoricalStats, NumericStats
from flywheel_shared.registry import Approval, AuditEntry, ModelVersion
from flywheel_shared.snapshots import Exclusion, Snapshot
from flywheel_shared.spec import ModelSpec, load_spec

from .registry_support import spec_text, version_body

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SNAP = "5a" * 32
PERSONAL = "\n    merchant_category:\n"
EMAIL = (
    "\n    postcode:\n      type: category\n      categories: ['SW1A 1AA', 'EC1A 1BB']\n"
    "      personal: true\n    merchant_category:\n"
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def spec(*, personal: bool = False, gate: str | None = None) -> ModelSpec:
    text = spec_text("fraud", require_approval=gate)
    if personal:
        text = text.replace(PERSONAL, EMAIL, 1)
    return load_spec(text)


def version(number: int, **changes: object) -> ModelVersion:
    body = version_body(f"run{number}", "ef" * 32).model_dump()
    body["lineage"]["snapshot_id"] = SNAP
    data = {
        **body,
        "model": "fraud",
        "version": number,
        "artifact_uri": "file:///a",
        "created_at": at(0),
        **changes,
    }
    return ModelVersion.model_validate(data)


def entry(n: int, alias: str | None, frm: int | None, to: int | None, **kw: object) -> AuditEntry:
    data: dict[str, object] = {
        "id": n,
        "model": "fraud",
        "alias": alias,
        "from_version": frm,
        "to_version": to,
        "action": "move",
        "actor": "cli:alice",
        "token": "ops-alice",
        "reason": "",
        "at": at(n),
    }
    return AuditEntry.model_validate({**data, **kw})


def snapshot() -> Snapshot:
    return Snapshot(
        id=SNAP,
        dataset="transactions",
        segments=["s1", "s2"],
        excluded=[Exclusion(segment_id="s0", reason="retention", rows=70)],
        rows=1000,
        stats={
            "amount": NumericStats(count=1000, nulls=3, min=0.5, max=900.0, mean=42.0, std=9.5),
            "postcode": CategoricalStats(
                count=1000, nulls=0, counts={"SW1A 1AA": 600, "EC1A 1BB": 400}
            ),
        },
        created_at=at(-60),
    )


def inputs(**changes: object) -> CardInputs:
    base: dict[str, object] = {
        "version": version(1),
        "spec": spec(),
        "aliases": {},
        "audit": [],
        "approvals": [],
        "facts": [],
        "snapshot": None,
        "snapshot_note": "snapshot record not found",
        "now": at(100),
    }
    return CardInputs(**{**base, **changes})  # type: ignore[arg-type]


def drift(minutes: float, version: int = 1) -> Fact:
    body = {
        "detector": "cvm",
        "features": ["amount", "hour"],
        "statistics": {"amount": 3.2},
        "p_values": {"amount": 0.001, "hour": 0.004},
        "threshold": 0.01,
        "window": 500,
    }
    return Fact("drift", version, at(minutes), f"drift-{minutes}", body)


def verdict(minutes: float, version: int, decision: str) -> Fact:
    body = {
        "alias": "canary",
        "decision": decision,
        "reasons": ["error rate 0.1% <= 1%"],
        "evidence": {"error_rate": 0.001, "latency_p99_ms": 12.5},
    }
    return Fact("verdict", version, at(minutes), f"verdict-{minutes}", body)


def test_a_version_without_facts_renders_every_section() -> None:
    card = build_card(inputs())
    text = render_markdown(card)
    assert text.startswith("# Model card: fraud v1\n")
    for section in SECTIONS:
        assert f"\n## {section}\n" in text
    assert "snapshot record not found" in text
    assert "_No drift detected._" in text and "_No rollout verdicts._" in text
    assert "Serving now**: no alias" in text
    assert "marks no field personal" in text
    assert card.retired is None and card.live_metrics == [] and card.drift_episodes == []
    assert render_markdown(card) == text  # deterministic


def test_lineage_gates_and_metrics_against_the_champion_are_shown() -> None:
    v = version(2, status="rejected", gate_reasons=["roc_auc 0.7 < 0.8"], parent_version=1)
    card = build_card(inputs(version=v, snapshot=snapshot(), snapshot_note=""))
    assert card.gates == ["roc_auc >= 0.8", "roc_auc >= champion - 0.005"]
    assert not card.passed_gate and card.primary_metric == "roc_auc"
    text = render_markdown(card)
    assert f"`{SNAP}`" in text and "flywheel_fraud.recipes:logistic_regression" in text
    assert f"`{'ab' * 32}`" in text  # the recipe's source hash
    assert '`{"C": 1.0}`' in text and "**Seed**: 42" in text
    assert "`roc_auc >= champion - 0.005`" in text and "roc_auc 0.7 < 0.8" in text
    assert "| roc_auc | 0.9 | 0.88 | +0.02 |" in text
    assert "**rejected**" in text and "**Parent version**: v1" in text
    assert card.snapshot.found and card.snapshot.excluded_rows == 70
    assert "1000 rows in 2 segments, 1 segments (70 rows) left out" in text
    assert "min 0.5, max 900, mean 42, std 9.5" in text


def test_personal_fields_are_listed_and_their_categories_withheld() -> None:
    card = build_card(inputs(spec=spec(personal=True), snapshot=snapshot(), snapshot_note=""))
    assert card.personal_fields == ["postcode"]
    assert card.snapshot.stats["postcode"]["counts"] == {"<withheld>": 1000}
    text = render_markdown(card)
    assert "Personal fields (contract `personal: true`): `postcode`" in text
    assert "| postcode | categorical | 1000 | 0 | <withheld>: 1000 |" in text
    assert "SW1A" not in text and "SW1A" not in card.model_dump_json()


def test_alias_history_live_metrics_and_the_drift_episode_that_retired_it() -> None:
    audit = [
        entry(1, None, None, 1, action="register", reason="registered as candidate"),
        entry(2, "production", None, 1, reason="first"),
        entry(3, None, None, 2, action="register"),
        entry(4, "canary", None, 2, weight=0.1, action="verdict", actor="monitor", token=None),
        entry(9, "production", 1, 2, action="verdict", actor="monitor", token=None),
    ]
    facts = [verdict(3.5, 2, "advance"), drift(5), drift(6, version=2), drift(10)]
    retrain = Fact(
        "retrain", None, at(5.5), "retrain-1", {"reason": "drift", "cause_event_id": None}
    )
    made = inputs(audit=audit, facts=[*facts, retrain], aliases={"production": (2, None)})
    card = build_card(made)
    assert [e.id for e in card.alias_history] == [1, 2, 9]
    assert [d.event_id for d in card.drift_episodes] == ["drift-5", "drift-10"]
    assert [r.event_id for r in card.retrain_requests] == ["retrain-1"]
    assert card.retired is not None
    assert (card.retired.by_version, card.retired.at, card.retired.drift_event_id) == (
        2,
        at(9),
        "drift-5",  # drift-10 came after it left production
    )
    assert card.retired.cause.startswith("retired by drift episode 2026-12-01 12:05:00 UTC")
    text = render_markdown(card)
    assert (
        "| 2026-12-01 12:02:00 UTC | move | production | - → v1 |  | cli:alice | ops-alice |"
        in (text)
    )
    assert "replaced by v2" in text and "cvm" in text and "amount=0.001" in text

    v2 = build_card(made.__class__(**{**made.__dict__, "version": version(2)}))
    assert v2.aliases == {"production": None} and v2.retired is None
    [live] = v2.live_metrics
    assert (live.decision, live.evidence["latency_p99_ms"]) == ("advance", 12.5)
    text = render_markdown(v2)
    assert "error_rate=0.001, latency_p99_ms=12.5" in text
    assert "| canary | - → v2 | 10% | monitor | - |" in text


def test_the_markdown_shows_the_newest_verdicts_the_json_all() -> None:
    facts = [verdict(i, 1, "hold") for i in range(25)]
    card = build_card(inputs(facts=facts))
    assert len(card.live_metrics) == 25
    text = render_markdown(card)
    assert "_5 earlier verdicts are in the JSON card._" in text
    assert text.count("| canary | hold |") == 20 and "2026-12-01 12:04:00" not in text
    assert "2026-12-01 12:05:00 UTC | canary | hold" in text


def test_a_pending_approval_shows_in_the_summary() -> None:
    pending = Approval(
        id=1,
        model="fraud",
        version=1,
        alias="production",
        source="verdict",
        decision="promote",
        reason="rollout verdict promote",
        state="pending",
        requested_at=at(7),
    )
    card = build_card(inputs(spec=spec(gate="production"), approvals=[pending]))
    text = render_markdown(card)
    assert card.require_approval == "production"
    assert "required to enter production; **awaiting approval** into production since" in text
    assert "| 2026-12-01 12:07:00 UTC | production | pending | verdict |" in text
