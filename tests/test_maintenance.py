"""Maintenance off the claim path (service/store/maintenance.py, election.py, reconcile.py): one elected runner
at a time across real processes, taken over when its holder is SIGKILLed; a worker's claims never wait on a
round; a round reads only what was marked since the last one (real PostgreSQL, Optuna storage and processes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text

from service.context import Context
from service.store import election, queue, reconcile
from service.store.db import session_scope
from service.store.maintenance import Maintenance, MaintenanceThread, Round, lease_seconds
from service.store.reaper import reap_once
from tests.conftest import ROOT
from tests.faultkit import create_study, one, wait_for
from tests.studyspecs import contract_study
from workers.loop import Ending, Worker
from workers.signals import ShutdownSignals

INTERVAL = 0.5
PAUSE = 0.5  # each round of the competing processes lasts at least this long
TTL = lease_seconds(INTERVAL)


def _events(path: Path) -> list[tuple[str, str, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        name, what, at = line.split()
        out.append((name, what, float(at)))
    return out


def _compete(ctx: Context, name: str, events: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.maintproc", ctx.database_url, name, str(events),
                             str(INTERVAL), str(PAUSE)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _rounds(events: list[tuple[str, str, float]], killed: dict[str, float]) -> list[tuple[str, float, float]]:
    """(name, start, end) of every round; a round cut by SIGKILL ends when its process was killed."""
    open_: dict[str, float] = {}
    rounds = []
    for name, what, at in sorted(events, key=lambda e: e[2]):
        if what == "start":
            open_[name] = at
        elif what == "end" and name in open_:
            rounds.append((name, open_.pop(name), at))
    rounds += [(name, start, killed[name]) for name, start in open_.items() if name in killed]
    return rounds


def test_one_process_runs_the_rounds_and_another_takes_over_when_it_is_killed(ctx: Context,
                                                                              tmp_path: Path) -> None:
    events = tmp_path / "events"
    procs = {"a": _compete(ctx, "a", events)}
    killed: dict[str, float] = {}
    try:
        wait_for(lambda: any(e[:2] == ("a", "start") for e in _events(events)), 60, "a's first round")
        procs["b"] = _compete(ctx, "b", events)
        wait_for(lambda: any(e[:2] == ("b", "wait") for e in _events(events)), 60, "b to ask for the lease")
        time.sleep(3 * INTERVAL + PAUSE)  # b keeps asking while a holds the lease
        assert {e[0] for e in _events(events) if e[1] == "start"} == {"a"}, "b never ran a round beside a"
        # SIGKILL a in the middle of a round: its lease is never given up, b takes over once it ran out.
        wait_for(lambda: (evs := _events(events)) and evs[-1][:2] == ("a", "start"), 30, "a inside a round",
                 interval=0.02)
        a_started = max(e[2] for e in _events(events) if e[:2] == ("a", "start"))
        procs["a"].kill()
        procs["a"].wait()
        killed["a"] = time.time()
        first_b = wait_for(lambda: next((e[2] for e in _events(events) if e[:2] == ("b", "start")), None),
                           30, "b to take over")
        assert first_b - a_started >= TTL * 0.9, "b waited for a's lease to run out"
        assert first_b - killed["a"] <= TTL + INTERVAL + 5, "and took over soon after"
        # A clean stop gives the lease up at once (no waiting for it to run out): the next process takes it.
        procs["b"].send_signal(signal.SIGTERM)
        assert procs["b"].wait(timeout=30) == 0
        assert election.current_holder(ctx.sessions) is None, "b gave its lease up when it stopped"
        procs["c"] = _compete(ctx, "c", events)
        wait_for(lambda: any(e[:2] == ("c", "end") for e in _events(events)), 60, "c to take over")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    rounds = sorted(_rounds(_events(events), killed), key=lambda r: r[1])
    assert len(rounds) >= 5 and {r[0] for r in rounds} == {"a", "b", "c"}
    for (n1, _s1, e1), (n2, s2, _e2) in zip(rounds, rounds[1:]):
        assert n1 == n2 or s2 >= e1, f"{n2}'s round began at {s2} while {n1}'s ran until {e1}"


class _SlowRound(Maintenance):
    """The real maintenance (election, reaper, reconciler), with a round that lasts `ROUND` seconds."""

    ROUND = 4.0

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, 60.0)
        self.started = threading.Event()
        self.span: list[float] = []

    def work(self) -> Round | None:
        self.span.append(time.monotonic())
        self.started.set()
        time.sleep(self.ROUND)
        done = super().work()
        self.span.append(time.monotonic())
        return done


class _QuickTrials(Worker):
    """The real worker loop and claims; each trial ends at once (no training)."""

    def __init__(self, ctx: Context, tmp_path: Path, slow: _SlowRound) -> None:
        super().__init__(ctx, "cpu", ShutdownSignals(30), scratch=tmp_path / "scratch")
        self.slow = slow
        self.claimed_at: list[float] = []

    def run_trial(self, claim: queue.Claim) -> Ending:
        self.claimed_at.append(time.monotonic())
        if len(self.claimed_at) == 1:
            assert self.slow.started.wait(10), "the maintenance round began"
        queue.finish(self.ctx.sessions, claim.lease, queue.Finish(state="pruned", value=0.5), 3)
        return "pruned"


def test_claims_never_wait_on_a_maintenance_round(ctx: Context, tmp_path: Path) -> None:
    create_study(ctx, contract_study(name="quick", budget={"n_trials": 3, "max_concurrent_trials": 1}))
    slow = _SlowRound(ctx)
    worker = _QuickTrials(ctx, tmp_path, slow)
    worker.maintenance = MaintenanceThread(ctx, 60.0, maintenance=slow, first_after=0.0)
    begun = time.monotonic()
    assert worker.run(max_trials=3) == 3
    worker.maintenance.join(60)
    round_start, round_end = slow.span
    claims = worker.claimed_at[-1] - begun
    assert round_start < worker.claimed_at[1] and worker.claimed_at[-1] < round_end, "claimed during the round"
    assert claims < 0.5 * (round_end - round_start), f"3 trials claimed in {claims:.2f} s, the round ran " \
                                                     f"{round_end - round_start:.2f} s"
    assert election.current_holder(ctx.sessions) is None, "the worker gave the lease up when it stopped"


def _finish_one_in_each(ctx: Context, n: int) -> list[str]:
    """Claim n trials (one per study: each study runs one at a time), then finish them all."""
    claims = [queue.claim(ctx.sessions, None, 30) for _ in range(n)]
    for claim, _ in claims:  # type: ignore[misc]
        queue.finish(ctx.sessions, claim.lease, queue.Finish(state="pruned", value=0.5), 3)
    return [study_id for _, study_id in claims]  # type: ignore[misc]


def _bulk_finished(ctx: Context, study_id: str, n: int) -> None:
    """n finished trials, written straight to the table (as if long done): no marks."""
    with session_scope(ctx.sessions) as s:
        s.execute(text("""
            INSERT INTO trials (study_id, number, state, value, rank_key, attempts, finished_at)
            SELECT :sid, 1000 + g, 'complete', g::float8 / :n, g::float8 / :n, 1, now()
            FROM generate_series(1, :n) g
        """), {"sid": study_id, "n": n})


def test_a_round_reads_only_what_was_marked_since_the_last_one(ctx: Context) -> None:
    ids = [create_study(ctx, contract_study(name=f"s{i}", budget={"n_trials": 3, "max_concurrent_trials": 1}))
           for i in range(5)]
    assert sorted(_finish_one_in_each(ctx, len(ids))) == sorted(ids), "one trial ended in each study"
    first = reconcile.reconcile(ctx)
    assert sorted(first.studies) == sorted(ids) and first.rows_read == 5
    again = reconcile.reconcile(ctx)
    assert again.studies == [] and again.rows_read == 0, "nothing changed: nothing read"

    # A study of 20,000 finished trials in which one more trial ends: one study, one row.
    claim, big = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    _bulk_finished(ctx, big, 20_000)
    queue.finish(ctx.sessions, claim.lease, queue.Finish(state="pruned", value=0.1), 3)
    third = reconcile.reconcile(ctx)
    assert third.studies == [big] and third.rows_read == 1, third

    # A study's status change is marked too; a reaped attempt is marked now and once more after the grace.
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE studies SET status = 'stopped' WHERE id = :s"), {"s": ids[0]})
    claim, reaped_in = queue.claim(ctx.sessions, None, 30)  # type: ignore[misc]
    with session_scope(ctx.sessions) as s:
        s.execute(text("UPDATE trials SET lease_expires_at = now() - interval '1 second' WHERE id = :t"),
                  {"t": claim.lease.trial_id})
    assert [r.trial_id for r in reap_once(ctx)] == [claim.lease.trial_id]
    fourth = reconcile.reconcile(ctx)
    assert sorted(fourth.studies) == sorted({ids[0], reaped_in})
    late = one(ctx, "SELECT count(*) AS n, min(due_at) > now() AS later FROM reconcile_marks")
    assert (late.n, late.later) == (1, True), "the reaped attempt's late mark waits for the grace"
    assert reconcile.reconcile(ctx).studies == []


def test_a_round_stops_when_its_lease_is_lost(ctx: Context) -> None:
    for i in range(3):
        create_study(ctx, contract_study(name=f"l{i}", budget={"n_trials": 1, "max_concurrent_trials": 1}))
    _finish_one_in_each(ctx, 3)
    asked: list[int] = []

    def keep_going() -> bool:
        asked.append(1)
        return len(asked) < 2

    cut = reconcile.reconcile(ctx, keep_going=keep_going)
    assert cut.locked_out and len(cut.studies) == 1, "one study done, then the round stopped"
    assert len(reconcile.reconcile(ctx).studies) == 2, "the marks it did not read wait for the next round"
