"""The prediction and inference ``POST`` routes, as plain ASGI: the one implementation behind
both ways in (``api.py`` mounts them on its Starlette router; the fast path, ``fastpath.py``,
calls :class:`PredictionEndpoints` directly, past every router).

A single-record prediction costs about as much in a web framework's request and response
objects, routing and middleware as in the data plane itself, so these handlers read the
headers and body from the ASGI scope and send the answer as two ASGI messages. What the
client sees is the same either way: the same bodies, statuses and headers as the other
routes (``{"error", "code"}`` on ``/v1``, OIP's ``{"error"}`` on ``/v2``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import orjson

from flywheel_shared.auth import bearer_problem

from . import binary
from .domain.oip import ProtocolError, decode_request, output_tensors
from .ids import new_id
from .plane import Answer, DataPlane, InferenceError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = dict[str, str]

PID = str(os.getpid())
_JSON = (b"content-type", b"application/json")
_BINARY = (b"content-type", b"application/octet-stream")
_ROUTE = re.compile(
    r"/(?:v1|v2)/models/(?P<name>[^/]+)/(?:versions/(?P<version>[^/]+)/)?(?:predict|infer)"
)


class PlaneView(Protocol):
    """What the endpoints need from the worker's runtime."""

    plane: DataPlane


class Reply(Exception):
    """An answer decided before the data plane ran (an auth problem)."""

    def __init__(self, status: int, body: Any, headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers


def answer_headers(answer: Answer) -> Headers:
    """The headers of every answered prediction: request id, version, route, worker."""
    return {
        "x-request-id": answer.request_id,
        "x-flywheel-model-version": str(answer.version),
        "x-flywheel-route": answer.route,
        "x-flywheel-worker": PID,
    }


async def respond(
    send: Send,
    status: int,
    content: bytes,
    headers: Headers | None = None,
    content_type: tuple[bytes, bytes] = _JSON,
) -> None:
    """Send one complete answer (header names go out in lower case, as ASGI asks)."""
    raw = [content_type, (b"content-length", str(len(content)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


def error_body(exc: InferenceError | ProtocolError, *, detailed: bool) -> dict[str, Any]:
    """The body of a refused request: ``{"error"}`` (OIP), plus ``code`` and ``errors`` where
    ``detailed`` (the ``/v1`` routes)."""
    message = exc.message if isinstance(exc, InferenceError) else str(exc)
    body: dict[str, Any] = {"error": message}
    if detailed and isinstance(exc, InferenceError):
        body["code"] = exc.reason
        if exc.errors:
            body["errors"] = exc.errors
    return body


def read_headers(scope: Scope) -> Headers:
    """The request's headers by lower-case name (the first of repeated ones, as Starlette)."""
    out: Headers = {}
    for key, value in scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        if name not in out:
            out[name] = value.decode("latin-1")
    return out


class Asgi:
    """A bound handler as an ASGI app object (Starlette routes call a function or a method
    with a ``Request``; any other callable gets the raw scope, receive and send)."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


class PredictionEndpoints:
    """``POST /v1/models/{name}[/versions/{v}]/predict`` and
    ``POST /v2/models/{name}[/versions/{v}]/infer``, for ``runtime()`` (None: starting).

    With ``token``, both need ``Authorization: Bearer <token>``.
    """

    def __init__(
        self,
        runtime: Callable[[], PlaneView | None],
        *,
        max_body_bytes: int,
        token: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_body_bytes = max_body_bytes
        self.expected = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Either route, told apart by the path (what the fast path calls)."""
        if scope["path"].endswith("/infer"):
            await self.infer(scope, receive, send)
        else:
            await self.predict(scope, receive, send)

    # -- the routes ----------------------------------------------------------------------

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The plain JSON route: ``{"records": [...]}`` → ``{"predictions": [...]}``."""
        await self._serve(scope, receive, send, self._predict, detailed=True)

    async def infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The Open Inference Protocol v2 route, JSON or binary tensors."""
        await self._serve(scope, receive, send, self._infer, detailed=False)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        handler: Callable[[Scope, Headers, Receive, Send], Awaitable[None]],
        *,
        detailed: bool,
    ) -> None:
        headers = read_headers(scope)
        try:
            self._authorize(headers)
            await handler(scope, headers, receive, send)
        except Reply as reply:
            await respond(send, reply.status, orjson.dumps(reply.body), reply.headers)
        except (InferenceError, ProtocolError) as exc:
            rid = headers.get("x-request-id")
            body = orjson.dumps(error_body(exc, detailed=detailed))
            await respond(send, exc.status, body, {"x-request-id": rid} if rid else None)

    async def _predict(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> None:
        plane = self._plane()
        if binary.HEADER_LENGTH in headers:
            raise InferenceError(
                415,
                "binary_data_unsupported",
                "the binary tensor data extension is for the OIP infer routes: send JSON here",
            )
        payload = _parse_json(await self._body(headers, receive))
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            raise InferenceError(400, "not_records", 'body must be {"records": [{...}, ...]}')
        rid = headers.get("x-request-id") or new_id()
        name, version = _params(scope)
        answer = await plane.predict(
            name,
            records,
            request_id=rid,
            routing_key=headers.get("x-flywheel-routing-key"),
            version=version,
        )
        body = {
            "model": answer.model,
            "version": answer.version,
            "route": answer.route,
            "request_id": rid,
            "predictions": [
                {"prediction_id": pid, **out}
                for pid, out in zip(answer.prediction_ids, answer.outputs, strict=True)
            ],
        }
        await respond(send, 200, orjson.dumps(body), answer_headers(answer))

    async def _infer(self, scope: Scope, headers: Headers, receive: Receive, send: Send) -> None:
        plane = self._plane()
        body_bytes = await self._body(headers, receive)
        length = headers.get(binary.HEADER_LENGTH)
        if length is None:
            payload = _parse_json(body_bytes)
        else:
            try:
                payload = binary.decode_request(body_bytes, binary.header_length(length))
            except binary.BinaryError as exc:
                raise InferenceError(exc.status, exc.code, str(exc)) from exc
        body_id = payload.get("id") if isinstance(payload, dict) else None
        rid = (
            headers.get("x-request-id")
            or (str(body_id) if body_id is not None else None)
            or new_id()
        )
        name, version = _params(scope)
        picked = plane.pick(name, headers.get("x-flywheel-routing-key") or rid, version)
        model = picked[0]
        decoded = decode_request(
            payload, model.features, model.field_types, [model.id_field] if model.id_field else ()
        )
        answer = await plane.predict(
            name, decoded.records, request_id=rid, picked=picked, protocol="oip"
        )
        body = {
            "model_name": name,
            "model_version": str(answer.version),
            "id": rid,
            "parameters": {"route": answer.route, "prediction_ids": answer.prediction_ids},
            "outputs": output_tensors(answer.outputs, decoded.outputs),
        }
        encoded = binary.encode_response(body, binary.binary_outputs(payload))
        if encoded is None:
            await respond(send, 200, orjson.dumps(body), answer_headers(answer))
            return
        content, length_out = encoded
        extra = {**answer_headers(answer), binary.HEADER_LENGTH: str(length_out)}
        await respond(send, 200, content, extra, _BINARY)

    # -- parts ---------------------------------------------------------------------------

    def _authorize(self, headers: Headers) -> None:
        if self.expected is None:
            return
        problem = bearer_problem(headers.get("authorization", ""), self.expected, "serving")
        if problem is not None:
            body = {"error": problem.detail, "code": problem.code}
            raise Reply(problem.status, body, dict(problem.headers) if problem.headers else None)

    def _plane(self) -> DataPlane:
        rt = self.runtime()
        if rt is None:
            raise InferenceError(503, "starting", "the service is starting, retry")
        return rt.plane

    async def _body(self, headers: Headers, receive: Receive) -> bytes:
        """The whole body, at most ``max_body_bytes`` (413), decompressed if encoded."""
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise InferenceError(413, "too_large", f"body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                raise InferenceError(400, "disconnected", "the client closed the request")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise InferenceError(413, "too_large", f"body over {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = headers.get("content-encoding")
        if not encoding:
            return body
        try:
            return binary.decompress(body, encoding, limit)
        except binary.BinaryError as exc:
            raise InferenceError(exc.status, exc.code, str(exc)) from exc


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InferenceError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


def _params(scope: Scope) -> tuple[str, int | None]:
    """The model name and the version asked for (Starlette's path parameters, or the path)."""
    params = scope.get("path_params")
    if params is None:
        found = _ROUTE.fullmatch(scope["path"])
        if found is None:  # the fast path matched it already: not reached
            raise InferenceError(404, "not_found", f"no route {scope['path']}")
        params = found.groupdict()
    raw = params.get("version")
    if raw is None:
        return params["name"], None
    try:
        return params["name"], int(raw)
    except ValueError:
        raise InferenceError(
            404, "unknown_version", f"version must be an integer, got {raw!r}"
        ) from None
