"""/v1/studies: submit, list, read, pause / resume / stop, extend, delete; and a study's trials."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response, status

from service.store import lifecycle, optuna_bridge, projects, studies, trial_pages, warm_start
from service.api.deps import MEMBER, VIEWER, Caller, ContextDep, SessionsDep
from service.store.data_refs import check_refs
from service.core import numeric_limits
from service.core.access import PROJECT_PATTERN
from service.core.errors import InvalidInput, NotFound
from service.core.schemas import ExtendRequest, Page, StudyPublic, TrialPage, TrialPublic
from service.core.spec import MAX_TRIALS, StudySpec, check_grid_size, check_models_root
from service.core.states import StudyStatus, TrialState

router = APIRouter(prefix="/v1/studies", tags=["studies"])

_STUDY_ID = re.compile(r"^st_[0-9a-f]{16}$")


def study_id_shape(study_id: str) -> str:
    """Ids are opaque; anything not shaped like one (`..`, encoded paths, ...) is simply not found."""
    if not _STUDY_ID.fullmatch(study_id):
        raise NotFound(f"study {study_id!r} not found", field="study_id")
    return study_id


def study_id_param(study_id: str, principal: Caller, sessions: SessionsDep) -> str:
    """A study id the token sees: anything not shaped like one is not found, and so is a study of a project the
    token does not see (404 either way: ids cannot be probed)."""
    study_id_shape(study_id)
    project = studies.project_of(sessions, study_id)
    if project is None or not principal.sees(project):
        raise NotFound(f"study {study_id} not found", field="study_id")
    return study_id


StudyId = Annotated[str, Depends(study_id_param)]
Offset = Annotated[int, Query(**numeric_limits.field("query.offset"))]
Limit = Annotated[int, Query(**numeric_limits.field("query.limit"))]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StudyPublic, dependencies=MEMBER)
def create_study(
    spec: StudySpec,
    ctx: ContextDep,
    principal: Caller,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StudyPublic:
    """Submit a study. With an `Idempotency-Key` header, repeating the same request returns the same study.
    With `warm_start_from`, the old study's best configurations are enqueued first (422 when they do not fit).
    The study goes to the token's project; an admin may name another in `project`. The project's quotas are
    checked with the study stored (429 naming `max_active_studies` or `max_trials`, and nothing is stored): it
    counts as one active study and `budget.n_trials` trials (plus `confirm.top_k` x `confirm.seeds`)."""
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidInput("must not be empty (leave the header out instead)", field="Idempotency-Key")
    project = principal.target_project(spec.project)
    spec = spec.model_copy(update={"project": project}) if spec.project is not None else spec
    check_models_root(spec, ctx.settings.models_root)
    check_grid_size(spec, ctx.settings.max_grid_size)  # counted; the grid is built only by the Optuna study
    if idempotency_key is not None:
        existing = studies.find_idempotent(ctx.sessions, idempotency_key, studies.request_hash(spec), project)
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return studies.get_study(ctx.sessions, existing)
    projects.require_project(ctx.sessions, project)
    dataset_ids = check_refs(ctx.sessions, ctx.settings.data_root, spec, project)
    stored = warm_start.apply(ctx.sessions, spec, project)
    study_id = studies.new_study_id()
    optuna_name = f"stsweep-{study_id}"
    optuna_bridge.create_study(ctx.optuna_storage, optuna_name, stored)
    try:
        created = studies.insert_study(ctx.sessions, study_id, optuna_name, stored, idempotency_key, dataset_ids,
                                       body_hash=studies.request_hash(spec), project=project)
    except BaseException:
        optuna_bridge.delete_study(ctx.optuna_storage, optuna_name)
        raise
    if not created.created:
        optuna_bridge.delete_study(ctx.optuna_storage, optuna_name)
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/studies/{created.study_id}"
    return studies.get_study(ctx.sessions, created.study_id)


ProjectParam = Annotated[str | None, Query(pattern=PROJECT_PATTERN, max_length=63,
                                           description="an admin's choice of project (others: their own)")]


@router.get("", response_model=Page[StudyPublic], dependencies=VIEWER)
def list_studies(
    sessions: SessionsDep, principal: Caller, offset: Offset = 0, limit: Limit = 50,
    status_: Annotated[StudyStatus | None, Query(alias="status")] = None, project: ProjectParam = None,
) -> Page[StudyPublic]:
    """Studies, newest first, paged: the token's project's (an admin's: every project's, or `project`'s)."""
    return studies.list_studies(sessions, offset, limit, status_, principal.project_filter(project))


@router.get("/{study_id}", response_model=StudyPublic, dependencies=VIEWER)
def read_study(study_id: StudyId, sessions: SessionsDep) -> StudyPublic:
    """Status, counts per trial state, best trial, baseline, progress and the study definition."""
    return studies.get_study(sessions, study_id)


@router.get("/{study_id}/trials", response_model=TrialPage, dependencies=VIEWER)
def list_trials(
    study_id: StudyId, sessions: SessionsDep, offset: Offset = 0, limit: Limit = 100,
    state: TrialState | None = None,
    sort: trial_pages.SortKey = "number", order: Literal["asc", "desc"] = "asc",
    cursor: Annotated[str | None, Query(max_length=trial_pages.MAX_CURSOR_CHARS)] = None,
) -> TrialPage:
    """A page of trials, each with its intermediate values as (examples_seen, value) points. `next_cursor`
    (null on the last page) passed back as `cursor` (same sort, order and state) gives the next page at the
    cost of one page however deep; `offset` still works but reads and drops every row before the page."""
    return trial_pages.list_trials(sessions, study_id, offset, limit, state, sort, order == "desc", cursor)


TrialNumber = Annotated[int, Path(**numeric_limits.field("path.number"))]


@router.get("/{study_id}/trials/{number}", response_model=TrialPublic, dependencies=VIEWER)
def read_trial(study_id: StudyId, number: TrialNumber, sessions: SessionsDep) -> TrialPublic:
    return studies.get_trial(sessions, study_id, number)


def _action(action: studies.Action):  # type: ignore[no-untyped-def]
    def change(study_id: StudyId, sessions: SessionsDep) -> StudyPublic:
        lifecycle.change_status(sessions, study_id, action)
        return studies.get_study(sessions, study_id)

    change.__name__ = f"{action}_study"
    change.__doc__ = lifecycle.change_status.__doc__
    return change


for _verb in ("pause", "resume", "stop"):
    router.add_api_route(f"/{{study_id}}/{_verb}", _action(_verb), methods=["POST"], response_model=StudyPublic,
                         name=f"{_verb}_study", dependencies=MEMBER)


@router.post("/{study_id}/extend", response_model=StudyPublic, dependencies=MEMBER)
def extend_study(study_id: StudyId, body: ExtendRequest, sessions: SessionsDep) -> StudyPublic:
    """Add `n_trials` search trials to a queued, running, paused, stopped or completed study (numbered after its
    last trial; its Optuna history is kept). A stopped or completed study runs again and completes again (with
    `confirm`, new top configurations get confirm runs; the test split is scored again if the winner changed,
    the old score shown with `rescoring` until then); a paused one stays paused. Not idempotent: every request
    adds its trials (the response's `progress.n_trials` says the new budget). The new trials count against the
    project's `max_trials`, and a study that runs again against its `max_active_studies` (429 naming the quota)."""
    lifecycle.extend(sessions, study_id, body.n_trials, MAX_TRIALS)
    return studies.get_study(sessions, study_id)


@router.delete("/{study_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=MEMBER)
def delete_study(study_id: StudyId, ctx: ContextDep) -> Response:
    """Delete the study, its trials, its Optuna study and its checkpoints."""
    optuna_name = studies.delete_study(ctx.sessions, study_id)
    optuna_bridge.delete_study(ctx.optuna_storage, optuna_name)
    from service.store.retention import delete_study_artifacts

    delete_study_artifacts(ctx, study_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
