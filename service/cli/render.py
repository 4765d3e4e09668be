"""How the CLI shows a study: value formatting, the status view (progress bars and a trials table), and
`watch`, which follows a study until it settles (used by `stsweep status --watch`, `submit --watch`, `demo`).

Every text that comes from the server reaches the terminal through service.cli.inert: rich ``Text`` objects (never
markup strings) with control codes removed."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from service.cli.inert import clean, text

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from service.client.http import StsweepClient
    from service.core.schemas import Progress, StudyPublic, TrialPublic

TERMINAL_STATUSES = ("completed", "stopped", "failed", "paused")
TEST_SCORE_PATIENCE_SECONDS = 120.0


def one_line(message: object) -> str:
    """``message`` on one line, control codes removed (service.cli.inert.clean)."""
    return " ".join(clean(message).split()) or "unknown error"


def fmt_value(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_param(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3g}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_SHORT = {"learning_rate": "lr", "per_device_train_batch_size": "batch", "num_train_epochs": "epochs",
          "warmup_ratio": "warmup", "weight_decay": "wd", "max_grad_norm": "clip", "max_seq_length": "seq_len",
          "gradient_accumulation_steps": "accum", "lr_scheduler_type": "sched"}


def params_summary(params: dict[str, Any] | None) -> str:
    if not params:
        return "-"
    return " ".join(f"{_SHORT.get(k, k)}={fmt_param(v)}" for k, v in params.items())


def truncate(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    line = one_line(text)
    return line if len(line) <= width else line[: width - 1] + "…"


def metric_name(study: StudyPublic) -> str:
    return str(study.objective.get("metric") or "value")


def baseline_value(study: StudyPublic) -> float | None:
    """The untrained base model on the full eval split (what trial values compare to), else on the subset."""
    if study.baseline is None:
        return None
    return study.baseline.value if study.baseline.value is not None else study.baseline.subset_value


def baseline_text(study: StudyPublic) -> str:
    """The baseline, or "pending" while a started study waits for it (a worker computes it after a trial,
    never before the first one), or "failed" when it could not be computed."""
    value = baseline_value(study)
    if value is None and study.baseline is not None and study.baseline.status != "ready":
        return study.baseline.status
    return fmt_value(value)


def eta_text(progress: Progress) -> str:
    """The study's ETA, with "(timeout)" when its timeout, not its remaining trials, bounds it."""
    text = fmt_duration(progress.eta_seconds)
    return f"{text} (timeout)" if progress.eta_bound == "timeout" else text


def winner_text(study: StudyPublic) -> str | None:
    """A confirmed winner as "mean ± std over n runs (trials a, b, c)"; None for a single best trial (the `best`
    line says it all)."""
    w = study.winner
    if w is None or w.runs < 2:
        return None
    spread = f" ± {fmt_value(w.std)}" if w.std is not None else ""
    return f"{fmt_value(w.mean)}{spread} over {w.runs} runs (trials {', '.join(str(n) for n in w.trial_numbers)})"


def test_text(study: StudyPublic) -> str:
    """The test-split score, the trial it belongs to, and whether the new winner is being scored."""
    assert study.test is not None
    t = study.test
    of = f" (trial {t.trial_number})" if t.trial_number is not None else ""
    again = ", being scored again for the new winner" if t.rescoring else ""
    return f"{t.metric} {fmt_value(t.value)}{of}{again}"


def status_text(study: StudyPublic) -> str:
    return f"{study.status} ({truncate(study.status_reason, 100)})" if study.status_reason else study.status


