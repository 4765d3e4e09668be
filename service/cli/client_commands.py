"""The `stsweep` commands that talk to a server over HTTP (through service.client.http): submit, ls, status, best,
pull, pause / resume / stop / extend, datasets upload / ls. `register(app)` adds them to the main Typer app.

Server URL and token: `--url` / `--token`, else `STSWEEP_URL` / `STSWEEP_TOKEN`, else the config file
(`$STSWEEP_CONFIG` or ~/.config/stsweep/config.toml, keys `url` and `token`), else http://127.0.0.1:8000
(see service.client.config).

Exit codes: 0 ok; 1 an error (the server said no, could not be reached, not found, ...); 2 a usage error (bad flags,
an invalid study file, a bad option value), found before anything is sent. Every error is one line on stderr,
`error: ...`, never a traceback. Ctrl-C exits with 130.

Everything from the server (names, reasons, file names, error messages) is printed inert: through
service.cli.inert, as rich Text or with control codes removed, never as markup or terminal escapes.

Heavy imports (the client, pydantic models, rich) happen inside the commands, so `stsweep --help` stays quick.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

from service.cli.render import (
    baseline_text,
    baseline_value,
    fetch_status,
    fmt_bytes,
    fmt_param,
    fmt_value,
    metric_name,
    one_line,
    render_study,
    test_text,
    watch,
    winner_text,
)
from service.cli.extras import PASS_THROUGH, require_extra
from service.cli.inert import clean, text
from service.client.config import ClientConfig, ClientConfigError, resolve

if TYPE_CHECKING:
    from rich.console import Console

    from service.client.http import StsweepClient

EXIT_INTERRUPTED = 130

# ---------------------------------------------------------------- options shared by every command

UrlOption = Annotated[Optional[str], typer.Option(
    "--url", metavar="URL", show_default=False,
    help="Server URL. Else STSWEEP_URL, else `url` in the config file, else http://127.0.0.1:8000.")]
TokenOption = Annotated[Optional[str], typer.Option(
    "--token", metavar="TOKEN", show_default=False,
    help="API token (`stsweep token create`). Else STSWEEP_TOKEN, else `token` in the config file "
         "($STSWEEP_CONFIG or ~/.config/stsweep/config.toml).")]
StudyIdArg = Annotated[str, typer.Argument(metavar="ID", help="Study id (st_...), as `stsweep ls` shows.",
                                           show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# ---------------------------------------------------------------- errors


def _fail(message: object, code: int = 1) -> NoReturn:
    typer.secho(f"error: {one_line(message)}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _config(url: str | None, token: str | None) -> ClientConfig:
    try:
        return resolve(url, token)
    except ClientConfigError as exc:
        _fail(exc, 2)


def _client_error_message(exc: Any, cfg: ClientConfig) -> str:
    """A StsweepClientError as one line that says what to do about it."""
    if exc.status == 0 and exc.code == "connection_error":
        cause = exc.__cause__
        if cause is None:
            detail = exc.message
        else:  # some httpx errors (timeouts) have no text: name them
            detail = one_line(cause) if str(cause).strip() else type(cause).__name__
        return (f"cannot reach the stsweep server at {cfg.url} ({detail}); is it running? "
                f"Set the address with --url, STSWEEP_URL or `url` in {cfg.config_path}")
    if exc.status == 401:
        if cfg.token is None:
            return (f"the server at {cfg.url} needs an API token: pass --token, set STSWEEP_TOKEN or put "
                    f"`token = \"...\"` in {cfg.config_path} (make one with `stsweep token create --name NAME`)")
        return (f"the server at {cfg.url} refused the API token from {cfg.token_source} ({exc.message}); "
                "check the token or make a new one with `stsweep token create --name NAME`")
    if exc.status >= 500:
        return f"the server failed ({exc.status} {exc.code}): {exc.message}"
    return exc.message or f"{exc.status} {exc.code}"


@contextmanager
def _errors(cfg: ClientConfig | None = None) -> Iterator[None]:
    """Turn everything a command can run into (API errors, network errors, local files, Ctrl-C) into one line on
    stderr and an exit code; nothing escapes as a traceback."""
    import httpx
    from pydantic import ValidationError

    from service.client.http import StsweepClientError
    from service.core.errors import StsweepError

    try:
        yield
    except PASS_THROUGH:
        raise
    except KeyboardInterrupt:
        typer.echo("", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except StsweepClientError as exc:
        _fail(_client_error_message(exc, cfg) if cfg else exc.message)
    except httpx.HTTPError as exc:
        where = f" at {cfg.url}" if cfg else ""
        _fail(f"talking to the server{where}: {type(exc).__name__}: {exc}")
    except ValidationError as exc:  # an answer this client does not understand (version mismatch)
        _fail(f"unexpected answer from the server: {exc.errors()[0].get('msg', exc)}")
    except FileExistsError as exc:
        _fail(exc, 2)
    except StsweepError as exc:  # local failures of pull: unsafe archive, storage
        _fail(exc.message if hasattr(exc, "message") else exc)
    except OSError as exc:
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(f"{name}{exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - last resort: still one line, never a traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}")


@contextmanager
def _api(url: str | None, token: str | None) -> Iterator[StsweepClient]:
    require_extra(None, "client")
    cfg = _config(url, token)
    with _errors(cfg):
        from service.client.http import StsweepClient

        with StsweepClient(cfg.url, cfg.token, limits=cfg.limits) as api:
            yield api


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


# ---------------------------------------------------------------- study files


def load_study_file(path: Path) -> dict[str, Any]:
    """A study file (YAML, or JSON for *.json; `-` reads YAML from stdin) as a dict, or exit 2 with one line."""
    from service.client.study_files import StudyFileError, parse_study_text

    name = "stdin" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        _fail(f"{name}: not UTF-8 text", 2)
    except IsADirectoryError:
        _fail(f"{name} is a folder, not a study file", 2)
    except OSError as exc:
        _fail(f"cannot read {name}: {exc.strerror or exc}", 2)
    try:
        return parse_study_text(text, name, is_json=path.suffix.lower() == ".json")
    except StudyFileError as exc:
        _fail(str(exc), 2)


def validate_study(data: dict[str, Any]) -> None:
    """Check a study locally with the API's own model; errors read exactly like the API's 422 message
    (`field: message`; further errors follow on the same line after `; `). Exits 2 when invalid."""
    from pydantic import ValidationError

    from service.core.spec import StudySpec, field_errors

    try:
        StudySpec.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc) or [{"field": "body", "message": "invalid"}]
        _fail("; ".join(f"{e['field']}: {e['message']}" for e in errors), 2)


# ---------------------------------------------------------------- formatting


# ---------------------------------------------------------------- study commands


def submit(
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False,
                                         help="Study file: YAML, or JSON when it ends in .json; `-` reads stdin.")],
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="Then follow it like `status --watch`.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only validate the file locally; send nothing.")] = False,
    idempotency_key: Annotated[Optional[str], typer.Option(
        "--idempotency-key", metavar="KEY", help="Repeating a submit with the same key returns the same study.")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Submit a study file (YAML or JSON), validated locally first.

    Errors read like the API's (`field: message`) and exit 2 before anything is sent.

    The study id is printed on stdout, e.g. ID=$(stsweep submit study.yaml)."""
    data = load_study_file(file)
    validate_study(data)
    if dry_run:
        typer.echo(clean(f"{'stdin' if str(file) == '-' else file}: valid study {data.get('name')!r}"), err=True)
        return
    with _api(url, token) as api:
        study = api.create_study(data, idempotency_key=idempotency_key)
        typer.echo(clean(study.id))
        if not watch_:
            typer.echo(clean(f"submitted {study.name!r} ({study.status}); follow it with: stsweep status {study.id} "
                             "--watch"), err=True)
            return
        code = watch(api, study.id, interval=interval, limit=50, console=_console())
    raise typer.Exit(code)


