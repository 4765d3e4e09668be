"""Which install extra each command needs, checked before anything heavy is imported: a command whose extra is
missing exits 2 with one line naming the extra to install (never an ImportError traceback)."""

from __future__ import annotations

import importlib.util

import typer

# The modules whose absence means the extra is not installed (import names, not distribution names).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "client": ("httpx",),
    "server": ("fastapi", "uvicorn", "multipart", "sqlalchemy", "psycopg2", "alembic", "optuna", "pyarrow"),
    "worker": ("torch", "sentence_transformers", "transformers", "datasets", "sqlalchemy", "psycopg2", "optuna"),
}


def missing_modules(extra: str) -> list[str]:
    return [m for m in EXTRA_MODULES[extra] if importlib.util.find_spec(m) is None]


def require_extra(command: str | None, *extras: str) -> None:
    """Exit 2 unless every module of `extras` can be imported."""
    for extra in extras:
        missing = missing_modules(extra)
        if missing:
            what = f"`stsweep {command}`" if command else "this command"
            typer.secho(f"error: {what} needs the {extra} extra: pip install 'stsweep[{extra}]' "
                        f"(missing: {', '.join(missing)})", err=True, fg=typer.colors.RED)
            raise typer.Exit(2)


def _click_control_flow() -> tuple[type[BaseException], ...]:
    """Typer's own exits and usage errors. Recent Typer vendors Click (its errors derive from TyperException);
    older Typer uses the `click` package, installed with it."""
    found: list[type[BaseException]] = [typer.Exit, typer.Abort]
    if hasattr(typer, "TyperException"):
        found.append(typer.TyperException)
    try:
        import click
    except ImportError:
        pass
    else:
        found += [click.exceptions.Exit, click.ClickException, click.Abort]
    return tuple(found)


# What a command's error handler lets through untouched: exits and usage errors already say what they mean.
PASS_THROUGH = _click_control_flow()
