"""Routes of aliases: moves, removals, rollback, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from flywheel_shared.auth import Role
from flywheel_shared.http import json_response, read_body, request_body
from flywheel_shared.registry import AliasMove, AliasState, AuditEntry

from .deps import Actor, Docs, Store, TokenName, dump, run, v1_router, validate
from .versions import SMALL_BYTES


class ReasonBody(BaseModel):
    """Body of ``POST /v1/models/{name}/rollback``."""

    model_config = ConfigDict(extra="ignore")
    reason: str = ""


async def put_alias(
    name: str, alias: str, request: Request, store: Store, actor: Actor, token: TokenName
) -> Response:
    """Point ``alias`` at a version (audited, announced on model.alias.changed); 400 for
    an alias that is not production, canary or shadow, 409 for a version not servable."""
    move = validate(AliasMove, await read_body(request, SMALL_BYTES))
    state = await run(
        store.move_alias,
        name,
        alias,
        move.version,
        weight=move.weight,
        reason=move.reason,
        actor=actor,
        token=token,
    )
    return json_response(200, dump(state))


async def delete_alias(
    name: str, alias: str, store: Store, actor: Actor, token: TokenName, reason: str = ""
) -> Response:
    """Remove ``alias`` (audited, announced with ``version: null``)."""
    await run(store.remove_alias, name, alias, reason=reason, actor=actor, token=token)
    return Response(status_code=204)


async def rollback(
    name: str, request: Request, store: Store, actor: Actor, token: TokenName
) -> Response:
    """409 ``no_previous_version`` when production has nothing to go back to."""
    body = validate(ReasonBody, await read_body(request, SMALL_BYTES))
    state = await run(store.rollback, name, reason=body.reason, actor=actor, token=token)
    return json_response(200, dump(state))


async def history(name: str, store: Store) -> Response:
    """Every alias change of a model."""
    return json_response(200, [dump(e) for e in await run(store.history, name)])


async def audit(
    store: Store,
    model: Annotated[str | None, Query(description="only this model's writes")] = None,
    token: Annotated[str | None, Query(description="only the writes of this token")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Alias changes, registrations and status changes, each naming the actor and the
    token that made it (by name, never its value)."""
    found = await run(store.audit, model=model, token=token, limit=limit)
    return json_response(200, [dump(e) for e in found])


def router(docs: Docs) -> APIRouter:
    """The alias routes, documented per ``docs``."""
    api = v1_router()
    api.add_api_route(
        "/models/{name}/aliases/{alias}",
        put_alias,
        methods=["PUT"],
        summary="Move an alias",
        response_model=AliasState,
        **docs.write(
            Role.OPERATOR, 400, 409, 413, 422, body=request_body({"application/json": AliasMove})
        ),
    )
    api.add_api_route(
        "/models/{name}/aliases/{alias}",
        delete_alias,
        methods=["DELETE"],
        summary="Remove an alias",
        status_code=204,
        **docs.write(Role.OPERATOR, 400),
    )
    api.add_api_route(
        "/models/{name}/rollback",
        rollback,
        methods=["POST"],
        summary="Production back to its previous version",
        response_model=AliasState,
        **docs.write(
            Role.OPERATOR,
            409,
            413,
            422,
            body=request_body({"application/json": ReasonBody}, required=False),
        ),
    )
    docs.add_read(
        api, "/models/{name}/history", history, "Alias audit log, newest first", list[AuditEntry]
    )
    docs.add_read(api, "/audit", audit, "Audited writes, newest first", list[AuditEntry], 422)
    return api
