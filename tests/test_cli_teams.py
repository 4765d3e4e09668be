"""`stsweep project create | ls | set`, run as the installed console script against a live server with the URL
and an admin token exported (as tests/test_cli.py): quotas set, shown and unset, a member refused (exit 1, the
server's 403 in one line), bad values refused before anything is sent (exit 2)."""

from __future__ import annotations

from pathlib import Path

from service.context import Context
from service.store import projects
from service.store.tokens import create_token
from tests.test_cli import cli_env, ok, one_line_error, server, stsweep  # noqa: F401  (fixtures)


def test_project_create_ls_set(cli_env: dict[str, str], ctx: Context, tmp_path: Path) -> None:
    made = ok(stsweep("project", "create", "nlp", "--share", "2", "--max-active-studies", "4",
                      "--max-stored-bytes", "1GiB", env=cli_env, cwd=tmp_path))
    assert made.strip() == "created nlp: share 2, active studies 0/4, trials 0/unlimited, stored 0 B/1.0 GB", made
    stored = projects.get_project(ctx.sessions, "nlp")
    quotas = (stored.share, stored.max_active_studies, stored.max_trials, stored.max_stored_bytes)
    assert quotas == (2, 4, None, 2**30)

    changed = ok(stsweep("project", "set", "nlp", "--max-active-studies", "none", "--max-trials", "100",
                         env=cli_env, cwd=tmp_path))
    assert changed.strip() == "nlp: share 2, active studies 0/unlimited, trials 0/100, stored 0 B/1.0 GB", changed
    stored = projects.get_project(ctx.sessions, "nlp")
    quotas = (stored.share, stored.max_active_studies, stored.max_trials, stored.max_stored_bytes)
    assert quotas == (2, None, 100, 2**30)

    listing = ok(stsweep("project", "ls", env=cli_env, cwd=tmp_path))
    header, *rows = [line for line in listing.splitlines() if line.strip() and "──" not in line]
    assert header.split()[:3] == ["name", "share", "active"], listing
    assert [r.split()[0] for r in rows] == ["default", "nlp"]
    assert "0/100" in rows[1] and "(the data root)" in rows[0]

    one_line_error(stsweep("project", "create", "nlp", env=cli_env, cwd=tmp_path), 1, "project 'nlp' already exists")
    one_line_error(stsweep("project", "set", "nosuch", "--share", "1", env=cli_env, cwd=tmp_path), 1, "not found")
    member = {**cli_env, "STSWEEP_TOKEN": create_token(ctx.sessions, "m", project="nlp", role="member")}
    one_line_error(stsweep("project", "set", "nlp", "--max-trials", "1", env=member, cwd=tmp_path), 1,
                   "a member token may not do this", "admin")
    own = ok(stsweep("project", "ls", env=member, cwd=tmp_path)).splitlines()[2:]
    assert [r.split()[0] for r in own if r.strip()] == ["nlp"]  # its own project only

    for args, needle in ((["set", "nlp"], "nothing to change"),
                         (["set", "nlp", "--max-trials", "lots"], "--max-trials"),
                         (["create", "x", "--max-trials", "none"], "leave it out"),
                         (["create", "x", "--share", "0"], "--share"),
                         (["create", "x", "--max-stored-bytes", "big"], "--max-stored-bytes")):
        one_line_error(stsweep("project", *args, env=cli_env, cwd=tmp_path), 2, needle)
    assert [p.name for p in projects.list_projects(ctx.sessions)] == ["default", "nlp"]
    assert projects.get_project(ctx.sessions, "nlp").max_trials == 100
