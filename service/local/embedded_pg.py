"""The embedded default: with no STSWEEP_DATABASE_URL, a private PostgreSQL server (the `pgserver` wheel)
runs in a data folder under STSWEEP_HOME. Processes on the same home share one server."""

from __future__ import annotations

import logging
import warnings

from service.settings import Settings

log = logging.getLogger("stsweep")


def database_url(settings: Settings) -> str:
    """The URL to use: the configured one, or the embedded server's (started if needed)."""
    if settings.database_url:
        return settings.database_url
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
        warnings.simplefilter("ignore")
        import pgserver  # only needed without a URL

    # pgserver logs every pg_ctl command line with its (empty) output at INFO: keep start and stop quiet.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    datadir = settings.home / "pgdata"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server stops when the last process that opened it exits; child processes
    # (`stsweep up` starts the API and workers) get its URL in STSWEEP_DATABASE_URL instead of a handle.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(datadir, cleanup_mode="stop")
    uri = server.get_uri()
    log.info("using the embedded PostgreSQL in %s", datadir)
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)
