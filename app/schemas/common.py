"""Shared response shapes: the error body (every 4xx/5xx) and list pages."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """Every error response: {"error": {"code", "message", "details"?}}."""

    error: ErrorInfo


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape for `statuses`."""
    return {status: {"model": ErrorResponse} for status in statuses}
