"""The HTTP answers of errors: domain errors by class, the database being away as 503."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import OperationalError

from flywheel_shared.http import install_api_errors, json_response

from .domain.errors import Conflict, Invalid, NotFound, RegistryProblem, Unprocessable

log = logging.getLogger(__name__)

STATUS: dict[type[RegistryProblem], int] = {
    Invalid: 400,
    NotFound: 404,
    Conflict: 409,
    Unprocessable: 422,
}
"""The HTTP status of each domain error."""


def status_of(problem: RegistryProblem) -> int:
    """The HTTP status a domain error is answered with (400 for a class not listed)."""
    for cls in type(problem).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryProblem)
    return json_response(status_of(exc), {"detail": exc.detail, "code": exc.code})


async def _database_down(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OperationalError)
    log.warning("database unavailable", extra={"error": str(exc.orig)})
    return json_response(
        503,
        {"detail": "the database is unavailable, retry", "code": "database_unavailable"},
        {"Retry-After": "1"},
    )


def install_errors(app: FastAPI) -> None:
    """Every error a route raises answered as ``{"detail", "code"}``: the shared ones
    (``ApiError``, refused requests, unknown routes), domain errors and a database outage."""
    install_api_errors(app)
    app.add_exception_handler(RegistryProblem, _problem)
    app.add_exception_handler(OperationalError, _database_down)
