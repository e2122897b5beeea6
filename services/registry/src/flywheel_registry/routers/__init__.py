"""The ``/v1`` HTTP API: one module per resource, routes as module-level functions."""

from __future__ import annotations

from fastapi import FastAPI

from . import aliases, approvals, artifacts, cards, specs, versions
from .deps import Docs, Services

__all__ = ["Docs", "Services", "include_api"]


def include_api(app: FastAPI, docs: Docs) -> None:
    """Add every ``/v1`` route (behind the bearer guard), documented per ``docs``."""
    for module in (specs, artifacts, versions, aliases, approvals, cards):
        app.include_router(module.router(docs))
