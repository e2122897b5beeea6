"""The registry as a real process, on a real Kafka broker, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from flywheel_devkit.kafka import pick_free_port
from flywheel_devkit.testing.kafka_io import read_events
from flywheel_devkit.testing.procs import ServiceProcess, run_to_exit
from flywheel_registry.artifacts import artifact_key
from flywheel_registry.cli import models as models_cli
from flywheel_registry.migrate import head_revision
from flywheel_shared.auth import token_digest
from flywheel_shared.events import (
    Event,
    ModelAliasChanged,
    ModelVersionRegistered,
    RolloutVerdict,
)
from flywheel_shared.kafka.producer import EventProducer
from flywheel_shared.registry import RegistryClient, RegistryError
from flywheel_shared.settings import KafkaSettings
from flywheel_shared.topics import TopicNamer

from .registry_support import spec_text, unique, version_body

pytestmark = pytest.mark.integration
TOKEN = "integration-token-0123456789"
# Named tokens with roles, next to the single TOKEN (the principal 'default', every role).
ROLE_TOKENS = {
    "ops-alice": ("alice-0123456789abcdef", "operator"),
    "reader-bob": ("bob-0123456789abcdef", "reader"),
    "trainer-svc": ("trainer-0123456789abcdef", "service"),
    "approver-carol": ("carol-0123456789abcdef", "approver"),
}


def tokens_file(directory: Path) -> Path:
    """A tokens file of ROLE_TOKENS, by digest (the tokens themselves are not in it)."""
    lines = ["tokens:"]
    for name, (secret, role) in ROLE_TOKENS.items():
        lines.append(f"  - {{name: {name}, sha256: '{token_digest(secret)}', roles: [{role}]}}")
    path = directory / "tokens.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def secret(name: str) -> str:
    return ROLE_TOKENS[name][0]


class Registry:
    """One registry process: its topic prefix, database, store and environment."""

    def __init__(
        self, bootstrap: str, tmp: Path, db_url: str, *, prefix: str | None = None, **env: str
    ) -> None:
        self.bootstrap, self.tmp, self.db_url = bootstrap, tmp, db_url
        self.prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
        self.topics = TopicNamer(self.prefix)
        self.store_dir = tmp / "store"
        self.env = env
        port = pick_free_port()
        self.proc = ServiceProcess(
            "flywheel_registry",
            {
                "FLYWHEEL_KAFKA_BOOTSTRAP": bootstrap,
                "FLYWHEEL_KAFKA_TOPIC_PREFIX": self.prefix,
                "FLYWHEEL_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "FLYWHEEL_STORAGE_URI": str(self.store_dir),
                "FLYWHEEL_REGISTRY_DATABASE_URL": db_url,
                "FLYWHEEL_REGISTRY_PORT": str(port),
                "FLYWHEEL_REGISTRY_TOKEN": TOKEN,
                "FLYWHEEL_REGISTRY_CONSUMER_GROUP": f"flywheel-registry-{self.prefix}",
                "FLYWHEEL_REGISTRY_RELAY_POLL_S": "0.2",
                **env,
            },
            port,
            tmp / "registry.log",
        )

    def again(self, **env: str) -> Registry:
        """A new process on the same database, store and topics."""
        return Registry(self.bootstrap, self.tmp, self.db_url, prefix=self.prefix, **env)

    def client(self, token: str | None = TOKEN) -> RegistryClient:
        return RegistryClient(self.proc.url, token, actor="integration")

    async def read(self, topic: str, until: Callable[[list[Event]], bool]) -> list[Event]:
        return await read_events(self.bootstrap, self.topics(topic), until=until, timeout=30)

    async def publish(self, *events: Event) -> None:
        producer = EventProducer(
            KafkaSettings(bootstrap=self.bootstrap, topic_prefix=self.prefix), "test"
        )
        await producer.start()
        try:
            await producer.publish_all(list(events))
        finally:
            await producer.stop()


def of_model(events: list[Event], name: str, kind: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind) and getattr(e, "model", None) == name]


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def model_with_versions(
    client: RegistryClient, n: int, *, first_alias: str | None = None
) -> tuple[str, list[int]]:
    name = unique()
    await client.put_spec(spec_text(name))
    artifact = await client.upload_artifact(name.encode())
    versions = []
    for i in range(n):
        body = version_body(
            f"{name}-run{i}",
            artifact.sha256,
            first_alias=first_alias if i == n - 1 else None,
        )
        versions.append((await client.register_version(name, body)).version)
    return name, versions


@pytest.fixture(scope="module")
def registry(
    module_db: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry")
    svc = Registry(
        kafka_bootstrap, tmp, module_db, FLYWHEEL_REGISTRY_TOKENS_FILE=str(tokens_file(tmp))
    )
    svc.proc.start()
    yield svc
    svc.proc.stop()
    assert "registry stopped" in svc.proc.tail(), svc.proc.tail()


async def test_registration_is_announced_once_per_run(registry: Registry) -> None:
    async with registry.client() as client:
        name = unique()
        await client.put_spec(spec_text(name))
        artifact = await client.upload_artifact(b"model-" + name.encode())
        body = version_body(f"{name}-run", artifact.sha256)
        v1 = await client.register_version(name, body)
        again = await client.register_version(name, body)
        assert again == v1 and v1.version == 1
        # A later event of the same model is a barrier: the relay publishes in order.
        await client.move_alias(name, "production", 1, reason="barrier")
    await registry.read(
        "model.alias.changed", lambda ev: bool(of_model(ev, name, ModelAliasChanged))
    )
    events = await registry.read(
        "model.version.registered",
        lambda ev: bool(of_model(ev, name, ModelVersionRegistered)),
    )
    [registered] = of_model(events, name, ModelVersionRegistered)
    assert (registered.version, registered.status) == (1, "candidate")
    assert registered.artifact_sha256 == artifact.sha256
    assert registered.artifact_uri == artifact.uri == v1.artifact_uri
    assert registered.snapshot_id == f"snap-{name}-run"
    assert str(registered.correlation_id) == v1.correlation_id


async def test_alias_moves_are_audited_and_announced(registry: Registry) -> None:
    async with registry.client() as client:
        name, (v1, v2) = await model_with_versions(client, 2)
        await client.move_alias(name, "production", v1, reason="launch")
        await client.move_alias(name, "canary", v2, weight=0.2, reason="try v2")
        history = await client.history(name)
        version2 = await client.get_version(name, v2)
    assert [(h.alias, h.from_version, h.to_version, h.weight, h.actor) for h in history] == [
        ("canary", None, v2, 0.2, "integration"),
        ("production", None, v1, None, "integration"),
    ]
    events = await registry.read(
        "model.alias.changed", lambda ev: len(of_model(ev, name, ModelAliasChanged)) >= 2
    )
    first, second = of_model(events, name, ModelAliasChanged)
    assert (first.alias, first.version, first.previous_version, first.reason) == (
        "production",
        v1,
        None,
        "launch",
    )
    assert (second.alias, second.version, second.weight, second.actor) == (
        "canary",
        v2,
        0.2,
        "integration",
    )
    assert str(second.correlation_id) == version2.correlation_id


async def test_artifact_round_trip_and_tampered_bytes_are_refused(registry: Registry) -> None:
    data = os.urandom(4096)
    async with registry.client() as client:
        artifact = await client.upload_artifact(data)
        assert await client.download_artifact(artifact.sha256) == data
        assert await client.upload_artifact(data) == artifact
        stored = registry.store_dir / artifact_key(artifact.sha256)
        assert artifact.uri == f"file://{stored}"
        stored.write_bytes(data[:100] + b"tampered" + data[108:])
        with pytest.raises(RegistryError) as exc:
            await client.download_artifact(artifact.sha256)
    assert (exc.value.status, exc.value.code) == (500, "integrity_error")


async def test_writes_need_the_token(registry: Registry) -> None:
    async with registry.client(token=None) as anonymous:
        with pytest.raises(RegistryError) as exc:
            await anonymous.put_spec(spec_text(unique()))
        assert (exc.value.status, exc.value.code) == (401, "unauthorized")
        assert isinstance(await anonymous.list_models(), list)  # reads are open
    async with registry.client(token="wrong") as wrong:
        with pytest.raises(RegistryError) as exc:
            await wrong.upload_artifact(b"x")
        assert (exc.value.status, exc.value.code) == (403, "forbidden")


async def test_roles_decide_who_promotes_and_the_audit_names_the_token(
    registry: Registry,
) -> None:
    async with registry.client() as admin:
        name, (v1, v2) = await model_with_versions(admin, 2)
    async with (
        registry.client(secret("reader-bob")) as reader,
        registry.client(secret("trainer-svc")) as trainer,
    ):
        for who, client in (("reader-bob", reader), ("trainer-svc", trainer)):
            for attempt in (
                client.move_alias(name, "production", v1),
                client.rollback(name),
                client.set_status(name, v1, "archived"),
            ):
                with pytest.raises(RegistryError) as exc:
                    await attempt
                assert (exc.value.status, exc.value.code) == (403, "forbidden_role")
                assert f"'{who}'" in exc.value.detail and "'operator'" in exc.value.detail
        with pytest.raises(RegistryError) as exc:
            await reader.upload_artifact(b"reader")
        assert (exc.value.code, "'service'" in exc.value.detail) == ("forbidden_role", True)
        assert [m for m in await reader.list_models() if m.name == name]
        artifact = await trainer.upload_artifact(name.encode() + b"-svc")
        v3 = await trainer.register_version(name, version_body(f"{name}-svc", artifact.sha256))
    async with registry.client(secret("ops-alice")) as ops:
        with pytest.raises(RegistryError) as exc:
            await ops.upload_artifact(b"ops")
        assert exc.value.code == "forbidden_role"
        await ops.move_alias(name, "production", v1, reason="alice promotes")
        await ops.move_alias(name, "production", v2, reason="alice promotes again")
        assert (await ops.rollback(name, reason="alice rolls back")).version == v1
        entries = await ops.audit(model=name)
        by_alice = await ops.audit(token="ops-alice", limit=1000)
        raw = (await ops._http.get("/v1/audit", params={"model": name})).text
    summary = [(e.action, e.alias, e.to_version, e.token) for e in entries]
    assert summary == [
        ("rollback", "production", v1, "ops-alice"),
        ("move", "production", v2, "ops-alice"),
        ("move", "production", v1, "ops-alice"),
        ("register", None, v3.version, "trainer-svc"),
        ("register", None, v2, "default"),
        ("register", None, v1, "default"),
    ]
    assert all(e.actor == "integration" for e in entries)
    assert {e.token for e in by_alice} == {"ops-alice"} and len(by_alice) >= 3
    for token in (TOKEN, *(s for s, _ in ROLE_TOKENS.values())):
        assert token not in raw and token not in registry.proc.tail(400)


async def test_verdicts_on_kafka_walk_the_rollout_policy_once(registry: Registry) -> None:
    async with registry.client() as client:
        name, (v1, v2) = await model_with_versions(client, 2, first_alias="shadow")
        await client.move_alias(name, "production", v1)

        async def aliases() -> dict[str, tuple[int, float | None]]:
            info = await client.get_model(name)
            return {a: (s.version, s.weight) for a, s in info.aliases.items()}

        async def reaches(want: dict[str, tuple[int, float | None]]) -> None:
            async def check() -> bool:
                return await aliases() == want

            await wait_for(check, f"aliases {want}")

        def verdict(alias: str, decision: str, version: int = v2) -> RolloutVerdict:
            return RolloutVerdict(
                model=name,
                version=version,
                alias=alias,  # type: ignore[arg-type]
                decision=decision,  # type: ignore[arg-type]
                reasons=[f"{decision} because the canary looks healthy"],
            )

        await registry.publish(verdict("shadow", "advance"))
        await reaches({"production": (v1, None), "canary": (v2, 0.1)})
        step = verdict("canary", "advance")
        await registry.publish(step)
        await reaches({"production": (v1, None), "canary": (v2, 0.5)})
        # Redelivered: applying it again would promote v2. The rollback after it is a barrier
        # (same key, same partition: handled in order).
        await registry.publish(step, verdict("canary", "rollback"))
        await reaches({"production": (v1, None)})

        artifact = await client.upload_artifact(name.encode())
        body = version_body(f"{name}-run-x", artifact.sha256, first_alias="canary")
        v3 = (await client.register_version(name, body)).version
        await registry.publish(verdict("canary", "hold", v3), verdict("canary", "promote", v3))
        await reaches({"production": (v3, None)})
        history = await client.history(name)
    monitor = [
        (h.alias, h.from_version, h.to_version, h.weight) for h in history if h.actor == "monitor"
    ]
    assert monitor == [
        ("canary", v3, None, None),
        ("production", v1, v3, None),
        ("canary", v2, None, None),
        ("canary", v2, v2, 0.5),
        ("canary", None, v2, 0.1),
        ("shadow", v2, None, None),
    ]
    assert all(
        "because the canary looks healthy" in h.reason for h in history if h.actor == "monitor"
    )
    changed = await registry.read(
        "model.alias.changed", lambda ev: len(of_model(ev, name, ModelAliasChanged)) >= 9
    )
    assert of_model(changed, name, ModelAliasChanged)[-1].actor == "monitor"


async def test_a_gated_promotion_waits_for_an_approver_token(registry: Registry) -> None:
    async with registry.client() as admin:
        name = unique()
        await admin.put_spec(spec_text(name, require_approval="production"))
        artifact = await admin.upload_artifact(name.encode())
        for i, alias in enumerate((None, "canary")):
            body = version_body(f"{name}-run{i}", artifact.sha256, first_alias=alias)
            await admin.register_version(name, body)
        await admin.move_alias(name, "production", 1)
        await registry.publish(
            RolloutVerdict(
                model=name,
                version=2,
                alias="canary",
                decision="promote",
                reasons=["the canary looks healthy"],
            )
        )

        async def held() -> bool:
            return bool(await admin.approvals(model=name))

        await wait_for(held, "an approval pending")
        [pending] = await admin.approvals(model=name)
        assert (pending.version, pending.alias, pending.state) == (2, "production", "pending")
        assert "the canary looks healthy" in pending.reason
        info = await admin.get_model(name)
        assert (info.aliases["production"].version, info.aliases["canary"].version) == (1, 2)
    for who in ("ops-alice", "trainer-svc", "reader-bob"):
        async with registry.client(secret(who)) as client:
            with pytest.raises(RegistryError) as exc:
                await client.approve(name, 2, reason="not mine to approve")
            assert (exc.value.status, exc.value.code) == (403, "forbidden_role")
            assert "'approver'" in exc.value.detail and f"'{who}'" in exc.value.detail

    def cli(token: str, *args: str) -> Any:  # in a thread: the CLI runs its own event loop
        env = {"FLYWHEEL_REGISTRY_URL": registry.proc.url, "FLYWHEEL_REGISTRY_TOKEN": token}
        return CliRunner().invoke(models_cli, list(args), env=env)

    listed = await asyncio.to_thread(cli, TOKEN, "approvals", "--model", name)
    assert listed.exit_code == 0 and "production" in listed.output, listed.output
    refused = await asyncio.to_thread(cli, secret("ops-alice"), "approve", name, "2")
    assert refused.exit_code == 1 and "403 forbidden_role" in refused.output, refused.output
    assert "Traceback" not in refused.output
    carol_token = secret("approver-carol")
    approved = await asyncio.to_thread(
        cli, carol_token, "approve", name, "2", "--reason", "metrics reviewed"
    )
    assert approved.exit_code == 0, approved.output
    assert "production → v2 (approved)" in approved.output
    async with registry.client(carol_token) as carol:
        [done] = await carol.approvals(model=name, state="approved")
        assert (done.version, done.decided_by) == (2, "approver-carol")
        assert set((await carol.get_model(name)).aliases) == {"production"}
        assert (await carol.get_model(name)).aliases["production"].version == 2
        with pytest.raises(RegistryError) as exc:
            await carol.approve(name, 2)
        assert (exc.value.status, exc.value.code) == (409, "no_pending_approval")
        audit = await carol.audit(model=name, token="approver-carol")
    assert {(e.action, e.alias, e.to_version) for e in audit} == {
        ("approve", "production", 2),
        ("approve", "canary", None),
    }
    assert all("metrics reviewed" in e.reason for e in audit)
    changed = await registry.read(
        "model.alias.changed",
        lambda ev: any(
            e.alias == "production" and e.version == 2
            for e in of_model(ev, name, ModelAliasChanged)
        ),
    )
    promoted = [e for e in of_model(changed, name, ModelAliasChanged) if e.version == 2]
    assert promoted[-1].alias == "production" and "metrics reviewed" in promoted[-1].reason


def test_cli_reads_and_steers_the_registry(registry: Registry, tmp_path: Path) -> None:
    name = unique()
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_text(name))
    runner = CliRunner()
    env = {"FLYWHEEL_REGISTRY_URL": registry.proc.url, "FLYWHEEL_REGISTRY_TOKEN": TOKEN}

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(models_cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    assert "spec applied" in cli("apply-spec", str(spec_file))

    async def register() -> None:
        async with registry.client() as client:
            artifact = await client.upload_artifact(b"cli")
            for i in range(2):
                await client.register_version(name, version_body(f"{name}-{i}", artifact.sha256))

    asyncio.run(register())
    assert "production → v1" in cli("promote", name, "1", "--reason", "first")
    assert "production → v2" in cli("promote", name, "2")
    assert "production → v1" in cli("rollback", name, "--reason", "v2 misbehaves")
    assert "canary → v2 at 25%" in cli(
        "promote", name, "2", "--alias", "canary", "--weight", "0.25"
    )

    async def canary() -> tuple[int, float | None]:
        async with registry.client() as client:
            state = (await client.get_model(name)).aliases["canary"]
            return state.version, state.weight

    assert asyncio.run(canary()) == (2, 0.25)
    assert "--weight" in cli("promote", name, "2", "--weight", "1.5", code=2)
    assert name in cli("list")
    shown = cli("show", name)
    assert "transactions" in shown and "production" in shown
    assert "candidate" in cli("versions", name)
    assert "v2 misbehaves" in cli("history", name)
    audited = cli("audit", "--model", name, "--limit", "3")
    assert "rollback" in audited and "default" in audited and TOKEN not in audited
    refused = cli("rollback", name, code=1)
    assert "409 no_previous_version" in refused and "Traceback" not in refused
    assert "404 unknown_model" in cli("show", "nope", code=1)
    unreachable = runner.invoke(
        models_cli, ["--url", f"http://127.0.0.1:{pick_free_port()}", "list"], env=env
    )
    assert unreachable.exit_code == 1 and "cannot reach the registry" in unreachable.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    assert "invalid spec" in cli("apply-spec", str(bad), code=1)


def test_production_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    proc = run_to_exit(
        "flywheel_registry",
        {
            "FLYWHEEL_REGISTRY_ENVIRONMENT": "production",
            "FLYWHEEL_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        },
        unset=("FLYWHEEL_REGISTRY_TOKEN",),
    )
    assert proc.returncode == 2
    assert "needs FLYWHEEL_REGISTRY_TOKEN" in proc.stderr
    assert not (tmp_path / "r.db").exists()  # refused before touching anything


@pytest.mark.slow
async def test_a_crash_after_kafka_acked_but_before_the_outbox_knew_republishes_the_same_ids(
    db_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The real at-least-once window: Kafka acknowledged the batch, the process died before
    marking it. The next relay publishes it again with the same event ids, so consumers that
    dedupe on event_id (every kernel consumer) apply it once."""
    first = Registry(kafka_bootstrap, tmp_path, db_url, FLYWHEEL_REGISTRY_RELAY_ENABLED="false")
    first.proc.start()
    try:
        async with first.client() as client:
            name, (v1,) = await model_with_versions(client, 1)
            await client.move_alias(name, "production", v1, reason="acked, then crash")
    finally:
        first.proc.kill()  # the changes are committed and wait in the outbox
    crashing = first.again(FLYWHEEL_REGISTRY_FAULT_CRASH_AFTER_PUBLISH="true")
    crashing.proc.start(wait=False)
    deadline = time.monotonic() + 60
    while crashing.proc.proc is not None and crashing.proc.proc.poll() is None:
        assert time.monotonic() < deadline, "the fault did not fire:\n" + crashing.proc.tail()
        await asyncio.sleep(0.1)
    assert crashing.proc.proc is not None and crashing.proc.proc.returncode == 137
    assert "crashing after publish" in crashing.proc.tail()

    def of_alias(events: list[Event]) -> list[ModelAliasChanged]:
        return [
            e for e in of_model(events, name, ModelAliasChanged) if e.reason == "acked, then crash"
        ]

    once = await first.read("model.alias.changed", lambda ev: len(of_alias(ev)) >= 1)
    assert len(of_alias(once)) == 1  # on Kafka, yet still pending in the outbox:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            pending = conn.execute(
                sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            ).scalar_one()
        assert pending >= 1
        third = first.again()
        third.proc.start()
        try:
            twice = await third.read("model.alias.changed", lambda ev: len(of_alias(ev)) >= 2)
        finally:
            third.proc.stop()
        with engine.connect() as conn:
            assert not conn.execute(
                sa.text("SELECT 1 FROM outbox WHERE published_at IS NULL")
            ).first()
    finally:
        engine.dispose()
    copies = of_alias(twice)
    assert len(copies) == 2 and copies[0].event_id == copies[1].event_id  # a redelivery
    assert copies[0] == copies[1]


