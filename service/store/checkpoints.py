"""Finding a trial's final checkpoint by study id (and trial number), and serving byte ranges of it.

A final checkpoint is one uncompressed tar in the artifact store (written by the worker with ``put_dir``), its
sha256 and size recorded on the trial row. It is served byte-for-byte, so the sha256 in the database is the
sha256 of what a client downloads, and any byte range of it is stable for resuming.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.artifacts.store import ArtifactStore
from service.store.db import session_scope
from service.core.errors import NotFound, RangeNotSatisfiable, StorageError
from service.store.winner import winner_run_sql

_TRIAL_NUMBER = re.compile(r"^[0-9]{1,9}$")
_COLUMNS = "st.name AS study_name, t.number, t.state, t.checkpoint_key, t.checkpoint_sha256, t.checkpoint_bytes"


@dataclass(frozen=True)
class Checkpoint:
    study_id: str
    study_name: str
    trial_number: int
    key: str
    sha256: str
    size: int

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @property
    def filename(self) -> str:
        return f"{self.study_name}-trial-{self.trial_number}.tar"


def trial_number_param(number: str) -> int:
    """Trial numbers in paths: digits only, anything else (``..``, encodings) is not found."""
    if not _TRIAL_NUMBER.fullmatch(number):
        raise NotFound(f"trial {number!r} not found", field="number")
    return int(number)


def _study_name(s: Session, study_id: str) -> str:
    name = s.execute(text("SELECT name FROM studies WHERE id = :id"), {"id": study_id}).scalar_one_or_none()
    if name is None:
        raise NotFound(f"study {study_id} not found", field="study_id")
    return str(name)


def best_checkpoint(factory: sessionmaker[Session], study_id: str) -> Checkpoint:
    """The final checkpoint of the study's winner (the trial a test split scores): its best run that has one,
    which without confirmed configurations is the best complete trial with a checkpoint."""
    with session_scope(factory) as s:
        _study_name(s, study_id)
        row = s.execute(text(winner_run_sql(_COLUMNS)), {"sid": study_id}).first()
        if row is None:
            raise NotFound(f"study {study_id} has no complete trial with a checkpoint yet", field="study_id")
    return _checkpoint(study_id, row)


def trial_checkpoint(factory: sessionmaker[Session], study_id: str, number: int) -> Checkpoint:
    """The final checkpoint of any finished trial that still has one."""
    with session_scope(factory) as s:
        _study_name(s, study_id)
        row = s.execute(text(f"SELECT {_COLUMNS} FROM trials t JOIN studies st ON st.id = t.study_id "
                             "WHERE t.study_id = :sid AND t.number = :n"), {"sid": study_id, "n": number}).first()
    if row is None:
        raise NotFound(f"study {study_id} has no trial {number}", field="number")
    if row.state in ("queued", "running"):
        raise NotFound(f"trial {number} is {row.state}; its checkpoint is served once it finishes", field="number")
    if row.checkpoint_key is None:
        raise NotFound(f"trial {number} ({row.state}) has no checkpoint: pruned and failed trials keep none, and "
                       "complete trials outside the study's keep_top_k lose theirs", field="number")
    return _checkpoint(study_id, row)


def _checkpoint(study_id: str, row: Any) -> Checkpoint:
    return Checkpoint(study_id=study_id, study_name=row.study_name, trial_number=row.number, key=row.checkpoint_key,
                      sha256=row.checkpoint_sha256, size=int(row.checkpoint_bytes or 0))


def stored_size(store: ArtifactStore, ckpt: Checkpoint) -> int:
    """The object's real size; StorageError when it disagrees with the database (the object is not ours)."""
    try:
        size = store.size(ckpt.key)
    except NotFound as exc:
        raise StorageError(f"checkpoint of trial {ckpt.trial_number} is missing from the artifact store") from exc
    if ckpt.size and size != ckpt.size:
        raise StorageError(f"checkpoint of trial {ckpt.trial_number} has {size} bytes, the database says "
                           f"{ckpt.size}")
    return size


# ---------------------------------------------------------------- HTTP ranges

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


_MAX_POSITION_DIGITS = 19  # past this a byte position is past any object (and int() of it is never tried)


def _position(digits: str) -> int | None:
    if not digits:
        return None
    return int(digits) if len(digits) <= _MAX_POSITION_DIGITS else 10**_MAX_POSITION_DIGITS


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One HTTP byte range -> (start, end inclusive), or None to send the whole object.

    Malformed headers and multi-range requests are ignored (RFC 9110 lets a server do so);
    RangeNotSatisfiable when the range does not overlap the object.
    """
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    first, last = _position(m.group(1)), _position(m.group(2))
    if first is None:  # suffix: the last N bytes
        n = last or 0
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {header!r} is empty for an object of {size} bytes", field="range")
        return max(0, size - n), size - 1
    start = first
    end = last if last is not None else size - 1
    if last is not None and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts at or past the end of the {size} bytes",
                                  field="range")
    return start, min(end, size - 1)
