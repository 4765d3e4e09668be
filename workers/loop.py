"""The worker loop: claim a trial, sample its parameters from Optuna, train, report, finish, next.

Faults are data, never the end of the worker: every database call (claim, heartbeat, report, finish, release,
baseline, test split, Optuna's storage) is retried through an outage, which is logged once when it starts and
once when it ends. A trial whose lease outlived the outage goes on; one whose lease ran out is abandoned (its
writes are refused) and resumes elsewhere from its checkpoint. A trained trial whose final checkpoint or
result cannot be stored after retries is given back to the queue with its resumable checkpoint, never failed:
only real failures (an error in training, running out of memory, lost leases, a final checkpoint its project's
stored-bytes quota has no room for) fail a trial or use up one of its `max_attempts`, and its history says which
fault each attempt met.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import TrialState

from service.context import Context
from service.core.errors import LeaseLost, StsweepError
from service.core.scheduler import SchedulerJob
from service.core.spec import StudySpec
from service.store import (baseline_job, optuna_bridge, quarantine, queue, results, retention, studies,
                           study_check)
from service.store.optuna_history import HistoryBound
from service.store.maintenance import MaintenanceThread
from workers import final_checkpoint
from workers.contract import TrialOutcome, TrialRun
from workers.devices import capability, free_memory, is_out_of_memory, precision_for
from workers.faults import FAULT_GIVEBACKS_BEFORE_FAILING, Faults, GaveUp, transient
from workers.heartbeat import Heartbeat
from workers.hooks import LoopHooks
from workers.prepared import PreparedStudy, prepare
from workers.resolve import make_resolver
from workers.sampling import trial_params
from workers.signals import ShutdownSignals
from workers.training import train_trial

log = logging.getLogger("stsweep.worker")

Ending = Literal["complete", "pruned", "failed", "released", "fault", "lost", "quarantined"]
TELL_RETRY_SECONDS = 60.0  # past this, the reconciler tells Optuna what our tables already hold


class TrainingDiverged(StsweepError):
    """A trial whose kept model scores NaN or infinity: a failure, never a result."""


class StudyQuarantined(StsweepError):
    """The study this worker was about to work on could not be loaded (its spec no longer validates, its
    sampler or pruner cannot be built): it was quarantined, and the worker moves on."""


@dataclass
class WarmStudy:
    """The warm cache of the study this worker last worked on: its spec, Optuna study and prepared model and
    data, so the next trial of the same study starts without reloading anything."""

    study_id: str
    spec: StudySpec
    optuna_study: optuna.Study
    prepared: PreparedStudy


class Worker:
    def __init__(self, ctx: Context, device: str, signals: ShutdownSignals, scratch: Path | None = None,
                 scheduler: SchedulerJob | None = None) -> None:
        self.ctx = ctx
        self.device = device
        self.signals = signals
        self.faults = Faults()
        self.scratch = scratch or Path(tempfile.mkdtemp(prefix="stsweep-worker-"))
        self.capability = capability(device)  # its native bf16 unit, once: the workers view shows it
        self.worker_id = self.faults.db.call("register", queue.register_worker, ctx.sessions, socket.gethostname(),
                                             os.getpid(), device, scheduler, bf16=self.capability.bf16_unit,
                                             stop=signals.requested)
        self.heartbeat = Heartbeat(ctx.sessions, self.worker_id, ctx.settings.heartbeat_seconds,
                                   ctx.settings.lease_seconds, self.faults.db)
        # Reaping and reconciling, elected among every worker and API of the deployment: in its own thread, so
        # a claim never waits on a round (and a deployment with no API still reaps).
        self.maintenance = MaintenanceThread(ctx, ctx.settings.reaper_seconds, outage=self.faults.database)
        self.current: WarmStudy | None = None
        self.dataset_cache = ctx.settings.home / "cache" / "datasets"
        self.fault_pause = 0.0  # seconds to wait before the next claim after a trial was given back for a fault

    def run(self, *, max_trials: int | None = None, exit_when_idle: float | None = None) -> int:
        """Work until signalled (or `max_trials` done, or idle for `exit_when_idle` seconds). Returns trials run."""
        self.heartbeat.start()
        self.maintenance.start()
        done = 0
        idle_since = time.monotonic()
        log.info("worker %d on %s ready (%s)", self.worker_id, self.device, self.capability.describe())
        try:
            while not self.signals.requested.is_set() and (max_trials is None or done < max_trials):
                try:
                    claimed = self.faults.db.call("claim", queue.claim, self.ctx.sessions, self.worker_id,
                                                  self.ctx.settings.lease_seconds, stop=self.signals.requested)
                except GaveUp:
                    break
                except Exception as exc:  # noqa: BLE001 - studies at fault are quarantined by the claim itself
                    log.error("claim failed: %s: %s", type(exc).__name__, exc)
                    self.signals.requested.wait(self.ctx.settings.poll_seconds)
                    continue
                if claimed is None:
                    if self.score_test_split() or self.compute_baseline():
                        idle_since = time.monotonic()
                        continue
                    if exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
                        break
                    self.signals.requested.wait(self.ctx.settings.poll_seconds)
                    continue
                ending = self.run_trial(claimed[0])
                done += 1
                idle_since = time.monotonic()
                self._pause_after(ending)
        finally:
            self.heartbeat.stop()
            self.maintenance.stop(timeout=5.0)
            self.faults.db.once("worker stopped", queue.worker_stopped, self.ctx.sessions, self.worker_id)
            shutil.rmtree(self.scratch, ignore_errors=True)
        return done

    def _pause_after(self, ending: Ending) -> None:
        """After a fault gave a trial back, wait (growing to a minute) before the next claim, so a worker does
        not retrain the same trial against a store that is still refusing it; any other ending resets it."""
        if ending != "fault":
            self.fault_pause = 0.0
            return
        self.fault_pause = min(60.0, max(1.0, self.fault_pause * 2))
        self.signals.requested.wait(self.fault_pause)

    # -------------------------------------------------------------- one trial

    def run_trial(self, claim: queue.Claim) -> Ending:
        self.heartbeat.watch(claim.lease)
        work_dir = self.scratch / f"{claim.study_id}-{claim.number}-{claim.attempt}"
        work_dir.mkdir(parents=True, exist_ok=True)
        label = f"{claim.study_id} #{claim.number} (attempt {claim.attempt})"
        trial: optuna.trial.Trial | None = None
        params: dict[str, Any] = claim.params or {}
        db, stop = self.faults.db, self.signals.requested
        try:
            state = self.warm_study(claim.study_id)
            if claim.kind == "confirm":  # a repeat of a configuration: fixed params, no Optuna trial
                trial, params = None, dict(claim.params or {})
            else:
                trial, params = trial_params(self.ctx.sessions, state.optuna_study, state.spec, claim, db, stop)
            resume_from = self.download_resume(claim, work_dir)
            reported = db.call("reported points", queue.reported_values, self.ctx.sessions, claim.lease.trial_id,
                               stop=stop)
            if reported and trial is not None:  # resumed: Optuna gets the points recorded only with us
                db.call("Optuna points", optuna_bridge.sync_points, state.optuna_study._storage, trial._trial_id,
                        reported, stop=stop)
            # PrecisionUnavailable (bf16 asked for on a GPU without it) fails the trial with its reason.
            precision = precision_for(self.capability, state.spec.precision).name
            db.call("precision", queue.set_precision, self.ctx.sessions, claim.lease, precision, stop=stop)
            run = TrialRun(study_id=claim.study_id, trial_number=claim.number, spec=state.spec, params=params,
                           work_dir=work_dir, resume_from=resume_from, reported_points=frozenset(reported),
                           train_seed=claim.train_seed, precision=precision)
            prefix = retention.attempt_prefix(claim.study_id, claim.number, claim.lease.token)
            hooks = LoopHooks(self.ctx, claim.lease, trial, state.optuna_study, prefix, self.heartbeat,
                              self.signals, self.faults)
            log.info("trial %s: training %s in %s%s", label, params, precision,
                     f" (a confirm run, training seed {claim.train_seed})"
                     if claim.kind == "confirm" else "")
            outcome = train_trial(run, state.prepared, hooks, self.device)
            return self.conclude(claim, state, trial, outcome, hooks)
        except LeaseLost:
            return self.lease_lost(claim, label)
        except StudyQuarantined:
            return "quarantined"  # its trials were ended with it, this one included
        except Exception as exc:  # noqa: BLE001 - a fault in one trial is data, not the end of the worker
            reason = transient(exc)
            if reason is not None:
                return self.give_back(claim, reason, label)
            return self.fail(claim, trial, params, exc, label)
        finally:
            self.heartbeat.watch(None)
            shutil.rmtree(work_dir, ignore_errors=True)

    def warm_study(self, study_id: str) -> WarmStudy:
        if self.current is not None and self.current.study_id == study_id:
            return self.current
        self.current = None
        free_memory()
        db, stop = self.faults.db, self.signals.requested
        try:
            spec, optuna_name, _status = db.call("load study", studies.load_spec, self.ctx.sessions, study_id,
                                                 stop=stop)
            study_check.check_buildable(spec)
            history = HistoryBound(self.ctx.settings.optuna_recent_trials, self.ctx.settings.optuna_best_trials)
            optuna_study = db.call("Optuna study", lambda: optuna_bridge.load_study(self.ctx.optuna_storage,
                                                                                       optuna_name, spec, history),
                                   stop=stop)
        except Exception as exc:
            if transient(exc) is not None or not quarantine.is_poison(exc):
                raise
            db.call("quarantine", quarantine.quarantine, self.ctx.sessions, study_id, "load study", exc, stop=stop)
            raise StudyQuarantined(quarantine.describe("load study", exc)) from exc
        resolve = make_resolver(self.ctx, self.dataset_cache, study_id)
        prepared = prepare(spec, resolve, self.device, self.ctx.settings.read_limits(), self.ctx.settings.models_root)
        self.current = WarmStudy(study_id, spec, optuna_study, prepared)
        return self.current

    def compute_baseline(self, study_id: str | None = None) -> bool:
        """The base model's score, untrained, on the same eval subset and full split: the study's reference.
        A job with a lease (service/store/baseline_job.py), taken right after a trial of `study_id` ends, or
        for any started study when idle (None): computed once per study, never before a lone worker's first
        trial. True when a job was taken. Its lease is renewed by the heartbeat; if this worker dies (or the
        computation fails), another attempt takes it once the lease ran out, up to a cap."""
        if self.signals.requested.is_set():
            return False
        return self._study_job("baseline", baseline_job.claim_baseline, study_id, self._baseline)

    def _baseline(self, job: baseline_job.BaselineJob) -> None:
        state = self.warm_study(job.study_id)
        subset_value, full_value = state.prepared.baseline()
        if self.faults.db.call("baseline", baseline_job.record_baseline, self.ctx.sessions, job, full_value,
                               subset_value, stop=self.signals.requested):
            log.info("study %s: baseline %.4f (eval subset %.4f)", job.study_id, full_value, subset_value)
        else:
            log.warning("study %s: baseline job taken over by another worker; its baseline is kept", job.study_id)

    def _study_job(self, what: str, claim: Callable[..., tuple[bool, Any]], study_id: str | None,
                   work: Callable[[Any], None]) -> bool:
        """Take a study job (`claim`: that study's, or any waiting with None) and run `work(job)` while the
        heartbeat renews its lease. True when a job was taken. A job that fails here, or whose worker dies, is
        taken again once its lease ran out (each job caps its attempts)."""
        try:
            ok, job = self.faults.db.once(what, claim, self.ctx.sessions, self.ctx.settings.lease_seconds, study_id)
        except StsweepError as exc:
            log.warning("%s: %s", what, exc.message)
            return False
        except Exception as exc:  # noqa: BLE001 - never the end of the worker
            log.error("%s: cannot take a job: %s: %s", what, type(exc).__name__, exc)
            return False
        if not ok or job is None:
            return False
        self.heartbeat.watch_job(job)
        try:
            work(job)
        except StudyQuarantined:
            pass  # the study failed, its job with it
        except Exception as exc:  # noqa: BLE001 - the job is taken again once its lease runs out
            log.warning("study %s: %s not done (%s); it will be retried", job.study_id, what,
                        transient(exc) or f"{type(exc).__name__}: {exc}")
        finally:
            self.heartbeat.watch_job(None)
        return True

    def download_resume(self, claim: queue.Claim, work_dir: Path) -> Path | None:
        """The trial's resumable checkpoint, unpacked. A store that is down is retried (and past the retries
        the trial is given back); a checkpoint that fails its checksum is not used: training starts over."""
        if claim.resume_key is None:
            return None
        dest = work_dir / "resume"
        try:
            self.faults.store.call("resume checkpoint", self.ctx.artifacts.get_dir, claim.resume_key, dest,
                                   expected_sha256=claim.resume_sha256, stop=self.signals.requested,
                                   deadline=time.monotonic() + self.ctx.settings.fault_retry_seconds)
        except StsweepError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            log.warning("trial %s #%d: resume checkpoint unusable (%s); starting over",
                        claim.study_id, claim.number, exc.message)
            return None
        log.info("trial %s #%d: resuming from checkpoint at %s examples", claim.study_id, claim.number,
                 claim.resume_examples)
        return dest

    # -------------------------------------------------------------- endings

    def conclude(self, claim: queue.Claim, state: WarmStudy, trial: optuna.trial.Trial | None, outcome: TrialOutcome,
                 hooks: LoopHooks) -> Ending:
        label = f"{claim.study_id} #{claim.number} (attempt {claim.attempt})"
        if outcome.status == "interrupted":
            if hooks.lease_gone:
                return self.lease_lost(claim, label)
            why = "worker stopping" if self.signals.requested.is_set() else "study stopped"
            return self.release(claim, f"given back ({why})", None, label, outcome.examples_seen)
        value = outcome.value
        if outcome.status == "complete" and not math.isfinite(value if value is not None else math.nan):
            raise TrainingDiverged(f"the full evaluation gave {value}: training diverged")
        db, stop = self.faults.db, self.signals.requested
        finish = queue.Finish(state="pruned", value=value, examples_seen=outcome.examples_seen)
        if outcome.status == "complete":
            assert outcome.best_model_dir is not None and value is not None
            db.call("lease", queue.check_lease, self.ctx.sessions, claim.lease, stop=stop)  # no upload if stale
            # Raises GaveUp past the retries: run_trial then gives the trial back with its resumable checkpoint.
            # A project out of stored bytes raises PayloadTooLarge: run_trial fails the trial with its message.
            info = final_checkpoint.upload(self.ctx, self.faults, claim.lease, f"{hooks.key_prefix}/final.tar",
                                           outcome.best_model_dir, stop)
            finish = queue.Finish(state="complete", value=value, metrics=outcome.metrics,
                                  checkpoint_key=info.key, checkpoint_sha256=info.sha256, checkpoint_bytes=info.size,
                                  examples_seen=outcome.examples_seen)
        try:
            # Refused (a lost lease, the byte quota): the checkpoint is deleted, and run_trial handles the error.
            status = final_checkpoint.record(self.ctx, self.faults, claim.lease, finish, stop)
        except GaveUp:
            if finish.checkpoint_key:
                log.warning("trial %s: stopping before the result could be recorded; the trial resumes elsewhere",
                            label)
            raise
        # Finished: its lease is gone, so a beat now (or during the study jobs that follow) would report it lost.
        self.heartbeat.watch(None)
        if trial is not None:  # a confirm run has no Optuna trial to tell
            self.tell(state.optuna_study, trial, outcome.status, value, label)
        log.info("trial %s #%d: %s, value %s", claim.study_id, claim.number, outcome.status, value)
        self.after_trial(claim, state, status)
        return "complete" if outcome.status == "complete" else "pruned"

    def tell(self, study: optuna.Study, trial: optuna.trial.Trial, status: str, value: float | None,
             label: str) -> None:
        """Optuna learns the outcome our tables already hold; if its storage stays down, the reconciler tells
        it later (skip_if_finished: the reconciler may have been first)."""
        try:
            if status == "complete":
                self.faults.db.call("Optuna tell", study.tell, trial, value, skip_if_finished=True,
                                    deadline=time.monotonic() + TELL_RETRY_SECONDS)
            else:
                self.faults.db.call("Optuna tell", study.tell, trial, state=TrialState.PRUNED, skip_if_finished=True,
                                    deadline=time.monotonic() + TELL_RETRY_SECONDS)
        except GaveUp as exc:
            log.warning("trial %s: Optuna not told yet (%s); the reconciler will", label, exc.reason)

    def release(self, claim: queue.Claim, event: str, fault: str | None, label: str, examples: int | None = None
                ) -> Ending:
        try:
            self.faults.db.call("release", queue.release, self.ctx.sessions, claim.lease, event, fault,
                                stop=self.signals.requested)
        except LeaseLost:
            return self.lease_lost(claim, label)
        except GaveUp:
            log.warning("trial %s: could not give it back (the database is down); its lease will expire", label)
            return "lost"
        where = f" at {examples} examples" if examples is not None else ""
        log.info("trial %s: given back to the queue%s (%s)", label, where, event if fault is None else fault)
        return "fault" if fault is not None else "released"

    def give_back(self, claim: queue.Claim, fault: str, label: str) -> Ending:
        """A transient fault outlasted its retries: the trial goes back to the queue with its resumable
        checkpoint, without using up an attempt (up to FAULT_GIVEBACKS_BEFORE_FAILING times)."""
        if claim.fault_count + 1 >= FAULT_GIVEBACKS_BEFORE_FAILING:
            return self._record_failure(claim, None, f"given up after {claim.fault_count + 1} transient faults; "
                                        f"the last: {fault}", label, oom=False)
        return self.release(claim, "given back", fault[:500], label)

    def lease_lost(self, claim: queue.Claim, label: str) -> Ending:
        outage = self.faults.database
        fault = (f"cut off from the database for {outage.last_seconds:.0f} s (longer than the lease)"
                 if outage.last_seconds and outage.last_seconds >= self.ctx.settings.lease_seconds
                 else "heartbeat missed its lease")
        log.warning("trial %s: lease lost (%s); another attempt owns it now", label, fault)
        try:
            self.faults.db.once("history", queue.note, self.ctx.sessions, claim.lease.trial_id, claim.attempt,
                                self.worker_id, "lease lost", fault)
        except StsweepError:
            pass
        return "lost"

    def fail(self, claim: queue.Claim, trial: optuna.trial.Trial | None, params: dict[str, Any],
             exc: BaseException, label: str) -> Ending:
        oom = is_out_of_memory(exc)
        if oom:
            free_memory()
            batch = params.get("per_device_train_batch_size")
            reason = f"out of memory on {self.device}" + (f" with batch size {batch}" if batch else "")
        elif isinstance(exc, StsweepError):
            reason = exc.message
        else:
            reason = f"{type(exc).__name__}: {exc}"
        log.error("trial %s failed: %s", label, reason, exc_info=not oom and not isinstance(exc, StsweepError))
        return self._record_failure(claim, trial, reason, label, oom=oom)

    def _record_failure(self, claim: queue.Claim, trial: optuna.trial.Trial | None, reason: str, label: str, *,
                        oom: bool) -> Ending:
        try:
            self.faults.db.call("finish", queue.finish, self.ctx.sessions, claim.lease,
                                queue.Finish(state="failed", failure_reason=reason[:2000]),
                                self.ctx.settings.failure_streak_to_pause, stop=self.signals.requested)
        except LeaseLost:
            return self.lease_lost(claim, label)
        except GaveUp:
            log.error("trial %s: could not record the failure (the database is down); the lease will expire", label)
            return "lost"
        except Exception as exc:  # noqa: BLE001 - never the end of the worker: the reaper takes the trial back
            log.error("trial %s: could not record the failure (%s: %s); the lease will expire", label,
                      type(exc).__name__, exc)
            return "lost"
        if trial is not None and self.current is not None:
            study = self.current.optuna_study
            try:
                if oom:
                    # Infeasible, not broken: the sampler should steer away from this region.
                    self.faults.db.call("Optuna", trial.set_constraint, optuna_bridge.INFEASIBLE_CONSTRAINT, 1.0,
                                        deadline=time.monotonic() + TELL_RETRY_SECONDS)
                    self.faults.db.call("Optuna tell", study.tell, trial, state=TrialState.PRUNED,
                                        skip_if_finished=True, deadline=time.monotonic() + TELL_RETRY_SECONDS)
                else:
                    self.faults.db.call("Optuna tell", study.tell, trial, state=TrialState.FAIL,
                                        skip_if_finished=True, deadline=time.monotonic() + TELL_RETRY_SECONDS)
            except GaveUp as exc:
                log.warning("trial %s: Optuna not told yet (%s); the reconciler will", label, exc.reason)
        self.delete_resume(claim)
        return "failed"

    def delete_resume(self, claim: queue.Claim) -> None:
        try:
            self.faults.db.once("clean-up", retention.drop_resume_checkpoint, self.ctx, claim.lease.trial_id)
        except StsweepError as exc:  # the artifact store: the reconciler finishes it
            log.warning("trial %s #%d: resumable checkpoint not deleted yet (%s)", claim.study_id, claim.number,
                        exc.message)

    def after_trial(self, claim: queue.Claim, state: WarmStudy, study_status: str) -> None:
        self.delete_resume(claim)
        try:
            self.faults.db.once("retention", retention.apply, self.ctx, claim.study_id, state.spec.keep_top_k)
        except StsweepError as exc:
            log.warning("study %s: retention postponed (%s)", claim.study_id, exc.message)
        # Right after the trial, so it never delays one; before the test split, so a study that just completed
        # shows its baseline by the time its test score lands.
        self.compute_baseline(claim.study_id)
        if study_status == "completed":
            self.score_test_split(claim.study_id)

    # -------------------------------------------------------------- the test split

    def score_test_split(self, study_id: str | None = None) -> bool:
        """Take a completed study's test-split job (that study's, or any waiting) and score its winner. True
        when a job was taken. Its lease is renewed by the heartbeat; if this worker dies, another takes it."""
        return self._study_job("test split", results.claim_test_split, study_id, self._test_split)

    def _test_split(self, job: results.ScoreJob) -> None:
        from workers.test_split import evaluate_winner_on_test

        state = self.warm_study(job.study_id)
        evaluate_winner_on_test(self.ctx, job, state.prepared, self.scratch, self.faults)
