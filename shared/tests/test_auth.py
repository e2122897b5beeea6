"""The shared bearer-token guard and secret loading (in-process HTTP through Starlette's test
client: the guard is ours; the services' own tests use it over real HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from flywheel_shared.auth import (
    ALL_ROLES,
    ANONYMOUS,
    DEFAULT_PRINCIPAL,
    Principal,
    Role,
    TokenTable,
    UnsafeSettings,
    bearer_guard,
    read_secret,
    require_token,
    token_digest,
)
from flywheel_shared.http import install_api_errors


def client(token: str | None) -> TestClient:
    app = FastAPI()
    install_api_errors(app)

    @app.post("/w", dependencies=[Depends(bearer_guard(token, "test service"))])
    async def write() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


def test_the_guard_says_401_without_a_token_403_for_a_wrong_one_and_lets_the_right_one_in() -> None:
    c = client("s3cret-token")
    missing = c.post("/w")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["code"] == "unauthorized"
    assert "test service needs" in missing.json()["detail"]
    assert c.post("/w", headers={"authorization": "Basic abc"}).status_code == 401
    wrong = c.post("/w", headers={"authorization": "Bearer s3cret-tokeN"})
    assert wrong.status_code == 403 and "s3cret" not in wrong.text
    assert c.post("/w", headers={"authorization": "bearer  s3cret-token "}).json() == {"ok": True}


def test_without_a_token_the_guard_is_open() -> None:
    assert client(None).post("/w").status_code == 200


def test_a_secret_file_wins_and_its_whitespace_is_dropped(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert read_secret(SecretStr("from-env"), f) == "from-file"
    assert read_secret(SecretStr(" from-env "), None) == "from-env"
    assert read_secret("   ", None) is None and read_secret(None, None) is None
    with pytest.raises(UnsafeSettings, match="cannot read the secret file"):
        read_secret(None, tmp_path / "absent")


def test_production_refuses_no_token_dev_allows_it() -> None:
    with pytest.raises(UnsafeSettings, match="production needs FLYWHEEL_X_TOKEN or FLYWHEEL_X"):
        require_token(None, environment="production", variable="FLYWHEEL_X_TOKEN", what="writes")
    require_token(None, environment="dev", variable="FLYWHEEL_X_TOKEN", what="writes")
    require_token("t", environment="production", variable="FLYWHEEL_X_TOKEN", what="writes")


def roles_app(table: TokenTable) -> TestClient:
    app = FastAPI()
    install_api_errors(app)

    operator = Depends(table.require(Role.OPERATOR, service="test service"))
    reader = Depends(table.require(Role.READER, service="test service"))

    @app.post("/promote")
    async def promote(who: Principal = operator) -> dict[str, str]:
        return {"name": who.name}

    @app.get("/read")
    async def read(who: Principal = reader) -> dict[str, str]:
        return {"name": who.name}

    return TestClient(app)


def tokens_file(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "tokens.yaml"
    f.write_text(text)
    return f


def test_a_tokens_file_names_tokens_by_digest_or_file_and_gives_them_roles(tmp_path: Path) -> None:
    (tmp_path / "svc").write_text("svc-secret\n")
    f = tokens_file(
        tmp_path,
        f"tokens:\n"
        f"  - {{name: ops-alice, sha256: {token_digest('alice-secret')}, roles: [operator]}}\n"
        f"  - name: trainer\n    token_file: {tmp_path / 'svc'}\n    roles: [service]\n",
    )
    table = TokenTable.for_service("legacy", f)
    assert table.names() == [DEFAULT_PRINCIPAL, "ops-alice", "trainer"]
    alice = table.lookup("alice-secret")
    assert alice == Principal("ops-alice", frozenset({Role.OPERATOR}))
    assert alice.has(Role.READER) and not alice.has(Role.APPROVER)
    assert table.lookup("svc-secret") == Principal("trainer", frozenset({Role.SERVICE}))
    assert table.lookup("legacy") == Principal(DEFAULT_PRINCIPAL, ALL_ROLES)
    assert table.lookup("nope") is None
    # JSON (a list of entries) reads the same way
    json_file = tmp_path / "tokens.json"
    json_file.write_text(
        json.dumps([{"name": "r", "sha256": token_digest("r-secret"), "roles": ["reader"]}])
    )
    assert TokenTable.for_service(None, json_file).lookup("r-secret") == Principal(
        "r", frozenset({Role.READER})
    )


def test_require_says_401_403_forbidden_or_forbidden_role_naming_role_and_token(
    tmp_path: Path,
) -> None:
    f = tokens_file(
        tmp_path,
        f"- {{name: ops-alice, sha256: {token_digest('alice-secret')}, roles: [operator]}}\n"
        f"- {{name: bot, sha256: {token_digest('bot-secret')}, roles: [service]}}\n",
    )
    c = roles_app(TokenTable.for_service(None, f))
    missing = c.post("/promote")
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    wrong = c.post("/promote", headers={"authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["code"]) == (403, "forbidden")
    bot = c.post("/promote", headers={"authorization": "Bearer bot-secret"})
    assert (bot.status_code, bot.json()["code"]) == (403, "forbidden_role")
    assert "'bot'" in bot.json()["detail"] and "'operator'" in bot.json()["detail"]
    assert "bot-secret" not in bot.text
    ok = c.post("/promote", headers={"authorization": "Bearer alice-secret"})
    assert ok.json() == {"name": "ops-alice"}
    assert c.get("/read", headers={"authorization": "Bearer bot-secret"}).json() == {"name": "bot"}
    # the old single token holds every role; no token at all is open (anonymous)
    legacy = roles_app(TokenTable.for_service("legacy", None))
    assert legacy.post("/promote", headers={"authorization": "Bearer legacy"}).json() == {
        "name": DEFAULT_PRINCIPAL
    }
    assert roles_app(TokenTable()).post("/promote").json() == {"name": ANONYMOUS.name}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tokens: [{name: a, roles: [operator]}]", "exactly one of sha256 and token_file"),
        ("tokens: [{name: a, sha256: abc, roles: [operator]}]", "sha256"),
        (f"tokens: [{{name: a, sha256: {'ab' * 32}, roles: [boss]}}]", "roles"),
        (f"tokens: [{{name: a, sha256: {'ab' * 32}, roles: []}}]", "roles"),
        (f"tokens: [{{name: a, sha256: {'1' * 64}, roles: [reader]}}]", "quote it in YAML"),
        (f"- {{name: a, sha256: '{'0' * 64}', roles: [reader]}}\n" * 2, "unique: a"),
        ("tokens: [{name: a, token_file: /nonexistent/x, roles: [reader]}]", "cannot read"),
        ("tokens: [", "does not parse"),
    ],
)
def test_a_bad_tokens_file_refuses_to_start(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(UnsafeSettings, match=problem):
        TokenTable.for_service(None, tokens_file(tmp_path, text))
    with pytest.raises(UnsafeSettings, match="cannot read the tokens file"):
        TokenTable.for_service(None, tmp_path / "absent.yaml")
