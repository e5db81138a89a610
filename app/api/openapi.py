"""The OpenAPI document, completed from what each route depends on (so routes added later are covered too):

- every operation says which API key it needs (admin / predict / none) in its description, and documents
  401 (any key dependency), 403 (admin scope), 404 (path parameters), 413 (multipart uploads),
  422 (parameters or a body) and 503 (the service context: starting/stopping, a dependency down);
- every error response uses the one error shape {"error": {code, message, details}} — FastAPI's default
  `HTTPValidationError` (which this service never sends) is replaced.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.api.deps import AUTH_DEPENDENCIES, get_ctx
from app.schemas.common import ERROR_DESCRIPTIONS

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
AUTH_TEXT = {
    "admin": "Auth: an API key with the admin scope (`Authorization: Bearer <key>`).",
    "predict": "Auth: any valid API key (predict or admin scope).",
    None: "Auth: none.",
}


def _calls(dependant: Any) -> set[Any]:
    found = {dependant.call}
    for dep in dependant.dependencies:
        found |= _calls(dep)
    return found


def route_needs(route: APIRoute) -> tuple[str | None, bool]:
    """(scope the route's key dependency requires or None, whether it uses the service context)."""
    calls = _calls(route.dependant)
    scopes = [scope for fn, scope in AUTH_DEPENDENCIES.items() if fn in calls]
    scope = "admin" if "admin" in scopes else (scopes[0] if scopes else None)
    return scope, get_ctx in calls or bool(scopes)


def _error(status: int) -> dict[str, Any]:
    return {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}}


def complete_operation(op: dict[str, Any], path: str, scope: str | None, uses_ctx: bool) -> None:
    """Add the auth sentence and the error responses that apply to one operation (in place)."""
    for param in op.get("parameters", []):
        name = param.get("name", "")
        if param.get("in") == "path" and not param.get("description") and name.endswith("_id"):
            param["description"] = f"id of the {name[:-3].replace('_', ' ')}"
    text = (op.get("description") or op.get("summary") or "").strip()
    auth = AUTH_TEXT[scope]
    op["description"] = text if auth in text else f"{text}\n\n{auth}".strip()
    wanted: set[int] = set()
    if scope is not None:
        wanted.add(401)
    if scope == "admin":
        wanted.add(403)
    if "{" in path:
        wanted.add(404)
    body = op.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in body:
        wanted.add(413)
    if op.get("parameters") or body:
        wanted.add(422)
    if uses_ctx:
        wanted.add(503)
    responses = op.setdefault("responses", {})
    for status in sorted(wanted):
        entry = responses.get(str(status))
        if entry is None or "HTTPValidationError" in json.dumps(entry):
            responses[str(status)] = _error(status)


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """The APIRoutes among `routes`, looking into included routers (FastAPI ≥ 0.165 wraps them)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            found += api_routes(list(route.original_router.routes))
    return found


def complete_schema(schema: dict[str, Any], routes: list[Any]) -> dict[str, Any]:
    """Walk every operation of `schema` and complete it from its route (see the module docstring)."""
    by_key: dict[tuple[str, str], APIRoute] = {}
    for api_route in api_routes(routes):
        for method in api_route.methods or ():
            by_key[(api_route.path_format, method.lower())] = api_route
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            route = by_key.get((path, method))
            scope, uses_ctx = route_needs(route) if route is not None else (None, False)
            complete_operation(op, path, scope, uses_ctx)
    components = schema.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` return the completed document (built once, then cached on the app)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = complete_schema(schema, list(app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
