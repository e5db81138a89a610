"""Service-level errors. Messages are shown to the user as they are: say what was wrong and how to fix it, and
never include a server path. `app/api/errors.py` maps these (and domain/io errors) to HTTP statuses."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of the service errors; `code` names the error in the body, `details` (optional, JSON-able) too."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class NotFound(ServiceError):
    """A referenced resource does not exist (404)."""

    code = "not_found"


class Conflict(ServiceError):
    """The request conflicts with the current state, e.g. deleting a checkpoint a model uses (409)."""

    code = "conflict"


class InvalidInput(ServiceError):
    """A request field is wrong in a way the schema cannot express (400)."""

    code = "invalid_input"


class UnprocessableInput(ServiceError):
    """A well-formed upload whose content cannot be used, e.g. a cohort that fails validation (422)."""

    code = "unprocessable_input"


class PayloadTooLarge(ServiceError):
    """An upload or archive is larger than a configured cap (413). The message names the cap and the
    setting."""

    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """The body's Content-Type is not what the route takes, e.g. multipart sent to POST /predict/bag (415)."""

    code = "unsupported_media_type"


class Unauthorized(ServiceError):
    """No API key, or an unknown / revoked one (401)."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """The key's scope does not allow the request, or a path lies outside the data root (403)."""

    code = "forbidden"


class ServiceUnavailable(ServiceError):
    """A dependency (job queue, database) cannot be reached (503)."""

    code = "service_unavailable"


class UnsafeArchive(UnprocessableInput):
    """An archive member is an absolute path, climbs out with '..', is a link or a device (422)."""

    code = "unsafe_archive"


def not_found(kind: str, resource_id: str, *, hint: str = "") -> NotFound:
    """A NotFound with the standard wording: "base 'base_…' not found; list them with GET /bases"."""
    return NotFound(f"{kind} {resource_id!r} not found" + (f"; {hint}" if hint else ""))
