"""The quarantine and erasure routes' refusals (no Kafka needed: each fails before a publish)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from ingest_support import fraudless_contract

from flywheel_ingest.app import create_app
from flywheel_ingest.contracts import StaticContracts
from flywheel_ingest.erasure import Erasure
from flywheel_ingest.settings import IngestSettings
from flywheel_shared.auth import token_digest
from flywheel_shared.events import utcnow

AUTH = {"authorization": "Bearer s3cret"}


def client(tmp_path: Path, **settings: Any) -> TestClient:
    s = IngestSettings(token="s3cret", storage={"uri": str(tmp_path)}, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(s, StaticContracts([fraudless_contract()])))


def test_release_and_erase_need_the_token_a_reason_and_a_known_segment(tmp_path: Path) -> None:
    c = client(tmp_path)
    release = "/v1/datasets/tx/segments/p000-000000000000-000000000000/release"
    assert c.post(release, json={"reason": "ok"}).status_code == 401
    assert c.post("/v1/datasets/tx/erase", json={"ids": ["r1"], "reason": "x"}).status_code == 401
    r = c.post(release, json={}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"].startswith("reason:")
    assert c.post(release, json={"reason": ""}, headers=AUTH).status_code == 422
    r = c.post("/v1/datasets/tx/erase", json={"ids": [], "reason": "x"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"].startswith("ids:")
    r = c.post(release, json={"reason": "ok"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["code"] == "unknown_segment"
    r = c.post("/v1/datasets/nope/segments/x/release", json={"reason": "ok"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["code"] == "unknown_dataset"
    listed = c.get("/v1/datasets/tx/quarantined")
    assert listed.status_code == 200 and listed.json() == {"dataset": "tx", "segments": []}


def test_without_the_writer_changes_are_refused(tmp_path: Path) -> None:
    c = client(tmp_path, run_writer=False)
    r = c.post("/v1/datasets/tx/erase", json={"ids": ["r1"], "reason": "x"}, headers=AUTH)
    assert r.status_code == 409 and r.json()["code"] == "no_writer"


def test_release_and_erase_need_the_operator_role_and_name_its_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n"
        f"  - {{name: trainer-svc, sha256: '{token_digest('svc-secret')}', roles: [service]}}\n"
        f"  - {{name: ops-alice, sha256: '{token_digest('ops-secret')}', roles: [operator]}}\n"
    )
    s = IngestSettings(storage={"uri": str(tmp_path)}, tokens_file=str(tokens))  # type: ignore[arg-type]
    app = create_app(s, StaticContracts([fraudless_contract()]))
    c = TestClient(app)
    release = "/v1/datasets/tx/segments/p000-000000000000-000000000000/release"
    svc = {"authorization": "Bearer svc-secret"}
    ops = {"authorization": "Bearer ops-secret"}
    for path, body in ((release, {"reason": "ok"}), ("/v1/datasets/tx/erase", ERASE)):
        r = c.post(path, json=body, headers=svc)
        assert r.status_code == 403 and r.json()["code"] == "forbidden_role", r.text
        assert "operator" in r.json()["detail"] and "svc-secret" not in r.text
    # The operator passes the guard (the segment is unknown) ...
    r = c.post(release, json={"reason": "ok"}, headers=ops)
    assert r.status_code == 404 and r.json()["code"] == "unknown_segment"
    # ... and the writer is told the token's name (for the data.audit record), never its value.
    seen: list[tuple[str, str | None]] = []

    async def erase(
        dataset: str, ids: list[str], actor: str, reason: str, token: str | None
    ) -> Any:
        seen.append((actor, token))
        return Erasure(
            at=utcnow(), actor=actor, reason=reason, id_hashes=[], rows=0, segments=[], snapshots=[]
        )

    app.state.runtime.writer.erase = erase
    r = c.post("/v1/datasets/tx/erase", json=ERASE, headers={**ops, "x-flywheel-actor": "alice"})
    assert r.status_code == 200, r.text
    assert seen == [("alice", "ops-alice")]


ERASE = {"ids": ["r1"], "reason": "request 7"}
