"""The `stsweep` command line (Typer). Settings are read once here and passed down.

Heavy imports (FastAPI, uvicorn, torch) happen inside the commands that need them, so `stsweep worker`
never imports FastAPI and `stsweep serve` never imports torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from service.cli.common import fail, load_settings
from service.cli.extras import require_extra
from service.cli.inert import clean
from service.cli.slurm_commands import slurm_app
from service.cli.worker_command import worker
from service.core.durations import parse_duration

if TYPE_CHECKING:
    from service.store.db import SessionFactory

app = typer.Typer(
    name="stsweep",
    help="Hyperparameter sweeps for fine-tuning Sentence Transformers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(slurm_app, name="slurm")
app.command()(worker)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the database (ours, and create Optuna's schema)."""
    require_extra("db upgrade", "server")
    from service.local.bootstrap import prepare_database

    url = prepare_database(load_settings())
    typer.echo(f"database is up to date ({url.split('@')[-1]})")


@contextmanager
def _token_sessions(command: str) -> Iterator[SessionFactory]:
    """The session factory over the configured database (migrated to head), as `stsweep token create` has
    always done; a domain error (no such token, database down) becomes one line and exit 1."""
    require_extra(command, "server")
    from service.context import Context
    from service.core.errors import StsweepError
    from service.local.bootstrap import prepare_database

    settings = load_settings()
    try:
        ctx = Context(settings, prepare_database(settings))
    except StsweepError as exc:
        raise fail(exc.message, 1) from exc
    try:
        yield ctx.sessions
    except StsweepError as exc:
        raise fail(exc.message, 1) from exc
    finally:
        ctx.close()


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name", "-n", help="Who or what the token is for.")],
    project: Annotated[str, typer.Option(
        "--project", "-p", metavar="PROJECT", help="The project the token belongs to (it must exist).")
    ] = "default",
    role: Annotated[Optional[str], typer.Option(
        "--role", "-r", metavar="ROLE", show_default=False,
        help="admin, member or viewer. Default: admin for the deployment's first token, member after that.")
    ] = None,
    expires_in: Annotated[Optional[str], typer.Option(
        "--expires-in", metavar="DURATION", help="Expire after this long: 30d, 12h, 90m, 3600s (default: never).")
    ] = None,
) -> None:
    """Create an API token of a project with a role. It is printed once; only its hash is stored.

    It works on the database directly (STSWEEP_DATABASE_URL): that is how the first admin token is made.

    An admin then makes the others, here or over the API (POST /v1/tokens)."""
    from service.core.access import PROJECT_NAME, ROLES, check_role

    if role is not None and role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}, not {role!r}", 2)
    if not PROJECT_NAME.fullmatch(project):
        raise fail(f"--project: {project!r} is not a project name (a-z, 0-9 and '-', at most 63)", 2)
    seconds = None
    if expires_in is not None:
        try:
            seconds = parse_duration(expires_in)
        except ValueError as exc:
            raise fail(f"--expires-in: {exc}", 2) from exc
    with _token_sessions("token create") as sessions:
        from service.store.tokens import create_token, first_token_role

        chosen = check_role(role) if role is not None else first_token_role(sessions)
        secret = create_token(sessions, name, expires_in_seconds=seconds, project=project, role=chosen)
    typer.echo(secret)
    typer.echo(clean(f"token {name!r}: {chosen} of project {project} (shown once)"), err=True)


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


@token_app.command("ls")
def token_ls(
    project: Annotated[Optional[str], typer.Option("--project", "-p", metavar="PROJECT", show_default=False,
                                                   help="Only this project's tokens.")] = None,
) -> None:
    """List API tokens: id, name, project, role, created, last used, expires, revoked (never the secrets)."""
    with _token_sessions("token ls") as sessions:
        from service.store.tokens import list_tokens

        items = list_tokens(sessions, project)
    if not items:
        typer.echo("no tokens" + (clean(f" in project {project}") if project else ""), err=True)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from service.cli.inert import text

    now = datetime.now(timezone.utc)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in ("id", "name", "project", "role", "created", "last used", "expires", "revoked"):
        table.add_column(column, justify="right" if column == "id" else "left", no_wrap=column != "name")
    for t in items:
        expires = _when(t.expires_at)
        if t.expires_at is not None and t.expires_at <= now:
            expires += " (expired)"
        table.add_row(text(t.id), text(t.name), text(t.project), text(t.role), _when(t.created_at),
                      _when(t.last_used_at), expires, _when(t.revoked_at))
    Console(highlight=False).print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(metavar="ID", help="The id shown by `stsweep token ls`.")]
                 ) -> None:
    """Revoke an API token: its next request gets a 401. Revoking one twice is fine."""
    with _token_sessions("token revoke") as sessions:
        from service.store.tokens import revoke_token

        revoke_token(sessions, token_id)
    typer.echo(clean(f"token {token_id}: revoked"))


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (default STSWEEP_HOST, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default STSWEEP_PORT, 8000).")] = None,
) -> None:
    """Run the API and dashboard (and the lease reaper)."""
    require_extra("serve", "server")
    from service.api.serve import serve_api

    settings = load_settings()
    serve_api(settings, host or settings.host, port or settings.port)


