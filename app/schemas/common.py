"""Shared response shapes: the error body (every 4xx/5xx) and list pages, and the OpenAPI error entries."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorInfo(BaseModel):
    """What went wrong and how to fix it."""

    code: str = Field(description="machine-readable snake_case code, e.g. not_found, conflict, validation_error")
    message: str = Field(description="what was wrong and how to fix it (no server paths)")
    details: Any = Field(default=None, description="optional: validation problems, or `used_by` for a 409")


class ErrorResponse(BaseModel):
    """Every error response: {"error": {"code", "message", "details"?}}."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": {"code": "not_found", "message": "model 'model_x' not found"}}]}
    )

    error: ErrorInfo = Field(description="the error")


ERROR_DESCRIPTIONS = {
    400: "Bad request: a field is wrong in a way the schema cannot express (the message says which).",
    401: "Missing, unknown or revoked API key: send `Authorization: Bearer <key>`.",
    403: "The key's scope does not allow this (an admin key is needed), or a path lies outside the data root.",
    404: "A referenced resource does not exist (the message names it and how to list them).",
    409: "Conflicts with the current state: e.g. still in use (`details.used_by` lists the users), already "
    "finished, or an Idempotency-Key reused with another body.",
    413: "An upload, an archive or a bag is larger than a configured limit (the message names the setting).",
    422: "The request is well-formed but cannot be used: schema validation, bad file content, unknown method or "
    "parameters.",
    500: "Internal error; the error id in the message is in the server log.",
    503: "The service is starting or stopping, or a dependency (database, store, job queue) is unreachable: retry.",
    507: "The artifact store is full.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape (and what the status means) for `statuses`."""
    return {
        status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS.get(status, "Error.")} for status in statuses
    }


def json_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """error_responses for a route whose success is not JSON (HTML, images): the errors are still JSON."""
    ref = {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
    return {
        status: {"description": ERROR_DESCRIPTIONS.get(status, "Error."), "content": {"application/json": ref}}
        for status in statuses
    }