def render_study(study: StudyPublic, trials: list[TrialPublic], total_trials: int) -> RenderableType:
    """What `status` shows: the study line, progress bars (trials; each running trial's examples) and a table."""
    from rich.console import Group
    from rich import box
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("study", text(f"{study.id}  {study.name}"))
    head.add_row("status", text(status_text(study)))
    objective = f"{metric_name(study)} ({study.objective.get('direction', 'maximize')})"
    head.add_row("objective", text(objective))
    best = (f"{fmt_value(study.best.value)} (trial {study.best.trial_number})" if study.best else "-")
    head.add_row("best", text(best))
    confirmed = winner_text(study)
    if confirmed is not None:
        head.add_row("winner", text(confirmed))
    head.add_row("baseline", text(baseline_text(study)))
    if study.test is not None:
        head.add_row("test", text(test_text(study)))

    p = study.progress
    bars = Table.grid(padding=(0, 2))
    bars.add_column(no_wrap=True)
    bars.add_column(no_wrap=True)
    bars.add_column(no_wrap=True)
    counts = study.counts
    detail = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("running", "complete", "pruned", "failed")
                       if counts.get(k))
    eta = f"  ETA {eta_text(p)}" if p.eta_seconds else ""
    bars.add_row("trials", ProgressBar(total=max(p.n_trials, 1), completed=p.trials_finished, width=30),
                 text(f"{p.trials_finished}/{p.n_trials} finished" + (f" ({detail})" if detail else "") + eta))
    for r in p.running:
        label = f"trial {r.number}"
        eta_r = f"  ETA {fmt_duration(r.eta_seconds)}" if r.eta_seconds else ""
        if r.planned_examples:
            bars.add_row(label, ProgressBar(total=r.planned_examples, completed=min(r.examples_seen,
                                                                                      r.planned_examples), width=30),
                         text(f"{r.examples_seen:,}/{r.planned_examples:,} examples{eta_r}"))
        else:
            bars.add_row(label, "", text(f"{r.examples_seen:,} examples{eta_r}"))

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in (("#", "right"), ("state", "left"), (metric_name(study), "right"), ("attempts", "right"),
                          ("params", "left"), ("failure", "left")):
        table.add_column(text(name), justify=justify)  # type: ignore[arg-type]
    for t in trials:
        state = t.state
        if t.state == "running" and t.planned_examples:
            state = f"running {100 * t.examples_seen / t.planned_examples:.0f}%"
        if t.kind == "confirm":
            state = f"{state} (confirms #{t.confirm_of})"
        table.add_row(text(t.number), text(state), text(fmt_value(t.value)), text(t.attempts),
                      text(params_summary(t.params)), text(truncate(t.failure_reason, 60)))
    parts: list[Any] = [head, Text(""), bars, Text("")]
    if trials:
        parts.append(table)
        if total_trials > len(trials):
            parts.append(Text(f"(the last {len(trials)} of {total_trials} trials; see more with --limit)",
                              style="dim"))
    else:
        parts.append(Text("no trials yet", style="dim"))
    return Group(*parts)


def settled(study: StudyPublic, waited: float) -> bool:
    """The study will change no more: it ended, and if it completed with a test split, the winner's test score
    (computed just after completion) is in, or we waited `TEST_SCORE_PATIENCE_SECONDS` for it."""
    if study.status not in TERMINAL_STATUSES:
        return False
    data = (study.spec or {}).get("data", {})
    has_test = bool(data.get("test") or (data.get("split") or {}).get("test_fraction"))
    waiting = study.test is None or study.test.rescoring
    return not (study.status == "completed" and has_test and waiting and waited < TEST_SCORE_PATIENCE_SECONDS)


def fetch_status(api: StsweepClient, study_id: str, limit: int) -> tuple[StudyPublic, list[TrialPublic], int]:
    study = api.get_study(study_id)
    page = api.list_trials(study_id, limit=min(limit, 500), sort="number", order="desc")
    return study, list(reversed(page.items)), page.total


def progress_line(study: StudyPublic) -> str:
    p = study.progress
    best = f", best {fmt_value(study.best.value)} (trial {study.best.trial_number})" if study.best else ""
    running = "".join(f", trial {r.number} {r.examples_seen:,}/{r.planned_examples or '?'}" for r in p.running)
    return f"{study.id} {status_text(study)}: {p.trials_finished}/{p.n_trials} trials finished{best}{running}"


def watch(api: StsweepClient, study_id: str, *, interval: float, limit: int, console: Console) -> int:
    """Refresh the status until the study is completed, stopped, failed or paused. On a terminal a live view;
    otherwise (a log, a pipe) one line per change and the full status at the end. Returns the exit code:
    1 when the study failed, else 0. Brief server hiccups (unreachable, 5xx) are retried for about 30 s."""
    from service.client.http import StsweepClientError

    misses = 0

    def fetch() -> tuple[StudyPublic, list[TrialPublic], int] | None:
        nonlocal misses
        try:
            got = fetch_status(api, study_id, limit)
        except StsweepClientError as exc:
            if (exc.status == 0 or exc.status >= 500) and misses * interval < 30:
                misses += 1
                return None
            raise
        misses = 0
        return got

    state = fetch_status(api, study_id, limit)
    ended = time.monotonic()

    def done() -> bool:
        nonlocal ended
        if state[0].status not in TERMINAL_STATUSES:
            ended = time.monotonic()
        return settled(state[0], time.monotonic() - ended)

    if console.is_terminal:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        with Live(render_study(*state), console=console, auto_refresh=False) as live:
            while not done():
                time.sleep(interval)
                got = fetch()
                if got is None:
                    live.update(Group(render_study(*state), Text("server unreachable, retrying...",
                                                                 style="yellow")), refresh=True)
                    continue
                state = got
                live.update(render_study(*state), refresh=True)
    else:
        last = ""
        while True:
            line = progress_line(state[0])
            if line != last:
                console.print(text(line), soft_wrap=True)
                last = line
            if done():
                break
            time.sleep(interval)
            state = fetch() or state
        console.print(render_study(*state))
    return 1 if state[0].status == "failed" else 0
