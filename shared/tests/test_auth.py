"""The shared bearer-token guard and secret loading (in-process HTTP through Starlette's test
client: the guard is ours; the services' own tests use it over real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from flywheel_shared.auth import UnsafeSettings, bearer_guard, read_secret, require_token
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