@pytest.mark.slow
async def test_sigkill_between_commit_and_publish_publishes_exactly_once(
    db_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    first = Registry(kafka_bootstrap, tmp_path, db_url, FLYWHEEL_REGISTRY_RELAY_ENABLED="false")
    first.proc.start()
    try:
        async with first.client() as client:
            name, (v1,) = await model_with_versions(client, 1)
            await client.move_alias(name, "production", v1, reason="committed, not published")
    finally:
        first.proc.kill()  # SIGKILL: the relay never ran

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            pending = dict(
                conn.execute(
                    sa.text("SELECT event_id, topic FROM outbox WHERE published_at IS NULL")
                ).all()
            )
        assert sorted(pending.values()) == ["model.alias.changed", "model.version.registered"]

        second = first.again()
        second.proc.start()
        try:

            async def published() -> bool:
                with engine.connect() as conn:
                    return not conn.execute(
                        sa.text("SELECT 1 FROM outbox WHERE published_at IS NULL")
                    ).first()

            await wait_for(published, "outbox published after the restart")
        finally:
            assert second.proc.stop() is not None

        third = first.again()
        third.proc.start()
        try:
            async with third.client() as client:
                await client.move_alias(name, "shadow", v1, reason="barrier")
            # Published in id order: once the barrier is on Kafka, a republish would be too.
            events = await third.read(
                "model.alias.changed",
                lambda ev: any(getattr(e, "reason", "") == "barrier" for e in ev),
            )
            events += await third.read(
                "model.version.registered", lambda ev: bool(of_model(ev, name, Event))
            )
        finally:
            third.proc.stop()
    finally:
        engine.dispose()
    seen = Counter(str(e.event_id) for e in events)
    assert {eid: seen[eid] for eid in pending} == dict.fromkeys(pending, 1)
    [moved] = [e for e in events if str(e.event_id) in pending and isinstance(e, ModelAliasChanged)]
    assert (moved.model, moved.alias, moved.version) == (name, "production", v1)
    assert moved.reason == "committed, not published"


async def test_readiness_and_metrics(registry: Registry) -> None:
    async with httpx.AsyncClient(base_url=registry.proc.url) as http:
        ready = (await http.get("/readyz")).json()
        assert ready == {"status": "ready", "checks": ["database", "kafka", "storage"]}
        metrics = (await http.get("/metrics")).text
    for name in (
        "flywheel_registry_versions_registered_total",
        "flywheel_registry_alias_moves_total",
        "flywheel_registry_outbox_pending",
        "flywheel_registry_relay_published_total",
        "flywheel_http_requests_total",
    ):
        assert name in metrics


def test_migrate_command_brings_an_empty_database_to_head(db_url: str) -> None:
    env = {
        **os.environ,
        "FLYWHEEL_REGISTRY_DATABASE_URL": db_url,
        "FLYWHEEL_REGISTRY_LOG_JSON": "false",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "flywheel_registry", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"at revision {head_revision()}" in proc.stdout
    engine = sa.create_engine(db_url)
    try:
        assert {"models", "versions", "aliases", "audit_log", "outbox", "artifacts"} <= set(
            sa.inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
