"""boto3 errors turned into Bulkhead's own at the object store boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from core.errors import BulkheadError, NotFound, PreconditionFailed, ServiceUnavailable

NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})
_PRECONDITION = {"PreconditionFailed", "412"}
_TRANSIENT = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
_CREDENTIALS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


def error_code(err: ClientError) -> str:
    """Return the S3 error code of a client error."""
    return str(err.response.get("Error", {}).get("Code", ""))


def translate_error(err: Exception, bucket: str, key: str | None = None) -> BulkheadError:
    """Return the Bulkhead error that stands for a boto3 error."""
    where = f"{bucket}/{key}" if key else bucket
    if isinstance(err, ClientError):
        code = error_code(err)
        if code in NOT_FOUND_CODES:
            return NotFound("No such file")
        if code == "NoSuchBucket":
            return BulkheadError(f"The object store bucket {bucket!r} does not exist")
        if code in _PRECONDITION:
            return PreconditionFailed(f"The object {where} changed since its entity tag was taken")
        if code in _CREDENTIALS:
            return BulkheadError(f"The object store refused Bulkhead's credentials for {where} ({code})")
        if code in _TRANSIENT:
            return ServiceUnavailable(f"The object store is unavailable ({code})", retry_after=5)
        return BulkheadError(f"The object store failed on {where}: {code or err}")
    if isinstance(
        err,
        EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionError | HTTPClientError,
    ):
        return ServiceUnavailable(f"The object store is not reachable: {err}", retry_after=5)
    return BulkheadError(f"The object store failed on {where}: {err}")


@contextmanager
def translated(bucket: str, key: str | None = None) -> Iterator[None]:
    """Raise boto3 errors inside the block as Bulkhead errors."""
    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise translate_error(err, bucket, key) from err


def bare_etag(value: str) -> str:
    """Return an entity tag without its quotes."""
    return value.strip('"')
