"""Route registration that records each operation, and the OpenAPI 3.1 document built from them.

Routes modules add their handlers with :func:`add`, naming the pydantic models of the
path, query, body and response (``service/models.py``); the same models validate the
requests (``service/errors.py: parse_query / parse_body``), so ``/openapi.json`` describes
exactly what the service accepts and answers. Every operation documents the error
shape (``ErrorResponse``) for its 4xx answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.models import ErrorResponse

__all__ = ["Operation", "OPERATIONS", "add", "build_document"]


@dataclass(frozen=True)
class Operation:
    """One documented HTTP operation.

    Attributes:
        method, path: as routed (``GET``, ``/api/v1/bars/{symbol}/{timeframe}``).
        summary: one line for the document.
        tag: the resource (``bars``, ``replay``, ...).
        path_model, query, body, response: pydantic models (None: none).
        status: the success status code.
        content: the success media type (``application/json``, ``text/csv``, ...).
        errors: the 4xx/5xx codes it may answer (all with ``ErrorResponse``).
        websocket: True for a WebSocket route (documented as its upgrade GET).
    """

    method: str
    path: str
    summary: str
    tag: str
    path_model: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    content: str = "application/json"
    errors: tuple[int, ...] = (422,)
    websocket: bool = False
    extra_content: tuple[str, ...] = field(default=())


OPERATIONS = web.AppKey("operations", list)


def add(app: web.Application, handler: Callable, operation: Operation) -> None:
    """Route ``handler`` for ``operation`` and record the operation for the document."""
    app.router.add_route(operation.method, operation.path, handler)
    app[OPERATIONS].append(operation)


def _parameters(model: type[BaseModel], where: str, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        description = prop.pop("description", None)
        parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": prop}
        if description:
            parameter["description"] = description
        out.append(parameter)
    return out


def build_document(operations: list[Operation], title: str = "tickgraph service", version: str = "0.1.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``.

    Returns:
        A JSON-serialisable dict: ``paths`` per operation, ``components.schemas`` from
        the request/response models (pydantic's JSON Schema), bearer security scheme.
    """
    bodies = {op.body for op in operations if op.body} | {ErrorResponse}
    responses = {op.response for op in operations if op.response}
    pairs = [(m, "validation") for m in sorted(bodies, key=lambda m: m.__name__)]
    pairs += [(m, "serialization") for m in sorted(responses - bodies, key=lambda m: m.__name__)]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}", by_alias=True)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for op in operations:
        item: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "operationId": f"{op.method.lower()}_{op.tag}_{len(paths)}"}
        parameters = []
        if op.path_model is not None:
            parameters += _parameters(op.path_model, "path", schemas)
        if op.query is not None:
            parameters += _parameters(op.query, "query", schemas)
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}},
            }
        success: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            success["content"] = {op.content: {"schema": {"$ref": f"#/components/schemas/{op.response.__name__}"}}}
        elif op.content != "application/json":
            success["content"] = {op.content: {"schema": {"type": "string"}}}
        for media in op.extra_content:
            success.setdefault("content", {})[media] = {"schema": {"type": "string"}}
        answers: dict[str, Any] = {str(op.status): success}
        if op.websocket:
            answers = {"101": {"description": "Switching Protocols: the WebSocket stream"}}
            item["description"] = (
                "WebSocket. Messages are JSON BarMessage objects (see components.schemas.BarMessage). "
                "A request that is not a WebSocket upgrade is answered 426."
            )
        for code in sorted({*op.errors, 401}):
            answers[str(code)] = {"description": "error", "content": {"application/json": {"schema": error_ref}}}
        item["responses"] = answers
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Bars, WebSocket streams, replay and export jobs, signals, parity and metrics. "
            "Times: int ns UTC or ISO-8601 with offset. Errors: {\"error\": {\"field\", \"message\"}}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
