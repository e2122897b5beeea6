"""Routes of the content-addressed artifacts."""

from __future__ import annotations

import hashlib
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from flywheel_shared.auth import Role
from flywheel_shared.http import ApiError, json_response, read_body, request_body
from flywheel_shared.registry import Artifact

from ..artifacts import IntegrityFailure, is_sha256
from ..metrics import ARTIFACTS_STORED
from .deps import BINARY, Artifacts, Docs, Settings, Store, dump, run, v1_router

log = logging.getLogger(__name__)


async def post_artifact(
    request: Request, store: Store, artifacts: Artifacts, settings: Settings
) -> Response:
    """Content-addressed: answers ``{sha256, size, uri}``; ``x-sha256`` is checked."""
    data = await read_body(request, settings.max_artifact_bytes)
    digest = await run(lambda: hashlib.sha256(data).hexdigest())
    claimed = request.headers.get("x-sha256", "").strip().lower()
    if claimed and claimed != digest:
        raise ApiError(400, "hash_mismatch", f"body hashes to {digest}, x-sha256 says {claimed}")
    uri, written = await run(artifacts.put, data, digest)
    artifact, created = await run(store.record_artifact, digest, len(data), uri)
    ARTIFACTS_STORED.labels("new" if created else "existing").inc()
    if written and not created:
        log.warning("artifact bytes rewritten (were missing or damaged)", extra={"sha256": digest})
    return json_response(201 if created else 200, dump(artifact))


async def get_artifact(sha256: str, store: Store, artifacts: Artifacts) -> Response:
    """The artifact's bytes; 500 ``integrity_error`` if they no longer match the hash."""
    if not is_sha256(sha256):
        raise ApiError(400, "invalid_sha256", "artifacts are named by a lower-case hex sha256")
    await run(store.get_artifact, sha256)
    try:
        data = await run(artifacts.get, sha256)
    except IntegrityFailure as exc:
        log.error("artifact integrity check failed", extra={"sha256": sha256, "error": str(exc)})
        raise ApiError(500, "integrity_error", str(exc)) from exc
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"x-sha256": sha256, "etag": f'"{sha256}"'},
    )


def router(docs: Docs) -> APIRouter:
    """The artifact routes, documented per ``docs``."""
    api = v1_router()
    upload_doc = docs.write(
        Role.SERVICE,
        400,
        413,
        body={
            **request_body(
                {"application/octet-stream": BINARY},
                description=f"The artifact's bytes (at most {docs.max_artifact_bytes})",
            ),
            "parameters": [
                {
                    "name": "x-sha256",
                    "in": "header",
                    "required": False,
                    "description": "the sha256 the client computed: checked against the body",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                }
            ],
        },
    )
    upload_doc["responses"] = {**docs.created(Artifact, "Artifact"), **upload_doc["responses"]}
    upload_doc["responses"].pop(404)  # a path without names
    api.add_api_route(
        "/artifacts",
        post_artifact,
        methods=["POST"],
        summary="Store an artifact (raw bytes)",
        response_model=Artifact,
        **upload_doc,
    )
    bytes_doc = docs.read(400, 500)
    bytes_doc["responses"][200] = {
        "description": "The artifact's bytes",
        "content": {"application/octet-stream": {"schema": BINARY}},
    }
    api.add_api_route(
        "/artifacts/{sha256}",
        get_artifact,
        methods=["GET"],
        summary="Fetch an artifact (hash checked)",
        response_class=Response,  # bytes; the errors stay JSON
        **bytes_doc,
    )
    return api
