"""Bearer tokens and their roles on the HTTP APIs, the same way in every service.

A service reads its tokens from a tokens file (``FLYWHEEL_<SVC>_TOKENS_FILE``, YAML or JSON:
a name, the token's sha256 or a file holding the token, and its roles per entry) and/or the
single token of ``FLYWHEEL_<SVC>_TOKEN`` or ``FLYWHEEL_<SVC>_TOKEN_FILE`` (the file wins;
surrounding whitespace is dropped), which is the principal ``default`` holding every role.
Only sha256 digests are kept, compared in constant time; tokens are never logged and never
stored. ``environment=production`` refuses to start without any token (:class:`UnsafeSettings`);
with none in dev everything is open (the principal ``anonymous``).

Roles: ``reader`` (reads, when a service protects them; every role implies it), ``operator``
(promote, roll back, move aliases, change a version's status), ``approver`` (approve a gated
rollout step) and ``service`` (what the services do: register specs and versions, upload
artifacts, submit records and labels)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .http import ApiError

__all__ = [
    "ALL_ROLES",
    "ANONYMOUS",
    "DEFAULT_PRINCIPAL",
    "ROLE_403",
    "Principal",
    "Role",
    "TokenTable",
    "UnsafeSettings",
    "bearer_guard",
    "bearer_problem",
    "check_roles",
    "openapi_roles",
    "read_secret",
    "require_token",
    "roles_note",
    "token_digest",
]


class UnsafeSettings(RuntimeError):
    """Settings a service refuses to start with (said in one line, exit status 2)."""


class Role(StrEnum):
    """What a token may do."""

    READER = "reader"
    OPERATOR = "operator"
    APPROVER = "approver"
    SERVICE = "service"


ALL_ROLES = frozenset(Role)
DEFAULT_PRINCIPAL = "default"
"""The name of the single legacy token (``FLYWHEEL_<SVC>_TOKEN``): it holds every role."""


@dataclass(frozen=True)
class Principal:
    """Who a request's token belongs to: its name (for the audit log) and its roles."""

    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        """Whether the token may act as ``role`` (any role implies ``reader``)."""
        return role in self.roles or (role is Role.READER and bool(self.roles))


ANONYMOUS = Principal("anonymous", ALL_ROLES)
"""Everyone, when a service has no token at all (dev)."""


def token_digest(token: str) -> str:
    """The hex sha256 of a token, as a tokens file names it."""
    return hashlib.sha256(token.encode()).hexdigest()


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


def require_token(
    token: str | None,
    *,
    environment: str,
    variable: str,
    what: str,
    tokens_variable: str | None = None,
) -> None:
    """Refuse ``production`` without a token (``variable`` names the setting to set, and
    ``tokens_variable`` the tokens file that would do as well)."""
    if environment == "production" and not token:
        also = f" or {tokens_variable}" if tokens_variable else ""
        raise UnsafeSettings(
            f"refusing to start: production needs {variable} or {variable}_FILE{also} "
            f"({what} would be open to anyone)"
        )


