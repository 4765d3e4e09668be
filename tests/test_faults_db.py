"""A private PostgreSQL cluster stopped mid-trial, once for less than the lease and once for longer, under two
real worker processes: the same processes are alive afterwards, the study completes, no trial failed, no point
is lost or doubled, and Optuna agrees with our tables."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from service.context import Context
from tests.faultkit import (
    assert_nothing_lost,
    create_study,
    private_cluster,
    rows,
    settings_for,
    study_status,
    tiny_study,
    trials_of,
    wait_for,
    write_pairs,
)
from tests.workerproc import start_worker

pytestmark = pytest.mark.slow

LEASE = 6.0
EVERY = 32
TRAIN = 192


def _running(ctx: Context, min_examples: int = EVERY) -> list[tuple[int, int]]:
    return [(r.id, r.attempts) for r in rows(ctx, "SELECT id, attempts FROM trials WHERE state = 'running' "
                                                  "AND examples_seen >= :n ORDER BY id", n=min_examples)]


def test_database_outages_shorter_and_longer_than_the_lease(tmp_path: Path) -> None:
    with private_cluster() as cluster:
        settings = settings_for(cluster.url, tmp_path, lease_seconds=LEASE, heartbeat_seconds=1,
                                checkpoint_every_seconds=0, fault_retry_seconds=60)
        write_pairs(settings.data_root, train=TRAIN)
        ctx = Context(settings, cluster.url)
        study_id = create_study(ctx, tiny_study("db-outage", train=TRAIN,
                                                budget={"n_trials": 3, "max_concurrent_trials": 2}))
        logs = [tmp_path / f"w{i}.log" for i in range(2)]
        workers = [start_worker(settings, log) for log in logs]
        try:
            # 1. Shorter than the lease, while both workers train: they keep their trials, no attempt is used.
            held = wait_for(lambda: (r := _running(ctx)) and len(r) == 2 and r, 300, "two trials training")
            cluster.stop()
            time.sleep(LEASE / 3)
            cluster.start()
            wait_for(lambda: rows(ctx, "SELECT 1 FROM intermediate_values iv JOIN trials t ON t.id = iv.trial_id "
                                       "WHERE t.id = ANY(:ids) AND iv.created_at > now() - interval '2 seconds'",
                                  ids=[t for t, _ in held]), 120, "training to go on after the short outage")
            kept = {r.id: r for r in rows(ctx, "SELECT id, state, attempts FROM trials WHERE id = ANY(:ids)",
                                          ids=[t for t, _ in held])}
            for trial_id, attempts in held:
                assert kept[trial_id].attempts == attempts, "the short outage used no attempt"
                assert kept[trial_id].state in ("running", "complete"), kept[trial_id]

            # 2. Longer than the lease, once a trial has a resumable checkpoint: leases are lost, the stale
            # writes refused, and the trials resume from their checkpoints.
            wait_for(lambda: rows(ctx, "SELECT 1 FROM trials WHERE state = 'running' AND resume_key IS NOT NULL"),
                     300, "a running trial with a resumable checkpoint")
            cluster.stop()
            time.sleep(LEASE + 4)
            cluster.start()
            wait_for(lambda: study_status(ctx, study_id) == "completed", 600, "the study to complete")
            assert [w.poll() for w in workers] == [None, None], "the same worker processes are still alive"
            for w in workers:
                w.send_signal(signal.SIGTERM)
            assert [w.wait(timeout=60) for w in workers] == [0, 0]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        assert_nothing_lost(ctx, study_id, n_trials=3, every=EVERY, planned=TRAIN)
        found = trials_of(ctx, study_id)
        assert all(t.attempts <= 5 for t in found)
        events = [h for t in found for h in t.history]
        assert any(h["event"] in ("lease expired", "lease lost") for h in events), events
        assert any("resuming from checkpoint at" in log.read_text() for log in logs)
        for log in logs:
            text = log.read_text()
            assert "Traceback" not in text, text[-3000:]
            assert "joins database postgresql+psycopg2://postgres@127.0.0.1" in text
            assert text.count("database unavailable (") == 2, "one line when each outage starts"
            assert text.count("database back after ") == 2, "and one when it ends"
        ctx.close()
