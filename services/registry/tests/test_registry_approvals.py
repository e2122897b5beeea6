"""Approval gates on a real database (SQLite and PostgreSQL): held steps, approval, staleness."""

from __future__ import annotations

import pytest

from flywheel_registry.domain.errors import Conflict
from flywheel_registry.store import RegistryStore
from flywheel_shared.events import RolloutVerdict
from flywheel_shared.spec import load_spec

from .registry_support import sha, spec_text, unique, version_body


def gated_model(store: RegistryStore, gate: str) -> tuple[str, str]:
    name = unique()
    spec = load_spec(spec_text(name, require_approval=gate))
    assert spec.rollout.require_approval == gate
    store.put_spec(spec)
    digest = sha(name.encode())
    store.record_artifact(digest, len(name), f"file:///a/{digest}")
    return name, digest


def verdict(name: str, version: int, alias: str, decision: str) -> RolloutVerdict:
    return RolloutVerdict(
        model=name,
        version=version,
        alias=alias,  # type: ignore[arg-type]
        decision=decision,  # type: ignore[arg-type]
        reasons=["error rate 0.1% <= 1%"],
    )


def aliases(store: RegistryStore, name: str) -> dict[str, tuple[int, float | None]]:
    return {a: (s.version, s.weight) for a, s in store.get_model(name).aliases.items()}


def test_a_promotion_into_gated_production_waits_for_its_approval(store: RegistryStore) -> None:
    name, digest = gated_model(store, "production")
    store.register_version(name, version_body("r1", digest))
    store.move_alias(name, "production", 1)  # an operator's own move is not held
    store.register_version(name, version_body("r2", digest, first_alias="canary"))
    # the canary's weight steps are not gated, its entry into production is
    assert store.apply_verdict(verdict(name, 2, "canary", "advance")).outcome == "applied"
    assert aliases(store, name) == {"production": (1, None), "canary": (2, 0.5)}
    plan = store.apply_verdict(verdict(name, 2, "canary", "advance"))
    assert plan.outcome == "awaiting_approval" and "production needs approval" in plan.note
    assert store.apply_verdict(verdict(name, 2, "canary", "promote")).outcome == (
        "awaiting_approval"
    )
    assert aliases(store, name) == {"production": (1, None), "canary": (2, 0.5)}
    [pending] = store.list_approvals(model=name)
    assert (pending.version, pending.alias, pending.source, pending.state) == (
        2,
        "production",
        "verdict",
        "pending",
    )
    assert pending.reason.startswith("rollout verdict advance")  # the first ask is kept

    approved = store.approve(name, 2, reason="looks good", actor="cli:carol", token="carol")
    assert (approved.state, approved.decided_by, approved.decision_reason) == (
        "approved",
        "carol",
        "looks good",
    )
    assert aliases(store, name) == {"production": (2, None)}
    cleared, entry = store.audit(model=name)[:2]  # newest first: production, then the canary
    assert (entry.action, entry.alias, entry.to_version, entry.token, entry.actor) == (
        "approve",
        "production",
        2,
        "carol",
        "cli:carol",
    )
    assert (cleared.action, cleared.alias, cleared.to_version, cleared.token) == (
        "approve",
        "canary",
        None,
        "carol",
    )
    assert entry.reason.startswith("approved: looks good (rollout verdict advance")
    assert store.list_approvals(model=name) == []
    with pytest.raises(Conflict) as exc:
        store.approve(name, 2, token="carol")
    assert exc.value.code == "no_pending_approval"


def test_an_approval_the_aliases_moved_past_is_stale(store: RegistryStore) -> None:
    name, digest = gated_model(store, "production")
    store.register_version(name, version_body("r1", digest))
    store.move_alias(name, "production", 1)
    store.register_version(name, version_body("r2", digest, first_alias="canary"))
    store.apply_verdict(verdict(name, 2, "canary", "promote"))
    store.remove_alias(name, "canary", reason="an operator ends the trial")
    with pytest.raises(Conflict) as exc:
        store.approve(name, 2, token="carol")
    assert exc.value.code == "approval_stale"
    assert aliases(store, name) == {"production": (1, None)}
    [stale] = store.list_approvals(model=name, state="stale")
    assert stale.version == 2 and stale.decided_by == "carol"
    # a verdict rolling the canary back drops what it waited for
    store.register_version(name, version_body("r3", digest, first_alias="canary"))
    store.apply_verdict(verdict(name, 3, "canary", "promote"))
    assert [a.version for a in store.list_approvals(model=name)] == [3]
    store.apply_verdict(verdict(name, 3, "canary", "rollback"))
    assert store.list_approvals(model=name) == []


def test_a_registration_into_a_gated_canary_waits_and_a_newer_one_supersedes_it(
    store: RegistryStore,
) -> None:
    name, digest = gated_model(store, "canary")
    store.register_version(name, version_body("r1", digest), rollout=True)
    assert aliases(store, name) == {"production": (1, None)}  # production is not gated
    store.register_version(name, version_body("r2", digest, first_alias="canary"))
    store.register_version(name, version_body("r3", digest, first_alias="canary"))
    assert aliases(store, name) == {"production": (1, None)}
    assert [(a.version, a.source) for a in store.list_approvals(model=name)] == [
        (3, "registration")
    ]
    assert [a.version for a in store.list_approvals(model=name, state="stale")] == [2]
    store.approve(name, 3, token="carol")
    assert aliases(store, name) == {"production": (1, None), "canary": (3, 0.1)}
    # a verdict moving shadow → canary is held too
    store.register_version(name, version_body("r4", digest, first_alias="shadow"))
    assert store.apply_verdict(verdict(name, 4, "shadow", "advance")).outcome == (
        "awaiting_approval"
    )
    assert aliases(store, name)["shadow"] == (4, None)
    store.approve(name, 4, token="carol")
    assert aliases(store, name) == {"production": (1, None), "canary": (4, 0.1)}


def test_without_require_approval_nothing_is_held(store: RegistryStore) -> None:
    name = unique()
    store.put_spec(load_spec(spec_text(name)))
    digest = sha(name.encode())
    store.record_artifact(digest, len(name), f"file:///a/{digest}")
    store.register_version(name, version_body("r1", digest), rollout=True)
    store.register_version(name, version_body("r2", digest, first_alias="canary"))
    assert store.apply_verdict(verdict(name, 2, "canary", "promote")).outcome == "applied"
    assert aliases(store, name) == {"production": (2, None)}
    assert store.list_approvals(model=name, state=None) == []
