"""The HTTP API in-process (no Kafka needed): the shared RegistryClient against the app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flywheel_registry.app import create_app
from flywheel_registry.artifacts import artifact_key
from flywheel_registry.settings import RegistrySettings, UnsafeSettings
from flywheel_shared.registry import RegistryClient, RegistryError
from flywheel_shared.settings import KafkaSettings, StorageSettings
from flywheel_shared.spec import load_spec

from .registry_support import sha, spec_text, unique, version_body

TOKEN = "s3cret-token-for-tests"


class Api:
    def __init__(self, client: RegistryClient, http: httpx.AsyncClient, store_dir: Path) -> None:
        self.client, self.http, self.store_dir = client, http, store_dir


def settings(db_url: str, tmp_path: Path, **kw: object) -> RegistrySettings:
    return RegistrySettings(
        database_url=db_url,
        storage=StorageSettings(uri=str(tmp_path / "store")),
        kafka=KafkaSettings(bootstrap="127.0.0.1:9"),  # nothing listens: API works without it
        log_json=False,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    app = create_app(settings(db_url, tmp_path, token=TOKEN, max_artifact_bytes=1000))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        client = RegistryClient("http://registry", TOKEN, actor="tester")
        await client._http.aclose()
        client._http = httpx.AsyncClient(
            transport=transport, base_url="http://registry", headers=client._http.headers
        )
        async with client, httpx.AsyncClient(transport=transport, base_url="http://r") as http:
            yield Api(client, http, tmp_path / "store")


async def test_specs_are_validated_and_contracts_served(api: Api) -> None:
    name = unique()
    info = await api.client.put_spec(spec_text(name))
    assert info.name == name and info.spec is not None
    assert (await api.client.get_spec(name)).name == name
    again = await api.client.put_spec(load_spec(spec_text(name)))  # the JSON path
    assert again.spec_sha256 == info.spec_sha256
    assert (await api.client.get_contract("transactions")).label_field == "is_fraud"
    assert [c.name for c in await api.client.list_contracts()] == ["transactions"]

    auth = {"authorization": f"Bearer {TOKEN}"}
    bad = spec_text(name).replace("- amount\n", "- nope\n", 1)
    resp = await api.http.put(
        f"/v1/models/{name}/spec",
        content=bad,
        headers={**auth, "content-type": "application/yaml"},
    )
    assert resp.status_code == 422 and resp.json()["code"] == "invalid_spec"
    assert "feature 'nope' is not a field" in resp.json()["detail"]
    resp = await api.http.put(
        "/v1/models/other/spec",
        content=spec_text(name),
        headers={**auth, "content-type": "text/yaml"},
    )
    assert (resp.status_code, resp.json()["code"]) == (400, "name_mismatch")
    resp = await api.http.put(
        f"/v1/models/{name}/spec", content=b"x", headers={**auth, "content-type": "text/csv"}
    )
    assert (resp.status_code, resp.json()["code"]) == (415, "unsupported_media_type")
    for path, code in [
        ("/v1/datasets/nope/contract", "unknown_dataset"),
        ("/v1/models/nope", "unknown_model"),
        ("/v1/models/nope/versions", "unknown_model"),
        (f"/v1/models/{name}/versions/9", "unknown_version"),
        ("/v1/nothing-here", "not_found"),
    ]:
        resp = await api.http.get(path)
        assert (resp.status_code, resp.json()["code"]) == (404, code), path
        assert resp.json()["detail"]


async def test_versions_aliases_and_errors_through_the_client(api: Api) -> None:
    name = unique()
    await api.client.put_spec(spec_text(name))
    artifact = await api.client.upload_artifact(b"model bytes")
    body = version_body("run-1", artifact.sha256)
    v1 = await api.client.register_version(name, body)
    assert v1.version == 1 and v1.artifact_uri == artifact.uri
    resp = await api.http.post(
        f"/v1/models/{name}/versions",
        content=body.model_dump_json(),
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert resp.status_code == 200 and resp.json()["version"] == 1  # same run: no new version
    v2 = await api.client.register_version(name, version_body("run-2", artifact.sha256))
    await api.client.move_alias(name, "production", v1.version, reason="first")
    canary = await api.client.move_alias(name, "canary", v2.version)
    assert canary.weight == 0.1
    await api.client.remove_alias(name, "canary", reason="not now")
    with pytest.raises(RegistryError) as exc:
        await api.client.rollback(name)
    assert (exc.value.status, exc.value.code) == (409, "no_previous_version")
    await api.client.move_alias(name, "production", v2.version, reason="ship")
    assert (await api.client.rollback(name, reason="oops")).version == 1
    history = await api.client.history(name)
    assert [(h.alias, h.to_version, h.actor) for h in history] == [
        ("production", 1, "tester"),
        ("production", 2, "tester"),
        ("canary", None, "tester"),
        ("canary", 2, "tester"),
        ("production", 1, "tester"),
    ]
    assert history[0].reason == "oops"
    with pytest.raises(RegistryError) as exc:
        await api.client.set_status(name, 1, "archived")
    assert exc.value.code == "version_in_use"
    assert (await api.client.set_status(name, 2, "archived", "old")).status == "archived"
    with pytest.raises(RegistryError) as exc:
        await api.client.move_alias(name, "shadow", 2)
    assert (exc.value.status, exc.value.code) == (409, "version_not_servable")
    with pytest.raises(RegistryError) as exc:
        await api.client.move_alias(name, "shadow", 7)
    assert (exc.value.status, exc.value.code) == (404, "unknown_version")
    with pytest.raises(RegistryError) as exc:
        await api.client.register_version(name, version_body("run-3", "ab" * 32))
    assert (exc.value.status, exc.value.code) == (422, "unknown_artifact")
    resp = await api.http.post(
        f"/v1/models/{name}/versions",
        content=json.dumps({"run_id": "x"}),
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_body")
    models = await api.client.list_models()
    assert [(m.name, m.latest_version, m.aliases["production"].version) for m in models] == [
        (name, 2, 1)
    ]


async def test_the_rollout_query_leaves_the_first_alias_to_the_registry(api: Api) -> None:
    name = unique()
    await api.client.put_spec(spec_text(name))
    artifact = await api.client.upload_artifact(b"model bytes")
    auth = {"authorization": f"Bearer {TOKEN}"}
    for run in ("run-1", "run-2"):
        resp = await api.http.post(
            f"/v1/models/{name}/versions",
            params={"rollout": "true"},
            content=version_body(run, artifact.sha256).model_dump_json(),
            headers=auth,
        )
        assert resp.status_code == 201
    aliases = (await api.client.get_model(name)).aliases
    assert {a: s.version for a, s in aliases.items()} == {"production": 1, "shadow": 2}
    resp = await api.http.post(
        f"/v1/models/{name}/versions",
        params={"rollout": "true"},
        content=version_body("run-3", artifact.sha256, first_alias="canary").model_dump_json(),
        headers=auth,
    )
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_body")


async def test_artifacts_are_content_addressed_and_checked(api: Api) -> None:
    data = b"\x00weights\xff" * 10
    first = await api.client.upload_artifact(data)
    second = await api.client.upload_artifact(data)
    assert first == second and first.sha256 == sha(data) and first.size == len(data)
    stored = api.store_dir / artifact_key(first.sha256)
    assert stored.read_bytes() == data
    assert await api.client.download_artifact(first.sha256) == data

    auth = {"authorization": f"Bearer {TOKEN}"}
    resp = await api.http.post(
        "/v1/artifacts", content=data, headers={**auth, "x-sha256": "0" * 64}
    )
    assert (resp.status_code, resp.json()["code"]) == (400, "hash_mismatch")
    resp = await api.http.post("/v1/artifacts", content=b"x" * 1001, headers=auth)
    assert (resp.status_code, resp.json()["code"]) == (413, "body_too_large")
    resp = await api.http.get(f"/v1/artifacts/{'1' * 64}")
    assert (resp.status_code, resp.json()["code"]) == (404, "unknown_artifact")

    stored.write_bytes(data[:-1] + b"!")
    with pytest.raises(RegistryError) as exc:
        await api.client.download_artifact(first.sha256)
    assert (exc.value.status, exc.value.code) == (500, "integrity_error")
    await api.client.upload_artifact(data)  # re-uploading repairs the stored copy
    assert await api.client.download_artifact(first.sha256) == data


async def test_token_is_required_on_writes(api: Api) -> None:
    resp = await api.http.put("/v1/models/x/spec", content=b"name: x")
    assert (resp.status_code, resp.json()["code"]) == (401, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"
    resp = await api.http.post(
        "/v1/artifacts", content=b"x", headers={"authorization": "Bearer wrong"}
    )
    assert (resp.status_code, resp.json()["code"]) == (403, "forbidden")
    assert (await api.http.get("/v1/models")).status_code == 200  # reads stay open
    assert (await api.http.get("/healthz")).status_code == 200
    metrics = (await api.http.get("/metrics")).text
    assert "flywheel_registry_outbox_pending" in metrics
    assert 'flywheel_http_requests_total{method="PUT",route="/v1/models/{name}/spec"' in metrics


async def test_read_auth_protects_reads_and_production_needs_a_token(
    db_url: str, tmp_path: Path
) -> None:
    app = create_app(settings(db_url, tmp_path, token=TOKEN, read_auth=True))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as http:
            assert (await http.get("/v1/models")).status_code == 401
            ok = await http.get("/v1/models", headers={"authorization": f"Bearer {TOKEN}"})
            assert ok.status_code == 200
            assert (await http.get("/healthz")).status_code == 200  # probes stay open
    with pytest.raises(UnsafeSettings, match="FLYWHEEL_REGISTRY_TOKEN"):
        create_app(settings(db_url, tmp_path, environment="production"))
    create_app(settings(db_url, tmp_path, environment="production", token=TOKEN))
    with pytest.raises(UnsafeSettings, match="fault injection is for tests"):
        create_app(
            settings(
                db_url,
                tmp_path,
                environment="production",
                token=TOKEN,
                fault_crash_after_publish=True,
            )
        )


async def test_the_openapi_names_each_writes_role_and_status_changes_are_audited(
    api: Api,
) -> None:
    document = (await api.http.get("/openapi.json")).json()
    paths = document["paths"]
    roles = {
        (path, method): operation.get("x-flywheel-roles")
        for path, item in paths.items()
        for method, operation in item.items()
        if path.startswith("/v1/")
    }
    assert roles[("/v1/models/{name}/rollback", "post")] == ["operator"]
    assert roles[("/v1/models/{name}/aliases/{alias}", "put")] == ["operator"]
    assert roles[("/v1/models/{name}/aliases/{alias}", "delete")] == ["operator"]
    assert roles[("/v1/models/{name}/versions/{version}", "patch")] == ["operator"]
    assert roles[("/v1/models/{name}/versions", "post")] == ["service"]
    assert roles[("/v1/models/{name}/spec", "put")] == ["service"]
    assert roles[("/v1/artifacts", "post")] == ["service"]
    assert roles[("/v1/models/{name}/versions/{version}/approve", "post")] == ["approver"]
    assert roles[("/v1/audit", "get")] is None  # reads are open without read_auth
    assert roles[("/v1/approvals", "get")] is None
    forbidden = paths["/v1/models/{name}/rollback"]["post"]["responses"]["403"]["description"]
    assert "forbidden_role" in forbidden and "`operator`" in forbidden

    name = unique()
    await api.client.put_spec(spec_text(name))
    artifact = await api.client.upload_artifact(b"status")
    await api.client.register_version(name, version_body(f"{name}-1", artifact.sha256))
    await api.client.set_status(name, 1, "archived", "superseded")
    await api.client.set_status(name, 1, "archived")  # no change: not audited again
    newest = await api.client.audit(model=name)
    assert [(e.action, e.to_version, e.token, e.actor) for e in newest] == [
        ("status", 1, "default", "tester"),
        ("register", 1, "default", "tester"),
    ]
    assert newest[0].reason == "candidate → archived: superseded"
    assert await api.client.history(name) == []  # the alias history keeps alias changes only
    resp = await api.http.get("/v1/audit", params={"model": "nope"})
    assert (resp.status_code, resp.json()["code"]) == (404, "unknown_model")
    assert (await api.http.get("/v1/audit", params={"limit": 0})).status_code == 422
