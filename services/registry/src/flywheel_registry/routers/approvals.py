"""Routes of approval gates: the held rollout steps and their approval."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from flywheel_shared.auth import Role
from flywheel_shared.http import json_response, read_body, request_body
from flywheel_shared.registry import Approval

from .aliases import ReasonBody
from .deps import Actor, Docs, Store, TokenName, dump, run, v1_router, validate
from .versions import SMALL_BYTES


async def approve(
    name: str, version: int, request: Request, store: Store, actor: Actor, token: TokenName
) -> Response:
    """Apply the step the version awaits, re-planned against the current aliases (audited
    with the approver's token, announced on model.alias.changed); 409 ``approval_stale``
    when it no longer applies, ``no_pending_approval`` when none waits."""
    body = validate(ReasonBody, await read_body(request, SMALL_BYTES))
    approval = await run(store.approve, name, version, reason=body.reason, actor=actor, token=token)
    return json_response(200, dump(approval))


async def list_approvals(
    store: Store,
    model: Annotated[str | None, Query(description="only this model's approvals")] = None,
    state: Annotated[
        Literal["pending", "approved", "stale", "all"], Query(description="default: pending")
    ] = "pending",
) -> Response:
    """Rollout steps held for approval (a spec's ``rollout.require_approval``), oldest first."""
    found = await run(store.list_approvals, model=model, state=None if state == "all" else state)
    return json_response(200, [dump(a) for a in found])


def router(docs: Docs) -> APIRouter:
    """The approval routes, documented per ``docs``."""
    api = v1_router()
    api.add_api_route(
        "/models/{name}/versions/{version}/approve",
        approve,
        methods=["POST"],
        summary="Approve the rollout step a version awaits",
        response_model=Approval,
        **docs.write(
            Role.APPROVER,
            409,
            413,
            422,
            body=request_body({"application/json": ReasonBody}, required=False),
        ),
    )
    docs.add_read(api, "/approvals", list_approvals, "Held rollout steps", list[Approval], 422)
    return api
