"""The one error tree of Bulkhead.

Every layer raises these; only ``api/errors.py`` turns them into HTTP statuses and FHIR OperationOutcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One problem: an OperationOutcome.issue in the making."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = field(default_factory=tuple)


class BulkheadError(Exception):
    """Base of every error Bulkhead raises on purpose."""

    code = "exception"
    status = 500

    def __init__(self, message: str, *, issues: list[Issue] | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.issues = issues or [Issue(diagnostics=message, code=self.code)]
        self.retry_after = retry_after


class InvalidRequest(BulkheadError):
    """The request is malformed (bad syntax, unknown parameter, bad partition name)."""

    code = "invalid"
    status = 400


class InputUnreadable(InvalidRequest):
    """An import input this server may not, or cannot, read: always ``input N could not be read: <reason>``.

    ``reason`` is one of the few fixed words of ``core/importpolicy.py``; nothing of what the URL answered
    (connection errors, listings, bodies) is ever part of the message.
    """

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason


class Unauthorized(BulkheadError):
    """The request carries no valid credentials (a missing, expired or badly signed token)."""

    code = "login"
    status = 401


class Forbidden(BulkheadError):
    """The caller may not do this."""

    code = "forbidden"
    status = 403


class NotFound(BulkheadError):
    """Nothing of that name exists in this partition (or the caller may not know it does)."""

    code = "not-found"
    status = 404


class MethodNotAllowed(BulkheadError):
    """The interaction is not supported on this path."""

    code = "not-supported"
    status = 405


class Conflict(BulkheadError):
    """The request conflicts with the current state (duplicate, concurrent change)."""

    code = "conflict"
    status = 409


class Gone(BulkheadError):
    """The resource existed and was deleted."""

    code = "deleted"
    status = 410


class PreconditionFailed(BulkheadError):
    """A precondition (If-Match, conditional criteria) did not hold."""

    code = "conflict"
    status = 412


class PayloadTooLarge(BulkheadError):
    """The body exceeds the configured limit."""

    code = "too-costly"
    status = 413


class UnsupportedMediaType(BulkheadError):
    """The body is not in a format Bulkhead reads."""

    code = "not-supported"
    status = 415


class Unprocessable(BulkheadError):
    """The body is well-formed but not a valid FHIR resource."""

    code = "processing"
    status = 422


class TooManyRequests(BulkheadError):
    """A limit was reached; try again later."""

    code = "throttled"
    status = 429


class ServiceUnavailable(BulkheadError):
    """A backing service is not reachable right now."""

    code = "transient"
    status = 503
