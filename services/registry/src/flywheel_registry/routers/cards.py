"""Routes of model cards: a version's lineage, gates, rollout and live story."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from flywheel_shared.cards import ModelCard
from flywheel_shared.http import json_response

from ..domain.cards import render_markdown
from .deps import Artifacts, Docs, Store, dump, run, v1_router

MARKDOWN = "text/markdown"

Format = Annotated[
    Literal["json", "markdown"] | None,
    Query(description="markdown: the card as Markdown (as with Accept: text/markdown)"),
]


async def get_card(
    name: str,
    version: int,
    request: Request,
    store: Store,
    artifacts: Artifacts,
    format: Format = None,
) -> Response:
    """The version's model card: JSON, or Markdown with ``?format=markdown`` or
    ``Accept: text/markdown``."""
    card = await run(store.card, name, version, artifacts.store)
    if format == "markdown" or (format is None and MARKDOWN in request.headers.get("accept", "")):
        return Response(render_markdown(card), media_type=f"{MARKDOWN}; charset=utf-8")
    return json_response(200, dump(card))


def router(docs: Docs) -> APIRouter:
    """The model card route, documented per ``docs``."""
    api = v1_router()
    doc = docs.read(422)
    doc["responses"] = {
        200: {
            "description": "The model card (JSON, or Markdown)",
            "content": {MARKDOWN: {"schema": {"type": "string"}}},
        },
        **doc["responses"],
    }
    api.add_api_route(
        "/models/{name}/versions/{version}/card",
        get_card,
        methods=["GET"],
        summary="A version's model card",
        response_model=ModelCard,
        **doc,
    )
    return api
