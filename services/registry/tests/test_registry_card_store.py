"""Model cards on a real database (SQLite and PostgreSQL): facts kept once, the card route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from flywheel_devkit.kafka import pick_free_port
from flywheel_registry.app import create_app
from flywheel_registry.db import make_engine
from flywheel_registry.domain.errors import NotFound
from flywheel_registry.handlers import FactsHandler
from flywheel_registry.migrate import alembic_config, current_revision, head_revision, upgrade
from flywheel_registry.store import RegistryStore
from flywheel_shared.events import (
    DriftDetected,
    ModelVersionRegistered,
    NumericStats,
    RetrainRequested,
    RolloutVerdict,
)
from flywheel_shared.kafka.consumer import TransientError
from flywheel_shared.registry import RegistryClient, RegistryError, VersionCreate
from flywheel_shared.snapshots import Snapshot, write_snapshot
from flywheel_shared.spec import load_spec
from flywheel_shared.storage import ObjectStore

from .registry_support import sha, spec_text, unique, version_body
from .test_registry_api import TOKEN, settings

SNAP = "7c" * 32


def drift(name: str, version: int) -> DriftDetected:
    return DriftDetected(
        model=name,
        version=version,
        detector="cvm",
        features=["amount"],
        p_values={"amount": 0.002},
        threshold=0.01,
        window=500,
    )


def drop_generated(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if not line.startswith("_Generated ")]


def setup(store: RegistryStore) -> str:
    name = unique()
    store.put_spec(load_spec(spec_text(name)))
    digest = sha(name.encode())
    store.record_artifact(digest, len(name), f"file:///a/{digest}")
    body = version_body("r1", digest).model_dump()
    body["lineage"]["snapshot_id"] = SNAP
    store.register_version(name, VersionCreate.model_validate(body))
    return name


def test_facts_are_kept_once_per_event_and_only_for_known_models(
    store: RegistryStore, tmp_path: Path
) -> None:
    name = setup(store)
    episode = drift(name, 1)
    assert store.record_fact(episode) == "recorded"
    assert store.record_fact(episode) == "duplicate"
    assert store.record_fact(drift("nope", 1)) == "unknown_model"
    verdict = RolloutVerdict(
        model=name,
        version=1,
        alias="canary",
        decision="hold",
        reasons=["too few requests"],
        evidence={"requests": 12.0},
    )
    assert store.record_fact(verdict) == "recorded"
    assert store.record_fact(RetrainRequested(model=name, reason="drift")) == "recorded"

    card = store.card(name, 1, ObjectStore(str(tmp_path / "objects")))
    assert [d.event_id for d in card.drift_episodes] == [str(episode.event_id)]
    assert card.drift_episodes[0].p_values == {"amount": 0.002}
    assert [(m.decision, m.evidence) for m in card.live_metrics] == [("hold", {"requests": 12.0})]
    assert card.retrain_requests == []  # v1 never served production
    assert not card.snapshot.found and card.snapshot.note == "snapshot record not found"
    assert [e.action for e in card.alias_history] == ["register"]
    with pytest.raises(NotFound) as exc:
        store.card(name, 9)
    assert exc.value.code == "unknown_version"


def test_the_facts_migration_goes_back_and_forth(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert upgrade(engine) == head_revision() == "0004"
        cfg = alembic_config()
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
            conn.commit()
        assert current_revision(engine) == "0003"
        assert "version_facts" not in sa.inspect(engine).get_table_names()
        assert upgrade(engine) == "0004"
        assert "version_facts" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


async def test_the_facts_handler_ignores_other_events_and_retries_a_database_outage(
    store: RegistryStore,
) -> None:
    name = setup(store)
    handler = FactsHandler(store)
    registered = ModelVersionRegistered(
        model=name, version=1, status="candidate", artifact_uri="x", artifact_sha256="ab" * 32
    )
    await handler(registered, None)  # type: ignore[arg-type]
    await handler(drift(name, 1), None)  # type: ignore[arg-type]
    assert len(store.card(name, 1).drift_episodes) == 1
    away = make_engine(f"postgresql+psycopg://u:p@127.0.0.1:{pick_free_port()}/none")
    try:
        with pytest.raises(TransientError, match="database unavailable"):
            await FactsHandler(RegistryStore(away))(drift(name, 1), None)  # type: ignore[arg-type]
    finally:
        away.dispose()


@pytest.fixture
async def http(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[RegistryClient, Path]]:
    app = create_app(settings(db_url, tmp_path, token=TOKEN, read_auth=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        client = RegistryClient("http://registry", TOKEN)
        await client._http.aclose()
        client._http = httpx.AsyncClient(
            transport=transport, base_url="http://registry", headers=client._http.headers
        )
        async with client:
            yield client, tmp_path / "store"


async def test_the_card_route_answers_json_or_markdown(
    http: tuple[RegistryClient, Path],
) -> None:
    client, store_dir = http
    name = unique()
    await client.put_spec(spec_text(name))
    artifact = await client.upload_artifact(name.encode())
    body = version_body(f"{name}-r1", artifact.sha256).model_dump()
    body["lineage"]["snapshot_id"] = SNAP
    await client.register_version(name, VersionCreate.model_validate(body))
    write_snapshot(
        ObjectStore(str(store_dir)),
        Snapshot(
            id=SNAP,
            dataset="transactions",
            segments=["s1"],
            rows=1000,
            stats={"amount": NumericStats(count=1000, nulls=0, min=1.0, max=5.0)},
            created_at=datetime(2026, 12, 1, tzinfo=UTC),
        ),
    )
    card = await client.card(name, 1)
    assert card.snapshot.found and card.snapshot.rows == 1000
    assert card.snapshot.stats["amount"]["max"] == 5.0
    text = await client.card(name, 1, markdown=True)
    assert text.startswith(f"# Model card: {name} v1") and "| amount | numeric | 1000 |" in text
    raw = client._http
    resp = await raw.get(f"/v1/models/{name}/versions/1/card", params={"format": "markdown"})
    assert resp.headers["content-type"].startswith("text/markdown")
    assert drop_generated(resp.text) == drop_generated(text)  # the same card, a moment later
    resp = await raw.get(f"/v1/models/{name}/versions/1/card", params={"format": "yaml"})
    assert resp.status_code == 422
    for model, version, code in ((name, 7, "unknown_version"), ("nope", 1, "unknown_model")):
        with pytest.raises(RegistryError) as exc:
            await client.card(model, version)
        assert (exc.value.status, exc.value.code) == (404, code)
    anonymous = await raw.get(f"/v1/models/{name}/versions/1/card", headers={"authorization": ""})
    assert anonymous.status_code == 401  # read_auth: readers only
    doc = (await raw.get("/openapi.json")).json()
    route = doc["paths"]["/v1/models/{name}/versions/{version}/card"]["get"]
    assert set(route["responses"]["200"]["content"]) == {"application/json", "text/markdown"}
    assert "404" in route["responses"]
