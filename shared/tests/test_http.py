"""The shared HTTP pieces that make a service's OpenAPI document say what it answers: declared
error bodies and headers, bodies a route reads itself, FastAPI's own refusals in the same
shape, and the path guard (in-process, through Starlette's test client)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from flywheel_shared.http import (
    BEARER,
    ApiError,
    EncodedSlashes,
    ErrorBody,
    hoist_schemas,
    install_api_errors,
    install_openapi,
    read_body,
    request_body,
    responses,
)


class Inner(BaseModel):
    n: int


class Thing(BaseModel):
    name: str
    inner: Inner


def app() -> FastAPI:
    api = FastAPI()
    install_api_errors(api)
    install_openapi(api, bearer=True)

    @api.put(
        "/things/{name}",
        responses=responses(401, 403, 404, 413, 503),
        openapi_extra={**BEARER, **request_body({"application/json": Thing})},
    )
    async def put(name: str, request: Request) -> dict[str, Any]:
        body = Thing.model_validate_json(await read_body(request, 100))
        if name == "busy":
            raise ApiError(503, "busy", "retry", {"Retry-After": "1"})
        return {"name": body.name}

    @api.get("/things/{name}/n/{n}", responses=responses(404))
    async def get(name: str, n: int) -> dict[str, Any]:
        return {"name": name, "n": n}

    api.add_middleware(EncodedSlashes)
    return api


def test_the_document_declares_error_bodies_headers_and_the_bodies_routes_read() -> None:
    doc = app().openapi()
    put = doc["paths"]["/things/{name}"]["put"]
    assert list(put["responses"]) == ["200", "401", "403", "404", "413", "422", "503"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for status in ("401", "404", "413", "422", "503"):
        assert put["responses"][status]["content"]["application/json"]["schema"] == error
    assert put["responses"]["503"]["headers"]["Retry-After"]["required"] is True
    assert put["responses"]["401"]["headers"]["WWW-Authenticate"]["schema"]["enum"] == ["Bearer"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Thing"}
    schemas = doc["components"]["schemas"]
    assert {"Thing", "Inner", "ErrorBody"} <= set(schemas)
    assert "HTTPValidationError" not in schemas and "x-flywheel-schemas" not in put
    assert put["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # FastAPI's 422 for a parameter it validates is documented as what is answered.
    get = doc["paths"]["/things/{name}/n/{n}"]["get"]
    assert get["responses"]["422"]["content"]["application/json"]["schema"] == error
    assert "headers" not in responses(503, retry_after=False)[503]


def test_refusals_answer_the_declared_body() -> None:
    c = TestClient(app())
    shape = set(ErrorBody.model_fields)
    bad_param = c.get("/things/a/n/x")
    assert bad_param.status_code == 422 and set(bad_param.json()) == shape
    assert bad_param.json()["code"] == "invalid_request"
    unknown = c.get("/nowhere")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    wrong_method = c.delete("/things/a")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    busy = c.put("/things/busy", json={"name": "x", "inner": {"n": 1}})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    big = c.put("/things/a", content=b"x" * 101)
    assert big.status_code == 413 and big.json()["code"] == "body_too_large"


def test_an_encoded_slash_names_nothing_instead_of_reaching_another_route() -> None:
    c = TestClient(app())
    # Decoded, '/things/a%2Fn%2F1' would be GET /things/a/n/1.
    assert c.get("/things/a/n/1").json() == {"name": "a", "n": 1}
    r = c.get("/things/a%2Fn%2F1")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert c.get("/things/a%2fn%2f1").status_code == 404


def test_two_different_schemas_under_one_name_are_refused() -> None:
    doc = {
        "paths": {
            "/a": {"get": {"x-flywheel-schemas": {"T": {"type": "string"}}, "responses": {}}},
            "/b": {"get": {"x-flywheel-schemas": {"T": {"type": "integer"}}, "responses": {}}},
        }
    }
    with pytest.raises(ValueError, match="'T'"):
        hoist_schemas(doc)


def test_run_service_exits_2_on_unsafe_settings_and_serves_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flywheel_shared.http as http
    from flywheel_shared.auth import UnsafeSettings
    from flywheel_shared.settings import ServiceSettings

    served: list[FastAPI] = []
    monkeypatch.setattr(http, "serve", lambda app, settings: served.append(app))
    monkeypatch.setattr(http, "setup_logging", lambda *a, **k: None)
    settings = ServiceSettings()

    def unsafe(_: ServiceSettings) -> FastAPI:
        raise UnsafeSettings("production needs a token")

    with pytest.raises(SystemExit) as exit_info:
        http.run_service("demo", settings, unsafe)
    assert exit_info.value.code == 2 and not served
    assert "flywheel-demo: production needs a token" in capsys.readouterr().err

    app = FastAPI()
    http.run_service("demo", settings, lambda _: app)
    assert served == [app]
