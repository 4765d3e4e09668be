"""/v1/projects: an admin creates projects and sets their quotas and shares; any token reads its own project."""

from __future__ import annotations

from fastapi import APIRouter, Path, status
from pydantic import BaseModel

from service.api.deps import ADMIN, VIEWER, Caller, SessionsDep
from service.core.access import PROJECT_PATTERN
from service.core.errors import NotFound
from service.core.schemas import ProjectCreate, ProjectPublic, ProjectUpdate
from service.store import projects

router = APIRouter(prefix="/v1/projects", tags=["projects"])


class ProjectList(BaseModel):
    items: list[ProjectPublic]
    total: int


@router.get("", response_model=ProjectList, dependencies=VIEWER)
def list_projects(principal: Caller, sessions: SessionsDep) -> ProjectList:
    """Every project for an admin; the token's own for anyone else. Each with its quotas, share and usage."""
    items = projects.list_projects(sessions, None if principal.is_admin else principal.project)
    return ProjectList(items=items, total=len(items))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectPublic, dependencies=ADMIN)
def create_project(body: ProjectCreate, sessions: SessionsDep) -> ProjectPublic:
    """A new project (409 when the name is taken); its `path` data files live under STSWEEP_DATA_ROOT/<name>."""
    return projects.create_project(sessions, body)


ProjectName = Path(pattern=PROJECT_PATTERN, max_length=63)


@router.get("/{name}", response_model=ProjectPublic, dependencies=VIEWER)
def read_project(principal: Caller, sessions: SessionsDep, name: str = ProjectName) -> ProjectPublic:
    """One project: an admin any, anyone else its own (another is a 404)."""
    if not principal.sees(name):
        raise NotFound(f"project {name!r} not found", field="name")
    return projects.get_project(sessions, name)


@router.patch("/{name}", response_model=ProjectPublic, dependencies=ADMIN)
def update_project(body: ProjectUpdate, sessions: SessionsDep, name: str = ProjectName) -> ProjectPublic:
    """Set quotas (null: unlimited) and `share`; fields left out stay as they are."""
    return projects.update_project(sessions, name, body)
