"""Domain errors. One root; the API maps each kind to an HTTP status in one place (api/errors.py)."""

from __future__ import annotations


class StsweepError(Exception):
    """Root of every error stsweep raises on purpose. ``field`` names the input at fault, when one is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(StsweepError):
    """No such study, trial, dataset or checkpoint (or it is not visible to the caller)."""


class Conflict(StsweepError):
    """The request clashes with the current state (e.g. resume a completed study, delete a dataset in use)."""


class InvalidInput(StsweepError):
    """The request is well-formed JSON but a value is wrong."""


class RangeNotSatisfiable(InvalidInput):
    """An HTTP Range that does not overlap the object (HTTP 416)."""


class PayloadTooLarge(StsweepError):
    """An upload exceeded the configured size limit."""


class Unauthorized(StsweepError):
    """No token, or not a valid one."""


class Forbidden(StsweepError):
    """The token's role may not do this (HTTP 403, naming the role). Never used for what another project holds:
    that does not exist for the caller (NotFound)."""


class QuotaExceeded(StsweepError):
    """A project quota on a count (active studies, queued plus running trials) would be passed (HTTP 429).
    `field` names the quota; a quota on bytes is a PayloadTooLarge naming it instead (HTTP 413)."""


class DatabaseUnavailable(StsweepError):
    """PostgreSQL cannot be reached right now."""


class StorageError(StsweepError):
    """The artifact store failed, or an artifact failed its checksum."""


class LeaseLost(StsweepError):
    """A worker wrote with an attempt token that no longer holds the trial's lease."""


class UnsafeArchive(StsweepError):
    """An archive member would escape the destination (absolute path, `..`, outside link)."""


class CorruptStudy(Conflict):
    """A stored study row holds what no valid study can (written by hand, or by an older version): the study is
    quarantined (failed, with the reason), never run."""


class RequestTimeout(StsweepError):
    """The client stopped sending its request body for longer than the server waits (HTTP 408)."""
