"""A process competing for the maintenance election, for tests: it runs the real `MaintenanceThread` (election,
reaper, reconciler), each round made long with a pause, and appends `NAME start|end WALLTIME` to a file when it
begins and ends one (and `NAME wait` the first time it finds the lease taken). SIGTERM stops it cleanly (the
lease is given up); SIGKILL leaves the lease to run out.

    python -m tests.maintproc DATABASE_URL NAME EVENTS_FILE INTERVAL ROUND_SECONDS
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from service.context import Context
from service.settings import Settings
from service.store.maintenance import Maintenance, MaintenanceThread, Round


class LongRounds(Maintenance):
    """The real election around a round that takes at least `pause` seconds."""

    def __init__(self, ctx: Context, interval: float, name: str, events: str, pause: float) -> None:
        super().__init__(ctx, interval, holder=f"{name}:{os.getpid()}")
        self.name, self.events, self.pause = name, events, pause
        self.waited = False

    def note(self, what: str) -> None:
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.name} {what} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)

    def run(self) -> Round | None:
        done = super().run()
        if done is None and not self.waited:  # another process holds the lease: say so once
            self.waited = True
            self.note("wait")
        return done

    def work(self) -> Round | None:
        self.note("start")
        time.sleep(self.pause)
        done = super().work()
        self.note("end")
        return done


def main(url: str, name: str, events: str, interval: float, pause: float) -> int:
    settings = Settings(database_url=url, lease_seconds=30, _env_file=None)  # type: ignore[call-arg]
    ctx = Context(settings, url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = MaintenanceThread(ctx, interval, maintenance=LongRounds(ctx, interval, name, events, pause))
    thread.start()
    stop.wait()
    thread.stop(timeout=30)
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])))
