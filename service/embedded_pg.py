"""The embedded default: with no STSWEEP_DATABASE_URL, a private PostgreSQL server (the `pgserver` wheel)
runs in a data folder under STSWEEP_HOME. Processes on the same home share one server."""

from __future__ import annotations

import logging

from service.settings import Settings

log = logging.getLogger("stsweep")


def database_url(settings: Settings) -> str:
    """The URL to use: the configured one, or the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    import pgserver  # only needed without a URL

    datadir = settings.home / "pgdata"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process that opened it exits; child processes
    # (`stsweep up` starts the API and workers) get its URL in STSWEEP_DATABASE_URL instead of a handle.
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    uri = server.get_uri()
    log.info("using the embedded PostgreSQL in %s", datadir)
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)
