"""Workers and the API through a real PgBouncer in transaction pool mode (Debian's `pgbouncer`), and a worker's
connections counted: no session state survives a transaction there, so nothing of ours may rely on it (startup
`options`, session-level advisory locks, LISTEN, SET outside a transaction)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.app import create_app
from service.context import Context
from service.core.spec import StudySpec
from service.settings import Settings
from service.store import election, studies
from service.store.db import session_scope
from service.store.reconcile import reconcile
from service.store.tokens import create_token
from tests import faultkit
from tests.conftest import ROOT
from tests.live import serve_in_thread
from tests.pgbouncer import Bouncer, available, pgbouncer
from tests.studyspecs import contract_study
from tests.workerproc import start_worker, wait_for

pytestmark = pytest.mark.skipif(available() is None, reason="pgbouncer is not installed (apt-get install pgbouncer)")

SERVER_POOL = 3  # server connections per database: fewer than the clients below, so they share them
RACERS = 5


@pytest.fixture(scope="module")
def bouncer() -> Iterator[Bouncer]:
    with pgbouncer(pool_size=SERVER_POOL) as b:
        yield b


@pytest.fixture
def bounced(settings: Settings, bouncer: Bouncer) -> Iterator[Context]:
    """A context whose every connection goes through PgBouncer."""
    url = bouncer.url_for(settings.database_url or "")
    context = Context(settings.model_copy(update={"database_url": url}), url)
    try:
        yield context
    finally:
        context.close()


def _worker_clients(bouncer: Bouncer) -> int:
    return sum(1 for c in bouncer.show("CLIENTS") if c["application_name"] == "stsweep-worker")


def test_claim_race_through_pgbouncer_has_no_duplicates(ctx: Context, bouncer: Bouncer, tmp_path: Path) -> None:
    limits: dict[str, int] = {}
    for name, n, cap in (("a", 24, 3), ("b", 12, 1)):
        spec = contract_study(name=name, budget={"n_trials": n, "max_concurrent_trials": cap})
        study_id = studies.new_study_id()
        studies.insert_study(ctx.sessions, study_id, f"optuna-{study_id}", StudySpec.model_validate(spec), None, {})
        limits[study_id] = cap
    url = bouncer.url_for(ctx.database_url)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.queue_racer", url, str(tmp_path / f"{i}.jsonl")],
                              cwd=ROOT) for i in range(RACERS)]
    for p in procs:
        assert p.wait(timeout=180) == 0
    claims = [json.loads(line) for i in range(RACERS) for line in (tmp_path / f"{i}.jsonl").read_text().splitlines()]
    ids = [c["trial_id"] for c in claims]
    assert len(ids) == 36, "every slot claimed once, none lost"
    assert len(set(ids)) == len(ids), "no slot claimed twice"
    assert all(c["attempt"] == 1 for c in claims)
    for c in claims:
        assert c["running_seen"] <= limits[c["study_id"]], c
    with session_scope(ctx.sessions) as s:
        states = dict(s.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all())
    assert states == {"complete": 36}
    pools = [p for p in bouncer.show("POOLS") if p["database"] == ctx.engine.url.database]
    assert pools and pools[0]["sv_active"] + pools[0]["sv_idle"] + pools[0]["sv_used"] <= SERVER_POOL, pools


def test_optuna_through_pgbouncer(ctx: Context, bounced: Context) -> None:
    """Optuna's tables, in their own schema, through transaction pooling (no connection-level search_path)."""
    study_id = faultkit.create_study(bounced, faultkit.tiny_study("bounced"))
    name = f"stsweep-{study_id}"
    optuna_study = optuna.load_study(study_name=name, storage=bounced.optuna_storage)
    for value in (0.25, 0.5):
        trial = optuna_study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        optuna_study.tell(trial, value)
    assert [t.value for t in optuna.load_study(study_name=name, storage=ctx.optuna_storage).trials] == [0.25, 0.5]


