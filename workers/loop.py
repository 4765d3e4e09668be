"""The worker loop: claim a trial, sample its parameters from Optuna, train, report, finish, next."""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from service.store import optuna_bridge, queue, results, retention, studies
from service.store.reaper import reap_once
from service.context import Context
from service.core.errors import LeaseLost, StsweepError
from service.core.spec import StudySpec
from workers.contract import TrialOutcome, TrialRun
from workers.devices import free_memory, is_out_of_memory
from workers.heartbeat import Heartbeat
from workers.hooks import LoopHooks
from workers.prepared import PreparedStudy, prepare
from workers.resolve import make_resolver
from workers.signals import ShutdownSignals
from workers.training import train_trial

log = logging.getLogger("stsweep.worker")


class TrainingDiverged(StsweepError):
    """A trial whose kept model scores NaN or infinity: a failure, never a result."""


@dataclass
class WarmStudy:
    """The warm cache of the study this worker last worked on: its spec, Optuna study and prepared model and
    data, so the next trial of the same study starts without reloading anything."""

    study_id: str
    spec: StudySpec
    optuna_study: optuna.Study
    prepared: PreparedStudy


class Worker:
    def __init__(self, ctx: Context, device: str, signals: ShutdownSignals, scratch: Path | None = None) -> None:
        self.ctx = ctx
        self.device = device
        self.signals = signals
        self.scratch = scratch or Path(tempfile.mkdtemp(prefix="stsweep-worker-"))
        self.worker_id = queue.register_worker(ctx.sessions, socket.gethostname(), os.getpid(), device)
        self.heartbeat = Heartbeat(ctx.sessions, self.worker_id, ctx.settings.heartbeat_seconds,
                                   ctx.settings.lease_seconds)
        self.current: WarmStudy | None = None
        self.resolve = make_resolver(ctx, ctx.settings.home / "cache" / "datasets")

    def run(self, *, max_trials: int | None = None, exit_when_idle: float | None = None) -> int:
        """Work until signalled (or `max_trials` done, or idle for `exit_when_idle` seconds). Returns trials run."""
        self.heartbeat.start()
        done = 0
        idle_since = time.monotonic()
        log.info("worker %d on %s ready", self.worker_id, self.device)
        try:
            while not self.signals.requested.is_set() and (max_trials is None or done < max_trials):
                self.reap()
                claimed = queue.claim(self.ctx.sessions, self.worker_id, self.ctx.settings.lease_seconds)
                if claimed is None:
                    if exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
                        break
                    self.signals.requested.wait(self.ctx.settings.poll_seconds)
                    continue
                self.run_trial(claimed[0])
                done += 1
                idle_since = time.monotonic()
        finally:
            self.heartbeat.stop()
            queue.worker_stopped(self.ctx.sessions, self.worker_id)
            shutil.rmtree(self.scratch, ignore_errors=True)
        return done

    def reap(self) -> None:
        """Re-queue the trials of dead workers before claiming: no trial waits on a control plane being up."""
        try:
            reap_once(self.ctx)
        except StsweepError as exc:
            log.warning("reaper: %s", exc.message)

    # -------------------------------------------------------------- one trial

    def run_trial(self, claim: queue.Claim) -> None:
        self.heartbeat.watch(claim.lease)
        work_dir = self.scratch / f"{claim.study_id}-{claim.number}-{claim.attempt}"
        work_dir.mkdir(parents=True, exist_ok=True)
        label = f"{claim.study_id} #{claim.number} (attempt {claim.attempt})"
        trial: optuna.trial.Trial | None = None
        params: dict[str, Any] = claim.params or {}
        try:
            state = self.warm_study(claim.study_id)
            self.ensure_baseline(state)
            trial, params = self.trial_params(state, claim)
            resume_from = self.download_resume(claim, work_dir)
            run = TrialRun(study_id=claim.study_id, trial_number=claim.number, spec=state.spec, params=params,
                           work_dir=work_dir, resume_from=resume_from,
                           reported_points=queue.reported_points(self.ctx.sessions, claim.lease.trial_id))
            hooks = LoopHooks(self.ctx, claim.lease, trial, f"{retention.study_prefix(claim.study_id)}trials/"
                              f"{claim.number}", self.heartbeat, self.signals)
            log.info("trial %s: training %s", label, params)
            outcome = train_trial(run, state.prepared, hooks, self.device)
            self.conclude(claim, state, trial, outcome, hooks)
        except LeaseLost:
            log.warning("trial %s: lease lost; another attempt owns it now", label)
        except Exception as exc:  # noqa: BLE001 - a fault in one trial is data, not the end of the worker
            self.fail(claim, trial, params, exc, label)
        finally:
            self.heartbeat.watch(None)
            shutil.rmtree(work_dir, ignore_errors=True)

    def warm_study(self, study_id: str) -> WarmStudy:
        if self.current is not None and self.current.study_id == study_id:
            return self.current
        self.current = None
        free_memory()
        spec, optuna_name, _status = studies.load_spec(self.ctx.sessions, study_id)
        optuna_study = optuna_bridge.load_study(self.ctx.optuna_storage, optuna_name, spec)
        prepared = prepare(spec, self.resolve, self.device)
        self.current = WarmStudy(study_id, spec, optuna_study, prepared)
        return self.current

    def ensure_baseline(self, state: WarmStudy) -> None:
        """The base model's score, untrained, on the same eval subset and full split: the study's reference."""
        if results.baseline_known(self.ctx.sessions, state.study_id):
            return
        subset_value, full_value = state.prepared.baseline()
        results.record_baseline(self.ctx.sessions, state.study_id, full_value, subset_value)
        log.info("study %s: baseline %.4f (eval subset %.4f)", state.study_id, full_value, subset_value)

    def trial_params(self, state: WarmStudy, claim: queue.Claim) -> tuple[optuna.trial.Trial, dict[str, Any]]:
        """A new attempt of an old trial keeps its parameters and its Optuna trial; a fresh slot asks Optuna."""
        if claim.params is not None and claim.optuna_trial_id is not None:
            return optuna.trial.Trial(state.optuna_study, claim.optuna_trial_id), claim.params
        trial = state.optuna_study.ask()
        params = optuna_bridge.sample_params(trial, state.spec)
        queue.set_params(self.ctx.sessions, claim.lease, params, trial._trial_id)
        return trial, params

    def download_resume(self, claim: queue.Claim, work_dir: Path) -> Path | None:
        if claim.resume_key is None:
            return None
        dest = work_dir / "resume"
        try:
            self.ctx.artifacts.get_dir(claim.resume_key, dest, expected_sha256=claim.resume_sha256)
        except StsweepError as exc:
            log.warning("trial %s #%d: resume checkpoint unusable (%s); starting over",
                        claim.study_id, claim.number, exc.message)
            return None
        log.info("trial %s #%d: resuming from checkpoint at %s examples", claim.study_id, claim.number,
                 claim.resume_examples)
        return dest

    # -------------------------------------------------------------- endings

    def conclude(self, claim: queue.Claim, state: WarmStudy, trial: optuna.trial.Trial, outcome: TrialOutcome,
                 hooks: LoopHooks) -> None:
        settings = self.ctx.settings
        if outcome.status == "interrupted":
            if hooks.lease_gone:
                return
            queue.release(self.ctx.sessions, claim.lease)
            log.info("trial %s #%d: given back to the queue at %d examples", claim.study_id, claim.number,
                     outcome.examples_seen)
            return
        if outcome.status == "complete" and not math.isfinite(outcome.value or math.nan):
            raise TrainingDiverged(f"the full evaluation gave {outcome.value}: training diverged")
        finish = queue.Finish(state="pruned", value=outcome.value, examples_seen=outcome.examples_seen)
        if outcome.status == "complete":
            assert outcome.best_model_dir is not None and outcome.value is not None
            info = self.ctx.artifacts.put_dir(f"{hooks.key_prefix}/final.tar", outcome.best_model_dir)
            finish = queue.Finish(state="complete", value=outcome.value, metrics=outcome.metrics,
                                  checkpoint_key=info.key, checkpoint_sha256=info.sha256, checkpoint_bytes=info.size,
                                  examples_seen=outcome.examples_seen)
        try:
            status = queue.finish(self.ctx.sessions, claim.lease, finish, settings.failure_streak_to_pause)
        except LeaseLost:
            if finish.checkpoint_key:
                self.ctx.artifacts.delete(finish.checkpoint_key)
            raise
        if outcome.status == "complete":
            state.optuna_study.tell(trial, outcome.value)
        else:
            state.optuna_study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %s #%d: %s, value %s", claim.study_id, claim.number, outcome.status, outcome.value)
        self.after_trial(claim, state, status)

    def fail(self, claim: queue.Claim, trial: optuna.trial.Trial | None, params: dict[str, Any],
             exc: BaseException, label: str) -> None:
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
        try:
            queue.finish(self.ctx.sessions, claim.lease, queue.Finish(state="failed", failure_reason=reason[:2000]),
                         self.ctx.settings.failure_streak_to_pause)
        except LeaseLost:
            return
        except StsweepError as db_exc:
            log.error("trial %s: could not record the failure (%s); the lease will expire", label, db_exc.message)
            return
        if trial is not None and self.current is not None:
            if oom:
                # Infeasible, not broken: the sampler should steer away from this region.
                trial.set_constraint(optuna_bridge.INFEASIBLE_CONSTRAINT, 1.0)
                self.current.optuna_study.tell(trial, state=TrialState.PRUNED)
            else:
                self.current.optuna_study.tell(trial, state=TrialState.FAIL)
        self.delete_resume(claim)

    def delete_resume(self, claim: queue.Claim) -> None:
        retention.drop_resume_checkpoint(self.ctx, claim.lease.trial_id)

    def after_trial(self, claim: queue.Claim, state: WarmStudy, study_status: str) -> None:
        self.delete_resume(claim)
        retention.apply(self.ctx, claim.study_id, state.spec.keep_top_k)
        if study_status == "completed":
            from workers.test_split import evaluate_winner_on_test

            evaluate_winner_on_test(self.ctx, state.study_id, state.prepared, self.scratch)
