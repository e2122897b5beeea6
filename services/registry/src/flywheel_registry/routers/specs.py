"""Routes of model specs and the dataset contracts they declare."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from flywheel_shared.auth import Role
from flywheel_shared.http import ApiError, json_response, read_body, request_body
from flywheel_shared.registry import ModelInfo
from flywheel_shared.spec import DatasetContract, ModelSpec

from .deps import Docs, Store, dump, errors, run, v1_router

SPEC_BYTES = 1024 * 1024
_YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


def parse_spec(body: bytes, content_type: str) -> Any:
    """The spec's data from YAML or JSON; 400 if it does not parse, 415 for another type."""
    if content_type in _YAML_TYPES or content_type in ("", "application/json"):
        try:
            return (
                orjson.loads(body) if content_type == "application/json" else yaml.safe_load(body)
            )
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise ApiError(400, "invalid_body", f"cannot parse the spec: {exc}") from exc
    raise ApiError(
        415, "unsupported_media_type", "send the spec as application/yaml or application/json"
    )


async def put_spec(name: str, request: Request, store: Store) -> Response:
    """Body: the spec as YAML (``application/yaml``) or JSON; validated as a ModelSpec.
    201 for a new model, 200 for an update."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data = parse_spec(await read_body(request, SPEC_BYTES), ctype)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_spec", "a spec must be a mapping")
    if data.get("name") != name:
        raise ApiError(
            400,
            "name_mismatch",
            f"the spec is named {data.get('name')!r} but the URL says {name!r}",
        )
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_spec", f"invalid spec: {errors(exc)}") from exc
    info, created = await run(store.put_spec, spec)
    return json_response(201 if created else 200, dump(info))


async def list_models(store: Store) -> Response:
    """Every model with its aliases (specs left out)."""
    return json_response(200, [dump(m) for m in await run(store.list_models)])


async def get_model(name: str, store: Store) -> Response:
    """One model."""
    return json_response(200, dump(await run(store.get_model, name)))


async def get_spec(name: str, store: Store) -> Response:
    """The spec as JSON."""
    return json_response(200, await run(store.get_spec, name))


async def list_contracts(store: Store) -> Response:
    """Contracts declared by the stored specs."""
    return json_response(200, [dump(c) for c in await run(store.list_contracts)])


async def get_contract(dataset: str, store: Store) -> Response:
    """The contract of ``dataset``."""
    return json_response(200, dump(await run(store.get_contract, dataset)))


def router(docs: Docs) -> APIRouter:
    """The spec and contract routes, documented per ``docs``."""
    api = v1_router()
    spec_doc = docs.write(
        Role.SERVICE,
        400,
        413,
        415,
        422,
        body=request_body(
            {"application/json": ModelSpec, "application/yaml": ModelSpec},
            description=f"The spec (YAML or JSON, at most {SPEC_BYTES} bytes), named as in the URL",
        ),
    )
    spec_doc["responses"] = {**docs.created(ModelInfo, "Model"), **spec_doc["responses"]}
    api.add_api_route(
        "/models/{name}/spec",
        put_spec,
        methods=["PUT"],
        summary="Create or update a model spec",
        response_model=ModelInfo,
        **spec_doc,
    )
    docs.add_read(api, "/models", list_models, "List models", list[ModelInfo], named=False)
    docs.add_read(api, "/models/{name}", get_model, "A model, its spec and aliases", ModelInfo)
    docs.add_read(api, "/models/{name}/spec", get_spec, "A model's spec", ModelSpec)
    docs.add_read(
        api,
        "/datasets",
        list_contracts,
        "Every dataset contract",
        list[DatasetContract],
        named=False,
    )
    docs.add_read(
        api, "/datasets/{dataset}/contract", get_contract, "A dataset's contract", DatasetContract
    )
    return api
