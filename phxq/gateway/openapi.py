"""The OpenAPI 3.1 document of the gateway, generated from the route table.

:func:`openapi_document` reads only :class:`~phxq.gateway.table.Route` objects: every path,
parameter, body and answer schema, every documented error status and the permission each
operation needs (``x-phxq-permission``) come from the same objects the router dispatches on.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from phxq.gateway.problems import PROBLEM_TYPE, TITLES
from phxq.gateway.schema import PROBLEM
from phxq.gateway.table import Route

RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "string", "pattern": r"^\d+$"},
}


def _error(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": TITLES.get(status, "Error"),
        "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in (429, 503):
        answer["headers"] = {"Retry-After": RETRY_AFTER}
    return answer


def _operation(route: Route, secured: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": list(route.tags),
    }
    if route.description:
        op["description"] = route.description
    params = []
    for p in route.params:
        param: dict[str, Any] = {
            "name": p.name,
            "in": p.where,
            "required": p.required,
            "description": p.description,
            "schema": p.schema,
        }
        if p.example is not None:
            param["example"] = p.example
        params.append(param)
    if params:
        op["parameters"] = params
    content: dict[str, Any] = {}
    if route.json_body is not None:
        content["application/json"] = {"schema": route.json_body}
        if route.body_example is not None:
            content["application/json"]["example"] = route.body_example
    if route.raw_body:
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    if content:
        op["requestBody"] = {"required": True, "content": content}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {route.media_type: {"schema": route.response}}}
    }
    statuses = set(route.errors) | {400, 500}  # 400 for any malformed request line or header
    if secured and route.permission is not None:
        statuses |= {401, 403}
        op["security"] = [{"bearer": []}]
        op["x-phxq-permission"] = route.permission or "any authenticated principal"
    elif route.permission is not None:
        statuses -= {401, 403}
        op["security"] = []
    else:
        op["security"] = []
    for status in sorted(statuses):
        responses[str(status)] = _error(status)
    op["responses"] = responses
    return op


def openapi_document(
    routes: tuple[Route, ...],
    *,
    version: str,
    secured: bool,
    server_url: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes``. ``secured``: the gateway requires bearer
    tokens (with ``[security]``); then every operation but the document itself says so."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, secured)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "phxq HTTP gateway",
            "version": version,
            "description": (
                "The phxq client's operations over HTTP/JSON. Errors are "
                "application/problem+json carrying phxq's error code. See docs/http-api.md."
            ),
        },
        "paths": paths,
        "components": {"schemas": {"Problem": PROBLEM}},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    if server_url is not None:
        doc["servers"] = [{"url": server_url}]
    return doc
