"""Projects: a team's space of studies, data sets and tokens, with its quotas (NULL: unlimited) and fair-share
weight. What a project uses is read here too (`usage`): its unfinished studies, its queued plus running trials
(from trial_counts, a few rows per study; a stopped study's queued slots do not count until it runs again) and
its stored bytes (data sets plus final checkpoints). The quotas are checked in service/store/quotas.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.core.access import check_project_name
from service.core.errors import Conflict, NotFound
from service.core.schemas import ProjectCreate, ProjectPublic, ProjectUpdate, ProjectUsage
from service.store.db import session_scope
from service.store.fair_share import INITIAL_VTIME_SQL

UNFINISHED_STUDY = "('queued', 'running', 'paused')"  # what the active-studies quota counts
QUOTA_FIELDS = ("share", "max_active_studies", "max_trials", "max_stored_bytes")

_USAGE = text(f"""
    SELECT
      (SELECT count(*) FROM studies WHERE project = :p AND status IN {UNFINISHED_STUDY}) AS active_studies,
      (SELECT coalesce(sum(c.trials), 0) FROM trial_counts c JOIN studies st ON st.id = c.study_id
       WHERE st.project = :p AND (c.state = 'running' OR c.state = 'queued' AND st.status IN {UNFINISHED_STUDY})
      ) AS trials,
      (SELECT coalesce(sum(size_bytes), 0) FROM datasets WHERE project = :p)
      + (SELECT coalesce(sum(c.checkpoint_bytes), 0) FROM trial_counts c JOIN studies st ON st.id = c.study_id
         WHERE st.project = :p) AS stored_bytes
""")


def usage(s: Session, project: str) -> ProjectUsage:
    row = s.execute(_USAGE, {"p": project}).one()
    return ProjectUsage(active_studies=int(row.active_studies), trials=int(row.trials),
                        stored_bytes=int(row.stored_bytes))


def _public(s: Session, row: Any) -> ProjectPublic:
    return ProjectPublic(name=row.name, data_dir=row.data_dir, share=row.share,
                         max_active_studies=row.max_active_studies, max_trials=row.max_trials,
                         max_stored_bytes=row.max_stored_bytes, created_at=row.created_at, usage=usage(s, row.name))


_COLUMNS = "name, data_dir, share, max_active_studies, max_trials, max_stored_bytes, created_at"


def require_project(factory: sessionmaker[Session], name: str) -> None:
    """NotFound (field `project`) unless the project exists."""
    with session_scope(factory) as s:
        found = s.execute(text("SELECT 1 FROM projects WHERE name = :n"), {"n": name}).first()
    if found is None:
        raise NotFound(f"project {name!r} not found", field="project")


def create_project(factory: sessionmaker[Session], body: ProjectCreate) -> ProjectPublic:
    """A new project; its `path` data files resolve under STSWEEP_DATA_ROOT/<name>. Conflict if it exists. Its
    fair-share virtual time starts level with the projects working now (fair_share.py): no burst of claims."""
    check_project_name(body.name, "name")
    try:
        with session_scope(factory) as s:
            row = s.execute(text(f"""INSERT INTO projects (name, data_dir, share, max_active_studies, max_trials,
                                                           max_stored_bytes, vtime)
                                     VALUES (:name, :name, :share, :studies, :trials, :bytes, {INITIAL_VTIME_SQL})
                                     RETURNING {_COLUMNS}"""),
                            {"name": body.name, "share": body.share, "studies": body.max_active_studies,
                             "trials": body.max_trials, "bytes": body.max_stored_bytes}).one()
            return _public(s, row)
    except IntegrityError as exc:
        raise Conflict(f"project {body.name!r} already exists", field="name") from exc


def list_projects(factory: sessionmaker[Session], only: str | None = None) -> list[ProjectPublic]:
    """Every project by name (or just `only`), with its usage."""
    with session_scope(factory) as s:
        rows = s.execute(text(f"SELECT {_COLUMNS} FROM projects WHERE CAST(:only AS text) IS NULL OR name = :only "
                              "ORDER BY name"), {"only": only}).all()
        return [_public(s, r) for r in rows]


def get_project(factory: sessionmaker[Session], name: str) -> ProjectPublic:
    found = list_projects(factory, name)
    if not found:
        raise NotFound(f"project {name!r} not found", field="name")
    return found[0]


def update_project(factory: sessionmaker[Session], name: str, body: ProjectUpdate) -> ProjectPublic:
    """Change the fields sent (a quota sent as null: unlimited again; `share` null is refused by the schema
    default: leaving it out keeps it). Lowering a quota below the usage stops new work, it removes nothing."""
    sent = body.model_fields_set & set(QUOTA_FIELDS)
    if "share" in sent and body.share is None:
        sent.discard("share")
    with session_scope(factory) as s:
        if sent:
            assignments = ", ".join(f"{f} = :{f}" for f in sorted(sent))
            found = s.execute(text(f"UPDATE projects SET {assignments} WHERE name = :name RETURNING name"),
                              {"name": name, **{f: getattr(body, f) for f in sent}}).first()
        else:
            found = s.execute(text("SELECT name FROM projects WHERE name = :name"), {"name": name}).first()
        if found is None:
            raise NotFound(f"project {name!r} not found", field="name")
    return get_project(factory, name)
