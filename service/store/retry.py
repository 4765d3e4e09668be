"""Riding out outages: retry a call while its fault is transient, with capped exponential backoff and jitter, and
say so once when an outage starts and once when it ends.

An `Outage` is one dependency (the database, the object store) as this process sees it; every thread that
calls it shares the one log line. A `Retry` runs calls against it; what counts as transient is the caller's
`classify` function (`service.store.db.transient_reason`, `service.artifacts.faults.transient_reason`), so a
lost lease, a bad value or a checksum mismatch is raised at once, never retried.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
Classify = Callable[[BaseException], "str | None"]


class Outage:
    """Whether a dependency is down right now, as seen by this process, and since when. Logs one warning when
    an outage starts and one line when it ends (with its length), whatever the number of failed calls."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.log = logger
        self._lock = threading.Lock()
        self._since: float | None = None
        self.outages = 0  # how many outages this process saw (ended or not)
        self.last_seconds: float | None = None  # length of the last one that ended

    def failed(self, reason: str) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
            self.outages += 1
        self.log.warning("%s unavailable (%s): retrying with backoff; work in progress is kept", self.name, reason)

    def ok(self) -> None:
        with self._lock:
            if self._since is None:
                return
            seconds = time.monotonic() - self._since
            self._since = None
            self.last_seconds = seconds
        self.log.warning("%s back after %.1f s", self.name, seconds)

    @property
    def down(self) -> bool:
        return self._since is not None

    def down_for(self) -> float:
        since = self._since
        return 0.0 if since is None else time.monotonic() - since


class GaveUp(Exception):
    """A retried call that did not succeed before its deadline (or before `stop` was set): `reason` is the last
    transient fault. The original exception is the cause."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


class Retry:
    """Calls `fn` until it succeeds or raises something `classify` does not call transient. Waits between
    tries grow from `base` to `cap` seconds (doubling, each with up to half of it as random jitter, so many
    workers coming back at once do not hammer the server in step)."""

    def __init__(self, outage: Outage, classify: Classify, *, base: float = 0.5, cap: float = 10.0,
                 rng: random.Random | None = None) -> None:
        self.outage = outage
        self.classify = classify
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()

    def call(self, what: str, fn: Callable[..., T], *args: object, deadline: float | None = None,
             stop: threading.Event | None = None, **kwargs: object) -> T:
        """`fn(*args, **kwargs)`, retried. `deadline` (time.monotonic()) and `stop` end the retries with
        GaveUp; without them it retries for as long as the fault lasts."""
        delay = self.base
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified right below
                reason = self.classify(exc)
                if reason is None:
                    raise
                self.outage.failed(reason)
                pause = delay / 2 + self.rng.uniform(0, delay / 2)
                if deadline is not None and time.monotonic() + pause > deadline:
                    raise GaveUp(what, reason) from exc
                if stop is not None:
                    if stop.wait(pause):
                        raise GaveUp(what, reason) from exc
                else:
                    time.sleep(pause)
                delay = min(self.cap, delay * 2)
                continue
            self.outage.ok()
            return result

    def once(self, what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> tuple[bool, T | None]:
        """One try: (True, result), or (False, None) after a transient fault (noted on the outage, so logged
        once per outage); any other error is raised."""
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified right below
            reason = self.classify(exc)
            if reason is None:
                raise
            self.outage.failed(reason)
            return False, None
        self.outage.ok()
        return True, result
