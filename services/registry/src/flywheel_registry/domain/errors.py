"""Domain errors: a stable code and a detail; the HTTP layer (``errors.py``) picks the status."""

from __future__ import annotations


class RegistryProblem(Exception):
    """A request the registry refuses, with a stable code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class Invalid(RegistryProblem):
    """The request is malformed or inconsistent."""


class NotFound(RegistryProblem):
    """The model, version, alias or artifact does not exist."""


class Conflict(RegistryProblem):
    """The request clashes with the current state."""


class Unprocessable(RegistryProblem):
    """The body is well-formed but not acceptable, e.g. it names an artifact not stored."""
