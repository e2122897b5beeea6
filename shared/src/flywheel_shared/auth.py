"""Bearer tokens on the write paths, the same way in every service.

A service's token comes from ``FLYWHEEL_<SVC>_TOKEN`` or, better for Kubernetes Secrets mounted
as files, ``FLYWHEEL_<SVC>_TOKEN_FILE`` (the file wins; surrounding whitespace is dropped).
Tokens are compared in constant time and never logged; ``environment=production`` refuses
to start without one (:class:`UnsafeSettings`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

from fastapi import Request
from pydantic import SecretStr

from .http import ApiError

__all__ = ["UnsafeSettings", "bearer_guard", "bearer_problem", "read_secret", "require_token"]


class UnsafeSettings(RuntimeError):
    """Settings a service refuses to start with (said in one line, exit status 2)."""


def read_secret(value: SecretStr | str | None, file: str | Path | None) -> str | None:
    """The secret from ``file`` if given, else ``value``; None when empty."""
    if file:
        try:
            text = Path(file).read_text()
        except OSError as exc:
            raise UnsafeSettings(f"cannot read the secret file {file}: {exc.strerror}") from exc
    elif isinstance(value, SecretStr):
        text = value.get_secret_value()
    else:
        text = value or ""
    return text.strip() or None


def require_token(token: str | None, *, environment: str, variable: str, what: str) -> None:
    """Refuse ``production`` without a token (``variable`` names the setting to set)."""
    if environment == "production" and not token:
        raise UnsafeSettings(
            f"refusing to start: production needs {variable} or {variable}_FILE "
            f"({what} would be open to anyone)"
        )


def bearer_problem(authorization: str, expected: bytes, service: str) -> ApiError | None:
    """None when ``authorization`` carries the expected bearer token, else the 401/403 to send."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return ApiError(
            401,
            "unauthorized",
            f"this {service} needs 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.strip().encode(), expected):
        return ApiError(403, "forbidden", "the bearer token is not valid")
    return None


def bearer_guard(token: str | None, service: str) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 without ``Authorization: Bearer …``, 403 for a wrong one.
    With ``token`` None (dev without a token) it lets everything through."""
    expected = token.encode() if token else None

    def guard(request: Request) -> None:
        if expected is None:
            return
        problem = bearer_problem(request.headers.get("authorization", ""), expected, service)
        if problem is not None:
            raise problem

    return guard
