"""One error shape for the whole service, request parsing, and the error and auth middlewares.

Every failure answers ``{"error": {"field": ..., "message": ...}}`` (``ErrorResponse``):

* 400 malformed JSON or a body that is not an object; 401 a missing or wrong bearer
  token; 404 an unknown resource (symbol, run id, route); 405 a wrong method; 409 a
  state conflict (cancelling a finished job); 413 a body over 1 MiB; 422 a value that
  fails validation (the field is named: ``from``, ``symbols[1]``, ``speed``); 426 a plain
  GET on a WebSocket route; 503 a dependency that is not there (no Ray cluster).
* A bug still answers the shape, with status 500 and a message naming no internals; it
  is logged with its traceback (never with request headers, so never with a token).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

__all__ = [
    "ApiError",
    "error_body",
    "json_response",
    "parse_query",
    "parse_path",
    "parse_body",
    "error_middleware",
    "auth_middleware",
    "OPEN_PATHS",
    "MAX_BODY_BYTES",
]

_log = logging.getLogger("tickgraph.service")

#: Largest accepted request body.
MAX_BODY_BYTES = 1 << 20
#: Paths served without the bearer token: the cockpit's static files, the API description, and
#: the ingest link (which checks its own key, service/wire.py).
OPEN_PATHS = ("/", "/static/", "/openapi.json", "/healthz", "/favicon.ico", "/internal/v1/ingest")


class ApiError(Exception):
    """A request the service refuses; becomes ``{"error": {"field", "message"}}`` with ``status``.

    Args:
        status: HTTP status (4xx, or 503).
        message: one sentence for the client.
        field: the request field at fault (``symbol``, ``from``, ``body``), or None.
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    """The error document ``{"error": {"field": field, "message": message}}``."""
    return {"error": {"field": field, "message": message}}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (orjson; a pydantic model is dumped by alias)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _field_of(loc: tuple[Any, ...], aliases: dict[str, str]) -> str | None:
    parts = [p for p in loc if not (isinstance(p, str) and (p.startswith("function-") or p in ("body",)))]
    if not parts:
        return None
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = aliases.get(part, part)
            out += f".{name}" if out else name
    return out


def _validation_error(exc: ValidationError, model: type[BaseModel]) -> ApiError:
    aliases = {name: f.alias for name, f in model.model_fields.items() if f.alias}
    first = exc.errors(include_url=False, include_input=False)[0]
    field = _field_of(tuple(first["loc"]), aliases)
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith("symbols[") and ":" in message:  # a list validator names the entry itself
        field, _, message = message.partition(": ")
    if first["type"] == "extra_forbidden":
        message = f"unknown field {field!r}"
    if field is None and message.startswith("'"):  # model-level checks name the field first
        field = message.split("'")[1]
    return ApiError(422, f"{field}: {message}" if field and not message.startswith(field) else message, field)


def parse_query(request: web.Request, model: type[BaseModel]) -> Any:
    """The query string validated by ``model`` (one value per key).

    Raises:
        ApiError: 422 naming the field (a repeated key, a bad value, an unknown key).
    """
    values: dict[str, Any] = {}
    for key in request.query:
        items = request.query.getall(key)
        if len(items) > 1:
            raise ApiError(422, f"{key}: given {len(items)} times; give it once", key)
        values[key] = items[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _validation_error(exc, model) from None


def parse_path(request: web.Request, model: type[BaseModel]) -> Any:
    """The path parameters validated by ``model``.

    Raises:
        ApiError: 422 naming the parameter.
    """
    try:
        return model.model_validate(dict(request.match_info))
    except ValidationError as exc:
        raise _validation_error(exc, model) from None


async def parse_body(request: web.Request, model: type[BaseModel]) -> Any:
    """The JSON body validated by ``model``.

    Raises:
        ApiError: 413 over :data:`MAX_BODY_BYTES`; 400 not JSON or not an object; 422 a bad field.
    """
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, f"body: {request.content_length} bytes is over the {MAX_BODY_BYTES} byte limit", "body")
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"body: over the {MAX_BODY_BYTES} byte limit", "body")
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body: malformed JSON ({exc})", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: expected a JSON object", "body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, model) from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`ApiError`, aiohttp's HTTP errors and bugs into the one error shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(error_body(exc.message, exc.field), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        field = "path" if exc.status == 404 else ("method" if exc.status == 405 else None)
        reason = {404: f"no route {request.path!r}", 405: f"method {request.method} not allowed on {request.path!r}"}
        message = reason.get(exc.status, exc.reason or "bad request")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_response(error_body(message, field), status=exc.status, headers=headers)
    except Exception:
        _log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(error_body("internal error (logged by the service)"), status=500)


def auth_middleware(token: str | None) -> Callable:
    """A middleware requiring ``Authorization: Bearer <token>`` (or, for WebSockets from a
    browser, which cannot set headers, the subprotocol ``bearer.<token>``) on every path
    but :data:`OPEN_PATHS`; None: no authentication (loopback only, see service/config.py).
    The token is compared in constant time and never logged or echoed."""
    expected = None if token is None else token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or _is_open(request.path):
            return await handler(request)
        if _presented(request, expected):
            return await handler(request)
        return json_response(
            error_body("missing or wrong bearer token (Authorization: Bearer ...)", "Authorization"),
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="tickgraph"'},
        )

    return check


def _is_open(path: str) -> bool:
    return path == "/" or any(path.startswith(p) for p in OPEN_PATHS if p != "/")


def _presented(request: web.Request, expected: bytes) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected):
        return True
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith("bearer.") and hmac.compare_digest(protocol[7:].encode(), expected):
            return True
    return False
