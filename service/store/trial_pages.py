"""A study's trials, a page at a time: by OFFSET (kept for compatibility) or by a keyset cursor.

A cursor is opaque to clients: the sort, order and state filter it was made for, and the last trial's sort key
and number, as URL-safe base64 JSON. The next page starts strictly after that (key, number) in the page order
`key ASC|DESC NULLS LAST, number`, so it costs the page whatever its depth, where OFFSET reads and drops every
row before it. With `sort=number` (the default) a walk by cursor returns every trial once, in order, whatever
changes meanwhile (numbers never change; trials added meanwhile come at the end). Sorted by a key that changes
(state, value, attempts), a trial whose key changes during the walk may move across the cursor; durations are
measured up to the walk's first page (the cursor carries that time), so only a trial finishing meanwhile moves.

Index use: `number` (either order, with or without a state filter) and `state` ascending start at the cursor in
an index (uq_trials_study_number, ix_trials_claim) and read one page; the other sorts order the study's matching
trials first (a top-N sort, no OFFSET's discarded rows but O(trials) for a study of many).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.errors import InvalidInput, NotFound
from service.core.schemas import TrialPage
from service.store import trial_counts
from service.store.db import session_scope
from service.store.trial_rows import TRIAL_COLUMNS, trials_public

SortKey = Literal["number", "value", "state", "duration", "attempts"]
Order = Literal["asc", "desc"]

# Each sort's key: (SQL, its type, whether it may be NULL). Floats are float8 on both sides, so a key read back
# from a cursor's JSON compares equal to the row it came from.
_KEYS: dict[str, tuple[str, str, bool]] = {
    "number": ("number", "int", False),
    "state": ("state", "text", False),
    "attempts": ("attempts", "int", False),
    "value": ("value", "float8", True),
    # Up to the walk's first page (`:at`), not now(): an unfinished trial's duration would otherwise grow between
    # pages and cross the cursor again and again.
    "duration": ("(coalesce(CAST(extract(epoch FROM finished_at) AS float8), CAST(:at AS float8)) "
                 "- CAST(extract(epoch FROM started_at) AS float8))", "float8", True),
}
MAX_CURSOR_CHARS = 1024


def encode_cursor(sort: str, order: str, state: str | None, key: Any, number: int, at: float) -> str:
    raw = json.dumps([sort, order, state, key, number, at], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str, state: str | None) -> tuple[Any, int, float]:
    """(sort key, trial number) after which the page starts, and the time of the walk's first page (epoch
    seconds); InvalidInput naming `cursor` when it is not one this endpoint made for the same sort, order and
    state."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidInput(f"must be at most {MAX_CURSOR_CHARS} characters", field="cursor")
    try:
        body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("is not a cursor this endpoint returned (pass `next_cursor` as it came)",
                           field="cursor") from None
    if not isinstance(body, list) or len(body) != 6:
        raise InvalidInput("is not a cursor this endpoint returned (pass `next_cursor` as it came)", field="cursor")
    c_sort, c_order, c_state, key, number, at = body
    if [c_sort, c_order, c_state] != [sort, order, state]:
        raise InvalidInput(f"was made for sort={c_sort!r}, order={c_order!r}, state={c_state!r}: ask with those "
                           "(or without a cursor, for the first page)", field="cursor")
    if not _is_int(number) or not _key_ok(sort, key) or not isinstance(at, (int, float)) or isinstance(at, bool) \
            or not math.isfinite(at):
        raise InvalidInput("is not a cursor this endpoint returned (pass `next_cursor` as it came)", field="cursor")
    return key, number, float(at)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63


def _key_ok(sort: str, key: Any) -> bool:
    _, cast, nullable = _KEYS[sort]
    if key is None:
        return nullable
    if cast == "int":
        return _is_int(key)
    if cast == "text":
        return isinstance(key, str) and len(key) <= 64
    return isinstance(key, float) or _is_int(key)  # NaN and infinities included: float8 orders them


def _after(sort: str, descending: bool, key: Any) -> str:
    """The keyset condition: rows strictly after (:k, :n) in the page order (key NULLS LAST, then number)."""
    sql, cast, nullable = _KEYS[sort]
    k = f"CAST(:k AS {cast})"
    beyond = "<" if descending else ">"
    if sort == "number":
        return f"number {beyond} :n"
    if key is None:
        return f"({sql} IS NULL AND number > :n)"
    if not descending:
        after = f"({sql}, number) > ({k}, :n)"  # a row comparison: an index on (key, number) starts there
    else:
        after = f"({sql} < {k} OR ({sql} = {k} AND number > :n))"
    return f"({after} OR {sql} IS NULL)" if nullable else after


def list_trials(factory: sessionmaker[Session], study_id: str, offset: int, limit: int, state: str | None,
                sort: SortKey = "number", descending: bool = False, cursor: str | None = None) -> TrialPage:
    order: Order = "desc" if descending else "asc"
    after: tuple[Any, int, float] | None = None
    if cursor is not None:
        if offset:
            raise InvalidInput("cannot be combined with a cursor (the cursor says where the page starts)",
                               field="offset")
        after = decode_cursor(cursor, sort, order, state)
    key_sql = _KEYS[sort][0]
    where = ["study_id = :sid"] + (["state = :state"] if state else [])
    if after is not None:
        where.append(_after(sort, descending, after[0]))
    direction = "DESC" if descending else "ASC"
    order_by = f"number {direction}" if sort == "number" else f"{key_sql} {direction} NULLS LAST, number"
    with session_scope(factory) as s:
        s.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        at = after[2] if after else float(s.execute(text("SELECT CAST(extract(epoch FROM now()) AS float8)"))
                                          .scalar_one())
        params = {"sid": study_id, "state": state, "limit": limit + 1, "offset": offset, "at": at,
                  "k": after[0] if after else None, "n": after[1] if after else None}
        if s.execute(text("SELECT 1 FROM studies WHERE id = :id"), {"id": study_id}).first() is None:
            raise NotFound(f"study {study_id} not found", field="study_id")
        total = trial_counts.trial_total(s, study_id, state)
        rows = s.execute(text(f"SELECT {TRIAL_COLUMNS}, {key_sql} AS sort_key FROM trials "
                              f"WHERE {' AND '.join(where)} ORDER BY {order_by} LIMIT :limit OFFSET :offset"),
                         params).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = trials_public(s, rows)
    last = rows[-1] if rows else None
    next_cursor = (encode_cursor(sort, order, state, _json_key(last.sort_key), int(last.number), at)
                   if more and last is not None else None)
    return TrialPage(items=items, total=total, offset=offset, limit=limit, next_cursor=next_cursor)


def _json_key(key: Any) -> Any:
    return key if key is None or isinstance(key, (int, str)) else float(key)
