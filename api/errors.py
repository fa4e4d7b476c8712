"""The one place where errors become HTTP statuses and FHIR OperationOutcome answers."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import BadRequest, HTTPException

from core.errors import BulkheadError, Issue
from core.fhirjson import dumps
from core.outcome import operation_outcome

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"

_HTTP_CODES = {
    400: "invalid",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-costly",
    415: "not-supported",
    429: "throttled",
}


class UnknownOperation(BadRequest):
    """A ``$operation`` this server does not offer (400, ``not-supported``), wherever the path names it."""


def unknown_operation(name: str) -> UnknownOperation:
    """Return the refusal of an operation the server does not offer."""
    return UnknownOperation(
        f"The operation {name[:80]!r} is not supported here; "
        "/metadata lists the operations this server offers"
    )


def _operation_in_path(status: int) -> str | None:
    """Return the ``$operation`` a 404/405 path names when no route offers it (None otherwise)."""
    names = [segment for segment in request.path.split("/") if segment.startswith("$")]
    if not names or status not in (404, 405):
        return None
    name = names[-1]
    offered = any(f"/{name}" in rule.rule for rule in current_app.url_map.iter_rules())
    return None if offered else name


def outcome_response(status: int, issues: list[Issue], headers: dict[str, str] | None = None) -> Response:
    """Return a response whose body is an OperationOutcome."""
    return Response(dumps(operation_outcome(issues)), status=status, headers=headers, content_type=FHIR_JSON)


def register_error_handlers(app: Flask) -> None:
    """Turn every error into an OperationOutcome: ours, HTTP ones, and unexpected ones."""

    @app.errorhandler(BulkheadError)
    def _ours(exc: BulkheadError) -> Response:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        if exc.status >= 500:
            log.warning("request failed: %s", exc.message)
        return outcome_response(exc.status, exc.issues, headers)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        operation = _operation_in_path(status)
        if operation is not None:
            exc = unknown_operation(operation)
            status = 400
        headers = {}
        if status == 405 and exc.response is None:
            valid = getattr(exc, "valid_methods", None)
            if valid:
                headers["Allow"] = ", ".join(valid)
        code = "not-supported" if isinstance(exc, UnknownOperation) else _HTTP_CODES.get(status, "processing")
        issue = Issue(exc.description or exc.name, code=code)
        return outcome_response(status, [issue], headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return outcome_response(
            500, [Issue("An internal error occurred; it has been logged", code="exception")]
        )
