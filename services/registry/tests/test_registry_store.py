"""The store on a real database (SQLite and PostgreSQL): transactions, outbox, concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flywheel_registry.db import AuditRow, Base, OutboxRow, make_engine
from flywheel_registry.domain.errors import Conflict, Invalid, NotFound, Unprocessable
from flywheel_registry.migrate import alembic_config, current_revision, head_revision, upgrade
from flywheel_registry.store import RegistryStore
from flywheel_shared.events import (
    ModelAliasChanged,
    ModelVersionRegistered,
    RolloutVerdict,
    parse_event,
)
from flywheel_shared.spec import load_spec

from .registry_support import sha, spec_text, unique, version_body


def setup_model(store: RegistryStore, name: str | None = None) -> tuple[str, str]:
    name = name or unique()
    store.put_spec(load_spec(spec_text(name)))
    digest = sha(name.encode())
    store.record_artifact(digest, len(name), f"file:///a/{digest}")
    return name, digest


def outbox(store: RegistryStore) -> list:
    with sa.orm.Session(store.engine) as s:
        rows = s.scalars(sa.select(OutboxRow).order_by(OutboxRow.id)).all()
    return [parse_event(r.payload) for r in rows]


def test_migrations_create_exactly_the_orm_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_the_audit_token_migration_keeps_the_rows_and_goes_back(db_url: str) -> None:
    engine = make_engine(db_url)
    row = {"m": "m1", "a": "production", "t": 1, "x": "move", "who": "api", "r": "old"}
    insert = sa.text(
        "INSERT INTO audit_log (model, alias, from_version, to_version, weight, action, actor,"
        " reason, at) VALUES (:m, :a, NULL, :t, NULL, :x, :who, :r, CURRENT_TIMESTAMP)"
    )
    try:
        assert upgrade(engine, "0001") == "0001"
        with engine.begin() as conn:
            conn.execute(insert, row)
        assert upgrade(engine) == head_revision()
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT alias, token, reason FROM audit_log")).all()
        assert [tuple(r) for r in kept] == [("production", None, "old")]
        with engine.begin() as conn:
            conn.execute(insert, {**row, "a": None, "x": "register", "r": "new"})
        cfg = alembic_config()
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
            conn.commit()
        assert current_revision(engine) == "0001"
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT alias, reason FROM audit_log")).all()
        assert [tuple(r) for r in left] == [("production", "old")]
    finally:
        engine.dispose()


def test_spec_round_trip_and_contracts(store: RegistryStore) -> None:
    name = unique()
    info, created = store.put_spec(load_spec(spec_text(name)))
    assert created and info.name == name and info.spec is not None
    again, created = store.put_spec(load_spec(spec_text(name)))
    assert not created and again.spec_sha256 == info.spec_sha256
    assert store.get_spec(name)["apiVersion"] == "flywheel/v1"
    assert store.get_contract("transactions").id_field == "transaction_id"
    assert [c.name for c in store.list_contracts()] == ["transactions"]
    with pytest.raises(NotFound) as exc:
        store.get_contract("nope")
    assert exc.value.code == "unknown_dataset"
    assert [m.name for m in store.list_models()] == [name]


def test_register_numbers_versions_and_is_idempotent_by_run_id(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    v1, created1 = store.register_version(name, version_body("run-1", digest))
    v2, created2 = store.register_version(name, version_body("run-2", digest, status="rejected"))
    again, created3 = store.register_version(name, version_body("run-1", digest))
    assert (v1.version, v2.version, again.version) == (1, 2, 1)
    assert (created1, created2, created3) == (True, True, False)
    assert v1.artifact_uri == f"file:///a/{digest}" and v1.lineage.snapshot_id == "snap-run-1"
    events = outbox(store)
    assert [type(e) for e in events] == [ModelVersionRegistered, ModelVersionRegistered]
    assert str(events[0].correlation_id) == v1.correlation_id
    assert store.get_model(name).latest_version == 2
    with pytest.raises(Unprocessable):
        store.register_version(name, version_body("run-3", "0" * 64))
    with pytest.raises(NotFound):
        store.register_version("nope", version_body("run-3", digest))


def test_concurrent_registrations_get_distinct_dense_numbers(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    barrier = threading.Barrier(8)

    def register(i: int) -> int:
        barrier.wait()
        # Half the threads race on the same run ids: each run registers once.
        return store.register_version(name, version_body(f"run-{i % 4}", digest))[0].version

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(register, range(8)))
    assert sorted(set(results)) == [1, 2, 3, 4]
    versions = store.list_versions(name)
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert sorted(v.run_id for v in versions) == [f"run-{i}" for i in range(4)]
    assert len(outbox(store)) == 4


def test_first_alias_moves_in_the_same_transaction(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    v, _ = store.register_version(name, version_body("r1", digest, first_alias="canary"))
    store.register_version(
        name, version_body("r2", digest, status="rejected", first_alias="shadow")
    )
    info = store.get_model(name)
    assert info.aliases["canary"].version == v.version
    assert info.aliases["canary"].weight == 0.1  # the spec's first canary step
    assert "shadow" not in info.aliases  # rejected versions get no alias
    [entry] = store.history(name)
    assert (entry.alias, entry.from_version, entry.to_version) == ("canary", None, 1)
    kinds = [type(e).__name__ for e in outbox(store)]
    assert kinds == ["ModelVersionRegistered", "ModelAliasChanged", "ModelVersionRegistered"]


def test_a_registration_for_the_rollout_follows_the_spec(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    v1, _ = store.register_version(name, version_body("r1", digest), rollout=True)
    store.register_version(name, version_body("r2", digest, status="rejected"), rollout=True)
    v3, _ = store.register_version(name, version_body("r3", digest), rollout=True)
    aliases = store.get_model(name).aliases
    assert {a: s.version for a, s in aliases.items()} == {"production": 1, "shadow": 3}
    assert (v1.version, v3.version) == (1, 3)
    [shadow, production] = store.history(name)
    assert (production.alias, production.to_version, production.actor) == ("production", 1, "api")
    assert shadow.reason == "first alias of version 3 (run r3)"
    with pytest.raises(Unprocessable):
        store.register_version(name, version_body("r4", digest, first_alias="canary"), rollout=True)


def test_alias_moves_are_audited_and_announced(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    for i in range(3):
        store.register_version(name, version_body(f"r{i}", digest))
    store.move_alias(name, "production", 1, reason="first", actor="alice")
    store.move_alias(name, "canary", 2, weight=0.25, reason="try", actor="bob")
    assert store.move_alias(name, "canary", 2, weight=0.25).weight == 0.25  # no-op
    state = store.move_alias(name, "production", 2, reason="ship", actor="alice")
    assert state.version == 2
    aliases = store.get_model(name).aliases
    assert set(aliases) == {"production"}  # promoting v2 cleared its canary
    history = store.history(name)
    assert [(h.alias, h.from_version, h.to_version, h.actor) for h in history] == [
        ("canary", 2, None, "alice"),
        ("production", 1, 2, "alice"),
        ("canary", None, 2, "bob"),
        ("production", None, 1, "alice"),
    ]
    changed = [e for e in outbox(store) if isinstance(e, ModelAliasChanged)]
    assert [(e.alias, e.version, e.previous_version, e.actor) for e in changed] == [
        ("production", 1, None, "alice"),
        ("canary", 2, None, "bob"),
        ("production", 2, 1, "alice"),
        ("canary", None, 2, "alice"),
    ]
    assert changed[1].weight == 0.25 and changed[1].reason == "try"
    v2 = store.get_version(name, 2)
    assert str(changed[2].correlation_id) == v2.correlation_id

    store.remove_alias(name, "production", reason="incident", actor="carol")
    assert store.get_model(name).aliases == {}
    with pytest.raises(NotFound):
        store.remove_alias(name, "production")


def test_alias_moves_are_refused_for_bad_targets(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    store.register_version(name, version_body("r1", digest))
    store.register_version(name, version_body("r2", digest, status="rejected"))
    with pytest.raises(NotFound) as nf:
        store.move_alias(name, "production", 9)
    assert nf.value.code == "unknown_version"
    with pytest.raises(Conflict) as conflict:
        store.move_alias(name, "production", 2)
    assert conflict.value.code == "version_not_servable"
    with pytest.raises(Invalid):
        store.move_alias(name, "production", 1, weight=0.5)
    with pytest.raises(Invalid):
        store.move_alias(name, "staging", 1)
    store.move_alias(name, "production", 1)
    with pytest.raises(Conflict) as in_use:
        store.set_status(name, 1, "archived")
    assert in_use.value.code == "version_in_use"
    store.register_version(name, version_body("r3", digest))
    assert store.set_status(name, 3, "archived", "superseded").status == "archived"
    with pytest.raises(Conflict):
        store.move_alias(name, "shadow", 3)


def test_rollback_follows_the_audit_log(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    for i in range(4):
        store.register_version(name, version_body(f"r{i}", digest))
    with pytest.raises(Conflict) as none_yet:
        store.rollback(name)
    assert none_yet.value.code == "no_previous_version"
    for v in (1, 2, 3):
        store.move_alias(name, "production", v)
    assert store.rollback(name, reason="bad v3", actor="oncall").version == 2
    assert store.rollback(name).version == 1
    with pytest.raises(Conflict):
        store.rollback(name)
    store.move_alias(name, "production", 4)
    store.set_status(name, 2, "archived")
    assert store.rollback(name).version == 1  # v2 is archived: skipped
    newest = store.history(name)[0]
    assert (newest.from_version, newest.to_version, newest.actor) == (4, 1, "api")
    assert newest.reason == "rollback from version 4"


def _verdict(name: str, version: int, alias: str, decision: str, **kw: object) -> RolloutVerdict:
    return RolloutVerdict(
        model=name,
        version=version,
        alias=alias,  # type: ignore[arg-type]
        decision=decision,  # type: ignore[arg-type]
        reasons=["error rate 0.1% <= 1%"],
        **kw,  # type: ignore[arg-type]
    )


def test_verdicts_walk_the_rollout_policy_once_each(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    store.register_version(name, version_body("r1", digest))
    store.move_alias(name, "production", 1)
    store.register_version(name, version_body("r2", digest, first_alias="shadow"))

    def aliases() -> dict[str, tuple[int, float | None]]:
        return {a: (s.version, s.weight) for a, s in store.get_model(name).aliases.items()}

    first = _verdict(name, 2, "shadow", "advance")
    assert store.apply_verdict(first).outcome == "applied"
    assert aliases() == {"production": (1, None), "canary": (2, 0.1)}
    assert store.apply_verdict(first).outcome == "duplicate"  # redelivered: nothing moves
    assert aliases() == {"production": (1, None), "canary": (2, 0.1)}
    assert store.apply_verdict(_verdict(name, 2, "canary", "hold")).outcome == "hold"
    assert store.apply_verdict(_verdict(name, 2, "canary", "advance")).outcome == "applied"
    assert aliases() == {"production": (1, None), "canary": (2, 0.5)}
    assert store.apply_verdict(_verdict(name, 2, "canary", "advance")).outcome == "applied"
    assert aliases() == {"production": (2, None)}
    assert store.apply_verdict(_verdict(name, 2, "canary", "advance")).outcome == "stale"
    monitor = [h for h in store.history(name) if h.actor == "monitor"]
    assert len(monitor) == 5
    assert all(h.reason.startswith("rollout verdict advance: error rate") for h in monitor)


def test_verdict_rollback_and_promote(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    store.register_version(name, version_body("r1", digest))
    store.move_alias(name, "production", 1)
    store.register_version(name, version_body("r2", digest, first_alias="canary"))
    assert store.apply_verdict(_verdict(name, 2, "canary", "rollback")).outcome == "applied"
    info = store.get_model(name)
    assert set(info.aliases) == {"production"} and info.aliases["production"].version == 1
    assert store.get_version(name, 2).status == "candidate"  # marks nothing else
    store.register_version(name, version_body("r3", digest, first_alias="shadow"))
    assert store.apply_verdict(_verdict(name, 3, "shadow", "promote")).outcome == "applied"
    info = store.get_model(name)
    assert set(info.aliases) == {"production"} and info.aliases["production"].version == 3
    assert store.apply_verdict(_verdict("nope", 1, "canary", "promote")).outcome == "unknown_model"


def test_concurrent_duplicate_verdicts_apply_once(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    store.register_version(name, version_body("r1", digest, first_alias="canary"))
    verdict = _verdict(name, 1, "canary", "advance")
    barrier = threading.Barrier(4)

    def apply(_: int) -> str:
        barrier.wait()
        for _attempt in range(3):  # the consumer retries a handler that raised
            try:
                return store.apply_verdict(verdict).outcome
            except sa.exc.IntegrityError:
                continue
        raise AssertionError("never applied")

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(apply, range(4)))
    assert outcomes == ["applied", "duplicate", "duplicate", "duplicate"]
    assert store.get_model(name).aliases["canary"].weight == 0.5


def test_outbox_rows_commit_with_the_change_or_not_at_all(store: RegistryStore) -> None:
    name, digest = setup_model(store)
    store.register_version(name, version_body("r1", digest))
    before = len(outbox(store))
    with pytest.raises(Conflict):
        store.rollback(name)
    with pytest.raises(NotFound):
        store.move_alias(name, "production", 7)
    assert len(outbox(store)) == before
    with sa.orm.Session(store.engine) as s:
        # The registration is audited; the refused rollback and move left no row.
        assert s.scalars(sa.select(AuditRow.action)).all() == ["register"]
    pending = store.pending_events(10)
    assert [p.event_id for p in pending] == [str(e.event_id) for e in outbox(store)]
    assert store.pending_count() == len(pending)
    store.mark_published([p.id for p in pending])
    assert store.pending_events(10) == [] and store.pending_count() == 0
