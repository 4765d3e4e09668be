"""The `stsweep` command line (Typer). Settings are read once here and passed down.

Heavy imports (FastAPI, uvicorn, torch) happen inside the commands that need them, so `stsweep worker`
never imports FastAPI and `stsweep serve` never imports torch.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from service.settings import Settings

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


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError on a bad STSWEEP_* variable
        raise fail(f"bad configuration: {exc}", 2) from exc


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the database (ours, and create Optuna's schema)."""
    from service.bootstrap import prepare_database

    url = prepare_database(load_settings())
    typer.echo(f"database is up to date ({url.split('@')[-1]})")


@token_app.command("create")
def token_create(name: Annotated[str, typer.Option("--name", "-n", help="Who or what the token is for.")]) -> None:
    """Create an API token. It is printed once; only its hash is stored."""
    from service.auth import create_token
    from service.bootstrap import prepare_database
    from service.context import Context

    settings = load_settings()
    ctx = Context(settings, prepare_database(settings))
    try:
        typer.echo(create_token(ctx.sessions, name))
    finally:
        ctx.close()


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (default STSWEEP_HOST, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default STSWEEP_PORT, 8000).")] = None,
) -> None:
    """Run the API and dashboard (and the lease reaper)."""
    from service.bootstrap import serve_api

    settings = load_settings()
    serve_api(settings, host or settings.host, port or settings.port)


@app.command()
def worker(
    gpus: Annotated[str, typer.Option(help="'all', a list like 0,1, or 'none' for the CPU.")] = "all",
    trials_per_gpu: Annotated[int, typer.Option(min=1, help="Trials side by side on one GPU.")] = 1,
    device: Annotated[Optional[str], typer.Option(help="Run one worker on this device (cpu, cuda:0).")] = None,
    max_trials: Annotated[Optional[int], typer.Option(min=1, help="Exit after this many trials.")] = None,
    exit_when_idle: Annotated[Optional[float], typer.Option(help="Exit after this many idle seconds.")] = None,
) -> None:
    """Pull trials from the queue and train them, until SIGTERM / Ctrl-C."""
    from workers.main import run_worker

    try:
        code = run_worker(load_settings(), gpus=gpus, trials_per_gpu=trials_per_gpu, device=device,
                          max_trials=max_trials, exit_when_idle=exit_when_idle)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
