"""Routes of model versions: registration, listing, status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from flywheel_shared.aliases import VersionStatus
from flywheel_shared.auth import Role
from flywheel_shared.http import json_response, read_body, request_body
from flywheel_shared.registry import ModelVersion, VersionCreate

from .deps import Actor, Docs, Store, TokenName, dump, run, v1_router, validate

VERSION_BYTES = 4 * 1024 * 1024
SMALL_BYTES = 64 * 1024


class StatusChange(BaseModel):
    """Body of ``PATCH /v1/models/{name}/versions/{v}``."""

    model_config = ConfigDict(extra="forbid")
    status: VersionStatus
    reason: str = ""


Rollout = Annotated[
    bool,
    Query(
        description="a candidate takes the first alias of the model's rollout policy: production"
        " while nothing serves yet, else the spec's rollout.first_alias (the body names no"
        " first_alias then)"
    ),
]


async def register_version(
    name: str,
    request: Request,
    store: Store,
    actor: Actor,
    token: TokenName,
    rollout: Rollout = False,
) -> Response:
    """201 with the new version, or 200 with the one this ``run_id`` registered before."""
    body = validate(VersionCreate, await read_body(request, VERSION_BYTES))
    version, created = await run(
        store.register_version, name, body, actor=actor, rollout=rollout, token=token
    )
    return json_response(201 if created else 200, dump(version))


async def list_versions(name: str, store: Store) -> Response:
    """Every version of a model."""
    return json_response(200, [dump(v) for v in await run(store.list_versions, name)])


async def get_version(name: str, version: int, store: Store) -> Response:
    """A version with its metrics and lineage."""
    return json_response(200, dump(await run(store.get_version, name, version)))


async def patch_version(
    name: str, version: int, request: Request, store: Store, actor: Actor, token: TokenName
) -> Response:
    """``{"status": "archived", "reason": ...}``; 409 while an alias points at it."""
    body = validate(StatusChange, await read_body(request, SMALL_BYTES))
    result = await run(
        store.set_status, name, version, body.status, body.reason, actor=actor, token=token
    )
    return json_response(200, dump(result))


def router(docs: Docs) -> APIRouter:
    """The version routes, documented per ``docs``."""
    api = v1_router()
    register_doc = docs.write(
        Role.SERVICE,
        413,
        422,
        body=request_body(
            {"application/json": VersionCreate},
            description=f"The version (at most {VERSION_BYTES} bytes)",
        ),
    )
    register_doc["responses"] = {
        **docs.created(ModelVersion, "Version"),
        **register_doc["responses"],
    }
    api.add_api_route(
        "/models/{name}/versions",
        register_version,
        methods=["POST"],
        summary="Register a version (idempotent by run_id)",
        response_model=ModelVersion,
        **register_doc,
    )
    docs.add_read(
        api,
        "/models/{name}/versions",
        list_versions,
        "List versions, oldest first",
        list[ModelVersion],
    )
    docs.add_read(
        api, "/models/{name}/versions/{version}", get_version, "One version", ModelVersion, 422
    )
    api.add_api_route(
        "/models/{name}/versions/{version}",
        patch_version,
        methods=["PATCH"],
        summary="Change a version's status",
        response_model=ModelVersion,
        **docs.write(
            Role.OPERATOR, 409, 413, 422, body=request_body({"application/json": StatusChange})
        ),
    )
    return api
