"""Shared fixtures: real PostgreSQL (fresh databases every run), a context, an API client and a token."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.store import migrate, optuna_bridge
from service.api.app import create_app
from service.store.tokens import create_token
from service.context import Context
from service.settings import Settings
from tests import pg
from tests.live import serve_in_thread

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    """One database per test run with every migration applied and Optuna's schema created; tests clone it."""
    name = pg.unique_name("stsweep_tmpl")
    url = pg.create_database(name)
    try:
        migrate.upgrade(url)
        optuna_bridge.storage(url, "optuna").engine.dispose()
        optuna_bridge.storage.cache_clear()
        yield name
    finally:
        pg.drop_database(name)


@pytest.fixture
def database_url(template_db: str) -> Iterator[str]:
    name = pg.unique_name("stsweep_t")
    url = pg.create_database(name, template=template_db)
    try:
        yield url
    finally:
        optuna_bridge.storage.cache_clear()
        pg.drop_database(name)


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A fresh database with nothing in it (no migrations applied)."""
    name = pg.unique_name("stsweep_empty")
    url = pg.create_database(name)
    try:
        yield url
    finally:
        optuna_bridge.storage.cache_clear()
        pg.drop_database(name)


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """An STSWEEP_HOME for tests that start the embedded PostgreSQL, outside pytest's 0700 temp tree: as root,
    pgserver runs pg_ctl as its own `pgserver` user, which must reach the data folder (and a pytest run started
    meanwhile resets that tree's mode)."""
    folder = Path(tempfile.mkdtemp(prefix="stsweep-home-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def settings(database_url: str, tmp_path: Path, data_root: Path) -> Settings:
    return Settings(
        database_url=database_url,
        home=tmp_path / "home",
        artifact_root=str(tmp_path / "artifacts"),
        data_root=data_root,
        lease_seconds=30,
        heartbeat_seconds=1,
        poll_seconds=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    context = Context(settings, settings.database_url or "")
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def token(ctx: Context) -> str:
    return create_token(ctx.sessions, "tests")


@pytest.fixture
def client(ctx: Context, token: str) -> Iterator[TestClient]:
    app = create_app(ctx, run_reaper=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


@pytest.fixture
def live_server(ctx: Context) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    with serve_in_thread(create_app(ctx, run_reaper=False)) as url:
        yield url


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Under CI=true a skip is a failure, unless its reason is a capability this machine lacks (a GPU, a docker
# daemon): nothing else may quietly not run.
CI_ACCEPTED_SKIPS = ("no GPU", "no docker daemon")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(accepted in reason for accepted in CI_ACCEPTED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which allows only {CI_ACCEPTED_SKIPS}: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with slow tests (real training, real faults) first, each file's tests kept together in their
    order: with two pytest processes (scripts/test: pytest-xdist, a file each), the longest files start first and
    the short ones fill in around them, rather than one long file running alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    first_seen = {path: i for i, path in reversed(list(enumerate(item.path for item in items)))}
    items.sort(key=lambda item: (item.path not in slow_files, first_seen[item.path]))
