"""Rows a use case needs to exist: NotFound otherwise."""

from __future__ import annotations

from ..db import ModelRow, VersionRow
from ..domain.errors import NotFound
from ..repository import Repository


def locked_model(repo: Repository, name: str) -> ModelRow:
    """The model's row, locked for this transaction's changes."""
    row = repo.model(name, lock=True)
    if row is None:
        raise NotFound("unknown_model", f"no model '{name}'; PUT its spec first")
    return row


def model(repo: Repository, name: str) -> ModelRow:
    """The model's row."""
    row = repo.model(name)
    if row is None:
        raise NotFound("unknown_model", f"no model '{name}'")
    return row


def version(repo: Repository, model: str, version: int) -> VersionRow:
    """One version's row."""
    row = repo.version(model, version)
    if row is None:
        raise NotFound("unknown_version", f"model '{model}' has no version {version}")
    return row
