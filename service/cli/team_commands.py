"""`stsweep project create | ls | set`: projects over the API (service/client/teams.py), with the client's URL
and token like every client command (client_commands.py). Creating and changing projects needs an admin token;
`ls` shows an admin every project and anyone else its own. `register(app)` adds them to the main app.

Quotas: a count (`--max-active-studies`, `--max-trials`) or a size (`--max-stored-bytes`: 500M, 50GiB, or
bytes); `none` (with `set`) makes one unlimited again. Exit codes as for the other client commands: 1 when the
server says no (403 for a non-admin, 409 for a name taken), 2 for a bad option before anything is sent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from service.cli.client_commands import JsonOption, TokenOption, UrlOption, _api, _console, _fail
from service.cli.inert import clean, text
from service.cli.render import fmt_bytes

if TYPE_CHECKING:
    from service.core.schemas import ProjectPublic

NameArg = Annotated[str, typer.Argument(metavar="NAME", show_default=False,
                                        help="The project: 1-63 of a-z, 0-9 and '-', starting with a letter or digit.")]
ShareOption = Annotated[Optional[float], typer.Option(
    "--share", metavar="S", show_default=False,
    help="Fair-share weight: with studies of several projects queued, workers claim in proportion (default 1).")]
_QUOTAS = {"--max-active-studies": "queued, running and paused studies",
           "--max-trials": "queued plus running trials",
           "--max-stored-bytes": "data sets plus final checkpoints, e.g. 50GiB"}


def _quota_option(option: str, values: str) -> Any:
    return Annotated[Optional[str], typer.Option(option, metavar=values, show_default=False,
                                                 help=f"Quota: {_QUOTAS[option]}.")]


StudiesQuota, TrialsQuota, BytesQuota = (_quota_option("--max-active-studies", "N"), _quota_option("--max-trials", "N"),
                                         _quota_option("--max-stored-bytes", "SIZE"))
StudiesChange, TrialsChange, BytesChange = (_quota_option("--max-active-studies", "N|none"),
                                            _quota_option("--max-trials", "N|none"),
                                            _quota_option("--max-stored-bytes", "SIZE|none"))


def _quota(value: str | None, option: str, *, unset: bool) -> Any:
    """A quota option's value: an int, None for `none` (unlimited; only when `unset` allows it)."""
    from service.client.limits import LimitError, parse_size

    if value is None:
        return None
    if value.strip().lower() == "none":
        if not unset:
            _fail(f"{option}: leave it out for no quota", 2)
        return None
    if option == "--max-stored-bytes":
        try:
            return parse_size(value, option, allow_zero=True)
        except LimitError as exc:
            _fail(exc, 2)
    if not (value.strip().isascii() and value.strip().isdigit()):
        _fail(f"{option}: expected a whole number{' or none' if unset else ''}, not {value!r}", 2)
    return int(value)


def _share(value: float | None) -> float | None:
    if value is not None and not value > 0:
        _fail(f"--share must be more than 0, not {value:g}", 2)
    return value


def _of(used: int, quota: int | None, size: bool = False) -> str:
    show = fmt_bytes if size else str
    return f"{show(used)}/{show(quota) if quota is not None else 'unlimited'}"


def _describe(p: ProjectPublic) -> str:
    u = p.usage
    return (f"{p.name}: share {p.share:g}, active studies {_of(u.active_studies, p.max_active_studies)}, "
            f"trials {_of(u.trials, p.max_trials)}, stored {_of(u.stored_bytes, p.max_stored_bytes, True)}")


def project_create(
    name: NameArg,
    share: ShareOption = None,
    max_active_studies: StudiesQuota = None,
    max_trials: TrialsQuota = None,
    max_stored_bytes: BytesQuota = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a project (admin token). Quotas left out are unlimited.

    Then give it tokens: `stsweep token create --name N --project NAME --role member`."""
    quotas = {"max_active_studies": _quota(max_active_studies, "--max-active-studies", unset=False),
              "max_trials": _quota(max_trials, "--max-trials", unset=False),
              "max_stored_bytes": _quota(max_stored_bytes, "--max-stored-bytes", unset=False)}
    with _api(url, token) as api:
        made = api.create_project(name, share=_share(share), **quotas)
        typer.echo(clean(f"created {_describe(made)}"))


def project_ls(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """List projects with their share, quotas and usage (an admin sees all, anyone else its own)."""
    with _api(url, token) as api:
        items = api.list_projects()
        if as_json:
            typer.echo(json.dumps([p.model_dump(mode="json") for p in items], indent=2))
            return
        from rich import box
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for column in ("name", "share", "active studies", "trials", "stored", "data dir"):
            table.add_column(column, justify="left" if column in ("name", "data dir") else "right")
        for p in items:
            u = p.usage
            table.add_row(text(p.name), text(f"{p.share:g}"), text(_of(u.active_studies, p.max_active_studies)),
                          text(_of(u.trials, p.max_trials)), text(_of(u.stored_bytes, p.max_stored_bytes, True)),
                          text(p.data_dir or "(the data root)"))
        _console().print(table)


def project_set(
    name: NameArg,
    share: ShareOption = None,
    max_active_studies: StudiesChange = None,
    max_trials: TrialsChange = None,
    max_stored_bytes: BytesChange = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a project's share or quotas (admin token); `none` makes a quota unlimited, the rest stay.

    Lowering a quota below what the project uses stops new work; it removes nothing."""
    from service.client.teams import UNSET

    given = {"max_active_studies": ("--max-active-studies", max_active_studies),
             "max_trials": ("--max-trials", max_trials), "max_stored_bytes": ("--max-stored-bytes", max_stored_bytes)}
    quotas = {key: _quota(value, option, unset=True) if value is not None else UNSET
              for key, (option, value) in given.items()}
    if share is None and all(v is UNSET for v in quotas.values()):
        _fail("nothing to change: give --share or a --max-... option", 2)
    with _api(url, token) as api:
        changed = api.update_project(name, share=_share(share), **quotas)
        typer.echo(clean(_describe(changed)))


def register(app: typer.Typer) -> None:
    """Add `stsweep project ...` to the main app."""
    project_app = typer.Typer(help="Projects: create, ls, set (creating and changing them needs an admin token).",
                              no_args_is_help=True)
    project_app.command("create")(project_create)
    project_app.command("ls")(project_ls)
    project_app.command("set")(project_set)
    app.add_typer(project_app, name="project")