def ls(
    status: Annotated[Optional[str], typer.Option(
        help="Only studies in this status: queued, running, paused, stopped, completed or failed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many (newest first).")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List studies: id, name, status, trials finished / budget, best, baseline."""
    statuses = ("queued", "running", "paused", "stopped", "completed", "failed")
    if status is not None and status not in statuses:
        _fail(f"--status must be one of {', '.join(statuses)}", 2)
    with _api(url, token) as api:
        page = api.list_studies(limit=limit, status=status)
        if as_json:
            typer.echo(json.dumps(page.model_dump(mode="json"), indent=2))
            return
        if not page.items:
            typer.echo("no studies" + (f" with status {status}" if status else ""), err=True)
            return
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for name, justify in (("id", "left"), ("name", "left"), ("status", "left"), ("trials", "right"),
                              ("best", "right"), ("baseline", "right")):
            table.add_column(name, justify=justify, no_wrap=name == "id")  # type: ignore[arg-type]
        for s in page.items:
            best = f"{fmt_value(s.best.value)} #{s.best.trial_number}" if s.best else "-"
            table.add_row(text(s.id), text(s.name), text(s.status),
                          text(f"{s.progress.trials_finished}/{s.progress.n_trials}"), text(best),
                          text(baseline_text(s)))
        console = _console()
        console.print(table)
        if page.total > len(page.items):
            console.print(f"({len(page.items)} of {page.total} studies; see more with --limit)", style="dim")


def status(
    study_id: StudyIdArg,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help=(
        "Refresh every --interval seconds until the study is completed, stopped, failed or paused "
        "(exit 1 if it failed); Ctrl-C leaves."))] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes with --watch.")] = 2.0,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Show the last this many trials.")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show a study's progress and trials (--watch to follow).

    Progress bars: trials finished / budget, and each running trial's examples seen / planned.

    Then a table of trials: number, state, value, attempts, params, failure reason."""
    if as_json and watch_:
        _fail("--json and --watch do not go together", 2)
    with _api(url, token) as api:
        if watch_:
            code = watch(api, study_id, interval=interval, limit=limit, console=_console())
        else:
            study, trials, total = fetch_status(api, study_id, limit)
            if as_json:
                typer.echo(json.dumps({"study": study.model_dump(mode="json", exclude={"spec"}),
                                       "trials": [t.model_dump(mode="json") for t in trials],
                                       "total_trials": total}, indent=2))
            else:
                _console().print(render_study(study, trials, total))
            code = 0
    raise typer.Exit(code)


def best(
    study_id: StudyIdArg,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The best trial: number, value, params, baseline and test score.

    The baseline is the untrained base model on the same eval split.

    Exits 1 while no trial has finished."""
    with _api(url, token) as api:
        study = api.get_study(study_id)
        if study.best is None:
            p = study.progress
            _fail(f"study {study.id} has no finished trial yet ({study.status}, {p.trials_finished}/{p.n_trials} "
                  "trials finished)")
        baseline = baseline_value(study)
        if as_json:
            typer.echo(json.dumps({
                "study_id": study.id, "status": study.status, "metric": metric_name(study),
                "direction": study.objective.get("direction"), "trial_number": study.best.trial_number,
                "value": study.best.value, "params": study.best.params, "baseline": baseline,
                "winner": study.winner.model_dump() if study.winner else None,
                "test": study.test.model_dump() if study.test else None}, indent=2))
            return
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("study", text(f"{study.id}  {study.name} ({study.status})"))
        grid.add_row("best trial", text(study.best.trial_number))
        grid.add_row(text(metric_name(study)), text(fmt_value(study.best.value)))
        delta = f" ({study.best.value - baseline:+.4f} for the tuned model)" if baseline is not None else ""
        grid.add_row("baseline", text(fmt_value(baseline) + delta if baseline is not None else baseline_text(study)))
        confirmed = winner_text(study)
        if confirmed is not None:
            grid.add_row("winner", text(confirmed))
        if study.test is not None:
            grid.add_row("test", text(test_text(study)))
        params = study.winner.params if study.winner is not None else study.best.params
        for i, (name, value) in enumerate((params or {}).items()):
            grid.add_row("params" if i == 0 else "", text(f"{name} = {fmt_param(value)}"))
        _console().print(grid)


def pull(
    study_id: StudyIdArg,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", show_default=False,
                                      help="Folder to create (it must not exist, or be empty).")],
    trial: Annotated[Optional[int], typer.Option(min=0, help="A finished trial's checkpoint instead of the best.")
                     ] = None,
    max_bytes: Annotated[Optional[str], typer.Option(
        "--max-bytes", metavar="SIZE", show_default=False,
        help="Refuse a checkpoint larger than this (e.g. 2GiB). Else STSWEEP_MAX_DOWNLOAD_BYTES, else "
             "`max_download_bytes` in the config file, else 4GiB.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Download the best model into DIR; load it with SentenceTransformer(DIR).

    The download is checksum-verified and resumes if interrupted; DIR gets a README.md model card. The server
    is not trusted: the download is capped (--max-bytes) and timed (STSWEEP_READ_TIMEOUT,
    STSWEEP_MIN_DOWNLOAD_RATE), and the archive is checked before anything is extracted."""
    from service.client.limits import LimitError, parse_size

    cap = None
    if max_bytes is not None:
        try:
            cap = parse_size(max_bytes, "--max-bytes")
        except LimitError as exc:
            _fail(exc, 2)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        _fail(f"{out} exists and is not an empty folder", 2)
    with _api(url, token) as api:
        folder = api.pull(study_id, out, trial_number=trial, max_bytes=cap)
        typer.echo(clean(folder))
        typer.echo(clean(f"pulled {'trial ' + str(trial) if trial is not None else 'the best trial'} of {study_id}; "
                         f"load it with: SentenceTransformer({str(folder)!r})"), err=True)


def _change(action: str, study_id: str, url: str | None, token: str | None) -> None:
    with _api(url, token) as api:
        study = getattr(api, f"{action}_study")(study_id)
        typer.echo(clean(f"{study.id}: {study.status}"))


def pause(study_id: StudyIdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Pause a study: no new trials start; running ones finish."""
    _change("pause", study_id, url, token)


def resume(study_id: StudyIdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Resume a paused or stopped study."""
    _change("resume", study_id, url, token)


def stop(study_id: StudyIdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Stop a study: running trials are interrupted and queued again.

    They keep their checkpoint, so a later resume loses nothing."""
    _change("stop", study_id, url, token)


def extend(
    study_id: StudyIdArg,
    n_trials: Annotated[int, typer.Argument(min=1, max=100_000, metavar="N", show_default=False,
                                            help="How many search trials to add.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add N search trials to a study (queued, running, paused, stopped or completed).

    A stopped or completed study runs again and completes again; a paused one stays paused. The Optuna history
    is kept. Running it twice adds 2 x N."""
    with _api(url, token) as api:
        study = api.extend_study(study_id, n_trials)
        typer.echo(clean(f"{study.id}: {study.status}, budget {study.progress.n_trials} trials "
                         f"({study.progress.trials_finished} finished, +{n_trials})"))


# ---------------------------------------------------------------- data sets


def _parse_columns(value: str | None, header: bool) -> dict[str, str | int] | None:
    """--columns as JSON: role -> column name, or (with --no-header) role -> 0-based position."""
    if value is None:
        if not header:
            _fail("--no-header needs --columns giving each role's 0-based position, e.g. "
                  "'{\"sentence1\": 5, \"sentence2\": 6, \"score\": 4}'", 2)
        return None
    try:
        columns = json.loads(value)
    except json.JSONDecodeError as exc:
        _fail(f"--columns must be a JSON object like '{{\"sentence1\": \"s1\"}}': {exc.msg}", 2)
    if not isinstance(columns, dict):
        _fail("--columns must be a JSON object of role -> column name, e.g. '{\"sentence1\": \"s1\"}'", 2)
    for role, column in columns.items():
        position = isinstance(column, int) and not isinstance(column, bool)
        if position and header:
            _fail(f"--columns: {role}: {column} is a position; positions need --no-header (a file with a header "
                  f"names its columns)", 2)
        if not header and not position:
            _fail(f"--columns: {role}: with --no-header give 0-based positions (integers), not {column!r}", 2)
        if header and not isinstance(column, str):
            _fail("--columns must be a JSON object of role -> column name, e.g. '{\"sentence1\": \"s1\"}'", 2)
        if position and column < 0:
            _fail(f"--columns: {role}: a position counts from 0, not {column}", 2)
    return columns


def _parse_score_range(value: str | None) -> tuple[float, float] | None:
    from service.core.errors import InvalidInput
    from service.core.score_range import parse_score_range

    if value is None:
        return None
    try:
        return parse_score_range(value, field="--score-range")
    except InvalidInput as exc:
        _fail(f"--score-range: {exc.message} (e.g. 0,5)", 2)


def datasets_upload(
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False,
                                         help="A CSV, TSV, JSONL or Parquet file.")],
    task: Annotated[str, typer.Option(metavar="TASK", show_default=False,
                                      help="scored_pairs, labelled_pairs, pairs or triplets.")],
    columns: Annotated[Optional[str], typer.Option(
        metavar="JSON", help="Task role -> column name, as JSON: '{\"sentence1\": \"s1\", \"score\": \"label\"}'.")
    ] = None,
    score_range: Annotated[Optional[str], typer.Option(
        metavar="LOW,HIGH", help="Range of the score column (scored_pairs), e.g. 0,5. Default 0,1.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="csv, tsv, jsonl or parquet (default: from "
                                                                "the file name).")] = None,
    header: Annotated[bool, typer.Option(
        "--header/--no-header", help="--no-header: a CSV / TSV without a header row; --columns then gives "
                                     "0-based positions, e.g. the STS benchmark's "
                                     "'{\"sentence1\": 5, \"sentence2\": 6, \"score\": 4}'.")] = True,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Upload a data set file (checked for the task by the server).

    Prints its id (ds_...) on stdout; the same bytes always give the same id.

    Use it in a study as `data: {train: {dataset_id: ds_...}}` (a file uploaded with --no-header:
    `{dataset_id: ds_..., header: false}`, with the same positions in `data.columns`)."""
    from service.core.tasks import TASKS

    if task not in TASKS:
        _fail(f"--task must be one of {', '.join(TASKS)}, not {task!r}", 2)
    if fmt is not None and fmt not in ("csv", "tsv", "jsonl", "parquet"):
        _fail(f"--format must be csv, tsv, jsonl or parquet, not {fmt!r}", 2)
    cols = _parse_columns(columns, header)
    rng = _parse_score_range(score_range)
    if not file.is_file():
        _fail(f"{file}: {'is a folder' if file.is_dir() else 'no such file'}", 2)
    with _api(url, token) as api:
        ds = api.upload_dataset(file, task, columns=cols, score_range=rng, format=fmt, header=header)
        typer.echo(clean(ds.id))
        dups = f", {ds.duplicate_rows} duplicate" if ds.duplicate_rows else ""
        typer.echo(clean(f"uploaded {ds.filename}: {ds.format}, {ds.row_count:,} rows{dups}, "
                         f"{fmt_bytes(ds.size_bytes)}, columns {', '.join(c.name for c in ds.columns)}"), err=True)


def datasets_ls(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many (newest first).")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List uploaded data sets: id, file, format, rows, size, columns."""
    with _api(url, token) as api:
        page = api.list_datasets(limit=limit)
        if as_json:
            typer.echo(json.dumps(page.model_dump(mode="json"), indent=2))
            return
        if not page.items:
            typer.echo("no data sets", err=True)
            return
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for name, justify in (("id", "left"), ("file", "left"), ("format", "left"), ("rows", "right"),
                              ("size", "right"), ("columns", "left"), ("created", "left")):
            table.add_column(name, justify=justify, no_wrap=name == "id")  # type: ignore[arg-type]
        for d in page.items:
            table.add_row(text(d.id), text(d.filename), text(d.format), text(f"{d.row_count:,}"),
                          text(fmt_bytes(d.size_bytes)), text(", ".join(c.name for c in d.columns)),
                          text(d.created_at.strftime("%Y-%m-%d %H:%M")))
        console = _console()
        console.print(table)
        if page.total > len(page.items):
            console.print(f"({len(page.items)} of {page.total} data sets; see more with --limit)", style="dim")


# ---------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add the client commands to the main `stsweep` app."""
    for name, fn in (("submit", submit), ("ls", ls), ("status", status), ("best", best), ("pull", pull),
                     ("pause", pause), ("resume", resume), ("stop", stop), ("extend", extend)):
        app.command(name)(fn)
    datasets_app = typer.Typer(help="Uploaded data sets: upload, ls.", no_args_is_help=True)
    datasets_app.command("upload")(datasets_upload)
    datasets_app.command("ls")(datasets_ls)
    app.add_typer(datasets_app, name="datasets")
