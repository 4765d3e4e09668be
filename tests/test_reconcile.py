"""The reconciler makes Optuna agree with our tables after a process died between two writes (real processes,
killed with SIGKILL at the step in question; real PostgreSQL and Optuna storage), and collects the objects of
dead attempts, and what a write cut short by SIGKILL left in the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy import text

from service.context import Context
from service.store import optuna_bridge, queue, reconcile, retention
from service.store.db import session_scope
from tests.conftest import ROOT
from tests.faultkit import create_study, one, trials_of
from tests.studyspecs import contract_study

ENQUEUED_LR = 3.3e-5


def _body(**overrides: Any) -> dict[str, Any]:
    body = contract_study(name="reconcile", budget={"n_trials": 2, "max_concurrent_trials": 2}, max_attempts=3)
    body.update(overrides)
    return body


def _proc(ctx: Context, scenario: str, value: float = 0.5) -> tuple[int, dict[str, Any] | None]:
    done = subprocess.run([sys.executable, "-m", "tests.faultproc", ctx.database_url, scenario, str(value)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode, json.loads(lines[-1]) if lines else None


def _optuna(ctx: Context, study_id: str) -> list[optuna.trial.FrozenTrial]:
    name = one(ctx, "SELECT optuna_study_name FROM studies WHERE id = :s", s=study_id).optuna_study_name
    return optuna.load_study(study_name=name, storage=ctx.optuna_storage).trials


def _expire_leases(ctx: Context) -> list[queue.Reaped]:
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'"))
    return queue.reap_expired(ctx.sessions)


def test_an_attempt_killed_between_ask_and_record_loses_nothing(ctx: Context) -> None:
    """Slot 0 (an enqueued configuration) and slot 1 each lose an attempt right after Optuna created their
    trial. Slot 0's orphan goes back to it through the reconciler, slot 1's through its next attempt; both
    keep their Optuna trial, slot 0 its enqueued learning rate, and Optuna ends with our counts exactly."""
    study_id = create_study(ctx, _body(enqueue_trials=[{"learning_rate": ENQUEUED_LR}]))
    assert _proc(ctx, "ask-and-die")[0] == -9
    assert _proc(ctx, "ask-and-die")[0] == -9
    orphans = [t for t in _optuna(ctx, study_id) if t.state == TrialState.RUNNING]
    assert len(orphans) == 2 and all(t.system_attrs[optuna_bridge.SLOT_ATTR] for t in orphans)
    assert {t.optuna_trial_id for t in trials_of(ctx, study_id)} == {None}, "neither slot recorded its trial"
    assert [r.state for r in _expire_leases(ctx)] == ["queued", "queued"]

    slot0 = next(t for t in trials_of(ctx, study_id) if t.number == 0)
    orphan0 = next(t for t in orphans if t.system_attrs[optuna_bridge.SLOT_ATTR] == slot0.id)
    repairs = reconcile.reconcile(ctx, collect_objects=False)
    assert len(repairs.adopted) == 2 and not repairs.failed_orphans, repairs
    assert one(ctx, "SELECT optuna_trial_id FROM trials WHERE id = :t", t=slot0.id).optuna_trial_id == orphan0._trial_id

    first = _proc(ctx, "run", 0.7)[1]
    second = _proc(ctx, "run", 0.6)[1]
    assert first is not None and second is not None
    assert first["number"] == 0 and first["attempt"] == 2 and first["optuna_trial_id"] == orphan0._trial_id
    assert first["params"]["learning_rate"] == ENQUEUED_LR, "the enqueued configuration was not lost"
    assert second["params"]["learning_rate"] != ENQUEUED_LR
    assert one(ctx, "SELECT status FROM studies WHERE id = :s", s=study_id).status == "completed"
    assert reconcile.disagreements(ctx, study_id) == []
    assert sorted(t.state.name for t in _optuna(ctx, study_id)) == ["COMPLETE", "COMPLETE"]


def test_the_next_attempt_takes_back_its_orphan_without_the_reconciler(ctx: Context) -> None:
    study_id = create_study(ctx, _body(budget={"n_trials": 1, "max_concurrent_trials": 1}))
    assert _proc(ctx, "ask-and-die")[0] == -9
    (orphan,) = _optuna(ctx, study_id)
    _expire_leases(ctx)
    got = _proc(ctx, "run", 0.8)[1]
    assert got is not None and got["attempt"] == 2 and got["optuna_trial_id"] == orphan._trial_id
    assert reconcile.disagreements(ctx, study_id) == []
    assert [t.state.name for t in _optuna(ctx, study_id)] == ["COMPLETE"]


def test_killed_between_our_finish_and_optunas_tell(ctx: Context) -> None:
    study_id = create_study(ctx, _body())
    assert _proc(ctx, "finish-and-die", 0.75)[0] == -9
    assert _proc(ctx, "prune-and-die", 0.25)[0] == -9
    assert len(reconcile.disagreements(ctx, study_id)) == 2, "complete and pruned with us, RUNNING in Optuna"
    repairs = reconcile.reconcile(ctx, collect_objects=False)
    assert len(repairs.told) == 2, repairs
    assert reconcile.disagreements(ctx, study_id) == []
    by_state = {t.state.name: t for t in _optuna(ctx, study_id)}
    assert by_state["COMPLETE"].value == 0.75
    assert by_state["PRUNED"].value == 0.25 and by_state["PRUNED"].intermediate_values == {32: 0.25, 64: 0.25}
    assert reconcile.reconcile(ctx, collect_objects=False).told == [], "idempotent"


def test_a_reaper_that_died_before_telling_optuna_and_slots_left_by_a_timeout(ctx: Context) -> None:
    # Attempts used up: our trial fails; the reaper died before Optuna heard of it.
    study_id = create_study(ctx, _body(budget={"n_trials": 1, "max_concurrent_trials": 1}, max_attempts=1))
    _proc(ctx, "ask-and-die")
    _expire_leases(ctx)  # the orphan has no trial of ours that can take it: attempts are used up
    assert [t.state for t in trials_of(ctx, study_id)] == ["failed"]
    reconcile.reconcile(ctx, collect_objects=False)
    assert [t.state.name for t in _optuna(ctx, study_id)] == ["FAIL"]

    # A timeout: slot 0 ran and was given back (queued, its Optuna trial RUNNING) when the timeout passed.
    timed = create_study(ctx, _body(budget={"n_trials": 3, "max_concurrent_trials": 1}))
    assert _proc(ctx, "run", 0.9)[0] == 0
    claim, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    spec_name = one(ctx, "SELECT optuna_study_name FROM studies WHERE id = :s", s=timed).optuna_study_name
    from service.store import studies
    from service.store.db import transient_reason
    from service.store.retry import Outage, Retry
    from workers.sampling import trial_params
    import logging

    spec, _, _ = studies.load_spec(ctx.sessions, timed)
    trial_params(ctx.sessions, optuna_bridge.load_study(ctx.optuna_storage, spec_name, spec), spec, claim,
                 Retry(Outage("database", logging.getLogger("test")), transient_reason))
    assert queue.release(ctx.sessions, claim.lease, "given back (worker stopping)")
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET timeout_seconds = 1, started_at = now() - interval '1 hour' WHERE id = :s"),
                  {"s": timed})
    _expire_leases(ctx)  # settles the timed-out study
    states = {t.number: t.state for t in trials_of(ctx, timed)}
    assert states == {0: "complete", 1: "failed"}, "the never-started slot is dropped, the started one failed"
    reconcile.reconcile(ctx, collect_objects=False)
    assert reconcile.disagreements(ctx, timed) == []
    assert not [t for t in _optuna(ctx, timed) if t.state == TrialState.RUNNING]


def test_objects_of_dead_attempts_are_collected_and_live_ones_kept(ctx: Context, tmp_path: Path) -> None:
    study_id = create_study(ctx, _body())
    live, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    dead_token = uuid.uuid4()
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x" * 1000)
    store = ctx.artifacts
    live_prefix = retention.attempt_prefix(study_id, live.number, live.lease.token)
    named = store.put_dir(f"{live_prefix}/resume-32.tar", folder)
    queue.record_resume_checkpoint(ctx.sessions, live.lease, named.key, named.sha256, 32)
    uploading = store.put_dir(f"{live_prefix}/resume-64.tar", folder)  # uploaded, not recorded yet
    dead = store.put_dir(f"{retention.attempt_prefix(study_id, live.number, dead_token)}/resume-32.tar", folder)
    dead_final = store.put_dir(f"{retention.attempt_prefix(study_id, 1, dead_token)}/final.tar", folder)
    deleted = reconcile.collect_orphan_objects(ctx, study_id)
    assert sorted(deleted) == sorted([dead.key, dead_final.key])
    assert store.list_keys(retention.study_prefix(study_id)) == sorted([named.key, uploading.key])
    # Once the live lease is gone (reaped), its unrecorded upload is an orphan too; the recorded one stays.
    _expire_leases(ctx)
    assert reconcile.collect_orphan_objects(ctx, study_id) == [uploading.key]
    assert store.list_keys(retention.study_prefix(study_id)) == [named.key]


_WRITE_FOREVER = """
import sys
from service.artifacts.local import LocalArtifactStore
LocalArtifactStore(sys.argv[1]).put_file(sys.argv[2], sys.argv[3])  # reads the FIFO until killed
"""


def _killed_mid_write(root: Path, key: str, tmp_path: Path) -> None:
    """A real process writing `key` into the store at `root`, SIGKILLed half-way: what a worker killed during a
    checkpoint upload leaves behind."""
    fifo = tmp_path / f"fifo-{uuid.uuid4().hex[:8]}"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-c", _WRITE_FOREVER, str(root), key, str(fifo)], cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:  # the FIFO opens for writing once the writer has it open for reading
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never opened its source"
            time.sleep(0.05)
    with os.fdopen(fd, "wb") as feed:
        feed.write(b"x" * 4096)
        feed.flush()
        folder = root / key.rsplit("/", 1)[0]
        while not (folder.is_dir() and any(p.name.startswith(".tmp-") for p in folder.iterdir())):
            assert time.monotonic() < deadline, "the writer never started its temporary file"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


def test_writes_cut_short_by_sigkill_are_collected_once_their_attempt_is_dead(ctx: Context, tmp_path: Path) -> None:
    study_id = create_study(ctx, _body())
    live, _ = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    root = Path(ctx.artifacts.root)  # type: ignore[attr-defined]
    live_prefix = retention.attempt_prefix(study_id, live.number, live.lease.token)
    dead_prefix = retention.attempt_prefix(study_id, live.number, uuid.uuid4())
    _killed_mid_write(root, f"{dead_prefix}/resume-64.tar", tmp_path)
    _killed_mid_write(root, f"{live_prefix}/resume-64.tar", tmp_path)
    partial = ctx.artifacts.list_partial(retention.study_prefix(study_id))
    assert len(partial) == 2 and not ctx.artifacts.list_keys(retention.study_prefix(study_id)), "never published"
    dead_partial = next(p for p in partial if p.startswith(dead_prefix))
    live_partial = next(p for p in partial if p.startswith(live_prefix))

    assert reconcile.collect_orphan_objects(ctx, study_id) == [dead_partial]
    assert not (root / dead_prefix).exists(), "the dead attempt's folder goes with it"
    assert ctx.artifacts.list_partial(retention.study_prefix(study_id)) == [live_partial], "a live write is kept"
    _expire_leases(ctx)
    assert reconcile.collect_orphan_objects(ctx, study_id) == [live_partial]
    assert not (root / f"studies/{study_id}").exists()
