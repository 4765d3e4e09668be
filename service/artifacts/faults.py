"""Which artifact-store failures are transient (worth retrying, and never a reason to fail a trial): a full or
failing local disk, an S3 endpoint that refuses, resets or times out, an S3 server error (5xx, SlowDown).
A checksum mismatch, a missing object, a refused key or an access error is not: it would fail again."""

from __future__ import annotations

import errno

from service.core.errors import StorageError

# Local disk: full, over quota, failing, or a network filesystem that went away for a while.
_TRANSIENT_ERRNO = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EIO: "I/O error",
                    errno.ETIMEDOUT: "timed out", errno.ECONNRESET: "connection reset",
                    errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "host unreachable",
                    errno.ENETUNREACH: "network unreachable", errno.ESTALE: "stale file handle",
                    errno.EAGAIN: "temporarily unavailable"}
_TRANSIENT_S3_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "ServiceUnavailable",
                       "InternalError", "Throttling", "ThrottlingException", "RequestLimitExceeded"}


def transient_reason(exc: BaseException) -> str | None:
    """A short description when `exc` (a StorageError from a store, or what caused it) is a transient fault of
    the artifact store; None for anything else."""
    if not isinstance(exc, (StorageError, OSError)):
        return None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        reason = _one(current)
        if reason is not None:
            return reason
        # boto3 raises S3UploadFailedError while handling the ClientError it wraps (no `from`).
        current = current.__cause__ or (current.__context__ if type(current).__name__ == "S3UploadFailedError"
                                        else None)
    return None


def _one(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return f"{_TRANSIENT_ERRNO[exc.errno]} ({exc.filename or exc.strerror})"
    try:
        from botocore import exceptions as boto
    except ImportError:  # no S3 support installed: no S3 errors either
        return None
    if isinstance(exc, (boto.EndpointConnectionError, boto.ConnectionClosedError, boto.ConnectTimeoutError,
                        boto.ReadTimeoutError, boto.ConnectionError, boto.HTTPClientError,
                        boto.IncompleteReadError, boto.ResponseStreamingError)):
        return f"S3 unreachable: {str(exc).splitlines()[0][:200]}"
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(error.get("Code", ""))
        if status >= 500 or code in _TRANSIENT_S3_CODES:
            return f"S3 error {code or status}"
    return None