def test_one_maintenance_runner_at_a_time_through_pgbouncer(ctx: Context, bounced: Context) -> None:
    """The maintenance election (service/store/election.py: a lease row, no advisory lock, no session state)
    through PgBouncer, where two processes share the same few server connections: while one holds the lease the
    other is refused, a released lease is taken at once, and nothing is left locked or open on the server. A
    round through PgBouncer reconciles the study marked by its creation."""
    faultkit.create_study(bounced, faultkit.tiny_study("bounced"))
    other = Context(bounced.settings, bounced.database_url)
    try:
        assert election.take(bounced.sessions, "a", 30)
        assert not election.take(other.sessions, "b", 30), "two runners at once"
        assert election.renew(bounced.sessions, "a", 30)
        election.release(bounced.sessions, "a")
        assert election.take(other.sessions, "b", 30), "a released lease is free at once"
        assert not election.renew(bounced.sessions, "a", 30), "the old holder may not renew"
        reconcile(other, collect_objects=False)  # a round's queries (marks, Optuna) through PgBouncer
    finally:
        other.close()
    with session_scope(ctx.sessions) as s:
        locks = s.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one()
        open_tx = s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND state LIKE 'idle in transaction%'")).scalar_one()
    assert (locks, open_tx) == (0, 0)


@pytest.mark.slow
def test_worker_and_api_through_pgbouncer(bounced: Context, bouncer: Bouncer, ctx: Context, data_root: Path,
                                          tmp_path: Path) -> None:
    """One real worker process and the real API (uvicorn), both through PgBouncer: a tiny study completes, and
    the worker never has more than 2 client connections open there, idle or training (its one pool, for our
    tables and Optuna's: the connections it holds on PostgreSQL when it connects directly)."""
    token = create_token(bounced.sessions, "pgbouncer")
    with serve_in_thread(create_app(bounced, run_reaper=False)) as base, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        idle, busy = _run_tiny_study(api, bounced.settings, lambda: _worker_clients(bouncer), data_root, tmp_path)
    assert max(idle) <= 2 and max(busy) <= 2, (idle, busy)
    assert min(idle) >= 1 and min(busy) >= 1, (idle, busy)
    with session_scope(ctx.sessions) as s:
        assert s.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one() == 0


def _run_tiny_study(api: httpx.Client | TestClient, settings: Settings, count: Callable[[], int], data_root: Path,
                    tmp_path: Path) -> tuple[list[int], list[int]]:
    """Start one worker, count its connections while it idles, submit a one-trial study, count them while it
    trains; the study must complete and the worker stop cleanly on SIGTERM. Returns the two samples."""
    faultkit.write_pairs(data_root, train=32, dev=24)
    # No maintenance round nor periodic checkpoint in the sampled windows: a worker at rest.
    worker_settings = settings.model_copy(update={"reaper_seconds": 3600.0, "checkpoint_every_seconds": 3600.0})
    log = tmp_path / "worker.log"
    proc = start_worker(worker_settings, log)
    try:
        wait_for(lambda: count() > 0 and api.get("/v1/workers").json()["items"], 120, "the worker registered")
        idle = _sample(count, 1.5)
        body = faultkit.tiny_study("counted", train=32, budget={"n_trials": 1, "max_concurrent_trials": 1})
        r = api.post("/v1/studies", json=body)
        assert r.status_code == 201, r.text
        study_id = r.json()["id"]
        wait_for(lambda: api.get(f"/v1/studies/{study_id}").json()["counts"].get("running"), 120,
                 "the trial running")
        busy = _sample(count, 2.0)
        wait_for(lambda: api.get(f"/v1/studies/{study_id}").json()["status"] == "completed", 300,
                 "the study completed")
        trials = api.get(f"/v1/studies/{study_id}/trials").json()["items"]
        assert [t["state"] for t in trials] == ["complete"] and trials[0]["value"] is not None, trials
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return idle, busy


def _sample(count: Callable[[], int], seconds: float) -> list[int]:
    found, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        found.append(count())
        time.sleep(0.05)
    return found