@app.command()
def up(
    host: Annotated[Optional[str], typer.Option(help="Interface for the API (default STSWEEP_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port for the API (default STSWEEP_PORT).")] = None,
    gpus: Annotated[str, typer.Option(help="Workers: 'all' GPUs (one CPU worker without any), a list, 'none'.")] = "all",
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Start only the API.")] = False,
) -> None:
    """Everything on one machine: database (embedded unless STSWEEP_DATABASE_URL is set), migrations, the API
    and dashboard, and workers. Prints the dashboard URL and an API token. Ctrl-C stops it all cleanly."""
    require_extra("up", "server", "worker")
    import logging

    from service.local.stack import running_stack, wait_for_signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    with running_stack(settings, host or settings.host, port or settings.port, workers=not no_worker,
                       worker_args=("--gpus", gpus)) as stack:
        typer.secho(f"stsweep is up: dashboard {stack.url}/", fg=typer.colors.GREEN, bold=True)
        typer.echo(f"API token (shown once): {stack.token}")
        typer.echo(f"  export STSWEEP_URL={stack.url} STSWEEP_TOKEN={stack.token}")
        typer.echo("Ctrl-C stops everything; running trials go back to the queue.")
        wait_for_signal(stack)
    typer.echo("stopped")


@app.command()
def demo(
    trials: Annotated[int, typer.Option(min=1, help="Trials in the demo sweep.")] = 4,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to put the best model.")] = Path("stsweep-demo-model"),
    train: Annotated[Optional[Path], typer.Option(help="Your own train pairs (CSV/TSV/JSONL/Parquet).")] = None,
    eval_: Annotated[Optional[Path], typer.Option("--eval", help="Your own eval pairs (with --train).")] = None,
    test: Annotated[Optional[Path], typer.Option(help="Optional test pairs (with --train).")] = None,
    hf: Annotated[Optional[str], typer.Option(help="A Hugging Face dataset, e.g. sentence-transformers/stsb.")] = None,
    score_range: Annotated[str, typer.Option(help="LOW,HIGH range of the scores in --train/--eval.")] = "0,1",
    max_train_samples: Annotated[Optional[int], typer.Option(min=1, help="Random subset of train.")] = None,
    every_n_examples: Annotated[int, typer.Option(min=1, help="Evaluate every N training examples.")] = 128,
    port: Annotated[Optional[int], typer.Option(help="Port for the API.")] = None,
) -> None:
    """The main job: a small real sweep of all-MiniLM-L6-v2 on sentence pairs, then the best model pulled and
    its score shown next to the untrained baseline's. Works offline with the bundled sample data."""
    require_extra("demo", "server", "worker", "client")
    from rich.console import Console

    from service.local.demo import run_demo

    if (train is None) != (eval_ is None):
        raise fail("--train and --eval go together", 2)
    if hf is not None and train is not None:
        raise fail("give --hf or --train/--eval, not both", 2)
    from service.core.errors import InvalidInput
    from service.core.score_range import parse_score_range

    try:
        low, high = parse_score_range(score_range, field="--score-range")
    except InvalidInput as exc:
        raise fail(f"--score-range: {exc.message}", 2) from exc
    settings = load_settings()
    code = run_demo(settings, host=settings.host, port=port or settings.port, trials=trials, out=out, train=train,
                    eval_=eval_, test=test, hf=hf, score_range=(low, high), max_train_samples=max_train_samples,
                    every_n_examples=every_n_examples, console=Console())
    raise typer.Exit(code)


from service.cli.client_commands import register  # noqa: E402  submit, ls, status, best, pull, pause/resume/stop, datasets
register(app)
from service.cli.team_commands import register as register_teams  # noqa: E402  project create, ls, set
register_teams(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
