"""What the routes share: their dependencies (from ``app.state``), body parsing, OpenAPI docs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError

from flywheel_shared.auth import (
    ROLE_403,
    Principal,
    Role,
    TokenTable,
    check_roles,
    openapi_roles,
    roles_note,
)
from flywheel_shared.http import AUTH, BEARER, ApiError, responses

from ..artifacts import ArtifactStore
from ..settings import RegistrySettings
from ..store import RegistryStore

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# The dependencies are coroutines: FastAPI would run plain functions in a worker thread.
BINARY = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Services:
    """What a route uses, kept on ``app.state.services``."""

    store: RegistryStore
    artifacts: ArtifactStore
    settings: RegistrySettings
    tokens: TokenTable
    """The tokens and their roles (open when there is none)."""


def services(request: Request) -> Services:
    """The app's services."""
    found: Services = request.app.state.services
    return found


async def store(request: Request) -> RegistryStore:
    """The registry's operations."""
    return services(request).store


async def artifacts(request: Request) -> ArtifactStore:
    """The artifact bytes."""
    return services(request).artifacts


async def settings(request: Request) -> RegistrySettings:
    """The service's settings."""
    return services(request).settings


async def principal(request: Request) -> Principal:
    """Whose token the request carries (401/403 ``forbidden`` as the bearer guard;
    ``anonymous`` when the registry has no token), once per request."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is None:
        auth = request.headers.get("authorization", "")
        found = services(request).tokens.authenticate(auth, "registry")
        request.state.principal = found
    return found


def require(*roles: Role) -> Callable[[Request], Any]:
    """A dependency: the request's principal must hold one of ``roles`` (403
    ``forbidden_role`` naming the role and the token otherwise)."""

    async def dependency(request: Request) -> Principal:
        found = await principal(request)
        check_roles(found, roles)
        return found

    return dependency


async def authorize(request: Request) -> None:
    """Every ``/v1`` request: writes need a valid token (each route names its role, see
    :meth:`Docs.write`), reads the ``reader`` role with read_auth."""
    if request.method in READ_METHODS:
        if services(request).settings.read_auth:
            check_roles(await principal(request), [Role.READER])
        return
    await principal(request)


def v1_router() -> APIRouter:
    """A router of ``/v1`` routes behind the bearer guard (the routes keep the full path,
    which the request metrics label them with)."""
    return APIRouter(prefix="/v1", dependencies=[Depends(authorize)])


async def actor(request: Request) -> str:
    """Who asks, for the audit log (``x-flywheel-actor``, else ``api``)."""
    return (request.headers.get("x-flywheel-actor") or "api").strip()[:200] or "api"


async def token_name(request: Request) -> str:
    """The name of the request's token, for the audit log (never the token itself)."""
    return (await principal(request)).name


Store = Annotated[RegistryStore, Depends(store)]
Artifacts = Annotated[ArtifactStore, Depends(artifacts)]
Settings = Annotated[RegistrySettings, Depends(settings)]
Actor = Annotated[str, Depends(actor)]
TokenName = Annotated[str, Depends(token_name)]


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work (the database, hashing, the object store) in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def dump(model: BaseModel) -> Any:
    """A resource as JSON data."""
    return model.model_dump(mode="json", by_alias=True)


def validate(model: type[M], body: bytes) -> M:
    """The body as ``model``; 422 ``invalid_body`` naming what is wrong."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise ApiError(422, "invalid_body", errors(exc)) from exc


def errors(exc: ValidationError) -> str:
    """A validation error in one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


@dataclass(frozen=True)
class Docs:
    """What each route can answer besides success, for the OpenAPI document.

    Every route reads the database (503 while it is away); names in the path may name
    nothing (404). The guard answers 401/403 on writes when there is a token, and on reads
    too with read_auth; each write names the role it needs (``x-flywheel-roles``), a token
    without it gets 403 ``forbidden_role``.
    """

    token: bool
    read_auth: bool
    max_artifact_bytes: int

    def read(self, *codes: int, named: bool = True) -> dict[str, Any]:
        """``responses`` and ``openapi_extra`` of a read (with read_auth: the reader role)."""
        auth = AUTH if self.token and self.read_auth else ()
        return {
            "responses": responses(
                *auth, *((404,) if named else ()), *codes, 503, descriptions={403: ROLE_403}
            ),
            "openapi_extra": {**BEARER, **openapi_roles([Role.READER])} if auth else None,
        }

    def add_read(
        self,
        api: APIRouter,
        path: str,
        endpoint: Callable[..., Any],
        summary: str,
        model: Any,
        *codes: int,
        named: bool = True,
    ) -> None:
        """Add to ``api`` a GET route answering ``model``, documented as :meth:`read`."""
        api.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            summary=summary,
            response_model=model,
            **self.read(*codes, named=named),
        )

    def write(self, role: Role, *codes: int, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """``responses``, ``openapi_extra`` and ``dependencies`` of a write that needs
        ``role`` (``body``: its request body)."""
        auth = AUTH if self.token else ()
        denied = f"{ROLE_403}. {roles_note([role])}"
        return {
            "responses": responses(*auth, 404, *codes, 503, descriptions={403: denied}),
            "openapi_extra": {
                **(BEARER if auth else {}),
                **openapi_roles([role]),
                **(body or {}),
            },
            "dependencies": [Depends(require(role))],
        }

    @staticmethod
    def created(model: Any, what: str) -> dict[int | str, dict[str, Any]]:
        """The 201 answer of a route that creates ``what``."""
        return {201: {"model": model, "description": f"{what} created"}}
