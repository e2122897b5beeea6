"""Domain errors; the HTTP layer turns each into ``{"detail", "code"}`` with its status."""

from __future__ import annotations


class RegistryProblem(Exception):
    """A request the registry refuses, with an HTTP status and a stable code."""

    status = 400

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


class Invalid(RegistryProblem):
    """The request is malformed or inconsistent (400)."""

    status = 400


class NotFound(RegistryProblem):
    """The model, version, alias or artifact does not exist (404)."""

    status = 404


class Conflict(RegistryProblem):
    """The request clashes with the current state (409)."""

    status = 409


class Unprocessable(RegistryProblem):
    """The body is well-formed but not acceptable, e.g. an invalid spec (422)."""

    status = 422