class _Entry(BaseModel):
    """One token of a tokens file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    token_file: str | None = None
    roles: list[Role] = Field(min_length=1)

    @field_validator("sha256", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a string (quote it in YAML)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> _Entry:
        if (self.sha256 is None) == (self.token_file is None):
            raise ValueError("give exactly one of sha256 and token_file")
        return self


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[_Entry]


class TokenTable:
    """The tokens a service accepts (as sha256 digests) and who each one is."""

    def __init__(self, entries: Iterable[tuple[str, Principal]] = ()) -> None:
        self._entries = [(bytes.fromhex(d.lower()), p) for d, p in entries]
        names = [p.name for _, p in self._entries]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UnsafeSettings(f"token names must be unique: {', '.join(duplicates)}")

    @property
    def open(self) -> bool:
        """No token at all: everything is allowed (dev)."""
        return not self._entries

    def names(self) -> list[str]:
        """The principals' names."""
        return [p.name for _, p in self._entries]

    @classmethod
    def for_service(cls, token: str | None, tokens_file: str | Path | None) -> TokenTable:
        """The single ``token`` (principal ``default``, every role) and the tokens file's."""
        entries = [(token_digest(token), Principal(DEFAULT_PRINCIPAL, ALL_ROLES))] if token else []
        if tokens_file:
            entries += list(cls.read(tokens_file))
        return cls(entries)

    @staticmethod
    def read(path: str | Path) -> list[tuple[str, Principal]]:
        """(digest, principal) of every token of a tokens file (YAML or JSON)::

        tokens:
          - {name: ops-alice, sha256: <hex sha256 of the token>, roles: [operator]}
          - {name: trainer, token_file: /var/run/secrets/trainer, roles: [service]}
        """
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise UnsafeSettings(f"cannot read the tokens file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise UnsafeSettings(f"the tokens file {path} does not parse: {exc}") from exc
        if isinstance(data, list):
            data = {"tokens": data}
        try:
            parsed = _TokensFile.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
            )
            raise UnsafeSettings(f"invalid tokens file {path}: {problems}") from exc
        out = []
        for entry in parsed.tokens:
            if entry.sha256 is not None:
                digest = entry.sha256
            else:
                secret = read_secret(None, entry.token_file)
                if secret is None:
                    raise UnsafeSettings(f"the token file of '{entry.name}' is empty")
                digest = token_digest(secret)
            out.append((digest, Principal(entry.name, frozenset(entry.roles))))
        return out

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or None (every digest is compared, in constant time)."""
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found

    def authenticate(self, authorization: str, service: str) -> Principal:
        """The principal of an ``Authorization`` header: 401 without a bearer token, 403
        ``forbidden`` for a token not in the table; ``anonymous`` when the table is open."""
        if self.open:
            return ANONYMOUS
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise _unauthorized(service)
        principal = self.lookup(credentials.strip())
        if principal is None:
            raise ApiError(403, "forbidden", "the bearer token is not valid")
        return principal

    def require(self, *roles: Role, service: str) -> Callable[[Request], Awaitable[Principal]]:
        """A FastAPI dependency answering the request's principal when it holds one of
        ``roles`` (401/403 as :meth:`authenticate`; 403 ``forbidden_role`` otherwise)."""

        async def dependency(request: Request) -> Principal:
            principal = self.authenticate(request.headers.get("authorization", ""), service)
            check_roles(principal, roles)
            return principal

        return dependency


def check_roles(principal: Principal, roles: Iterable[Role]) -> None:
    """403 ``forbidden_role`` unless ``principal`` holds one of ``roles`` (none: any token)."""
    wanted = list(roles)
    if not wanted or any(principal.has(r) for r in wanted):
        return
    needed = " or ".join(f"'{r}'" for r in wanted)
    raise ApiError(
        403,
        "forbidden_role",
        f"the token '{principal.name}' lacks the {needed} role this request needs",
    )


def roles_note(roles: Iterable[Role]) -> str:
    """How the OpenAPI document says which roles a route needs."""
    return "Needs a token with the " + " or ".join(f"`{r}`" for r in roles) + " role."


ROLE_403 = (
    "`forbidden`: the bearer token is not valid; `forbidden_role`: the token lacks the role "
    "this route needs"
)
"""The OpenAPI description of a role-checked route's 403."""


def openapi_roles(roles: Iterable[Role]) -> Mapping[str, Any]:
    """``openapi_extra`` naming the roles a route needs (``x-flywheel-roles``)."""
    return {"x-flywheel-roles": [str(r) for r in roles]}


def bearer_problem(authorization: str, expected: bytes, service: str) -> ApiError | None:
    """None when ``authorization`` carries the expected bearer token, else the 401/403 to send."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return _unauthorized(service)
    if not hmac.compare_digest(credentials.strip().encode(), expected):
        return ApiError(403, "forbidden", "the bearer token is not valid")
    return None


def _unauthorized(service: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        f"this {service} needs 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": "Bearer"},
    )


def bearer_guard(token: str | None, service: str) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 without ``Authorization: Bearer …``, 403 for a wrong one.
    With ``token`` None (dev without a token) it lets everything through."""
    table = TokenTable.for_service(token, None)

    def guard(request: Request) -> None:
        table.authenticate(request.headers.get("authorization", ""), service)

    return guard
