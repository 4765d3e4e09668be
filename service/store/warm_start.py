"""`warm_start_from`: a new study starts with an earlier study's best configurations.

At submission the old study's top configurations (its winner first, then its best distinct complete
configurations, up to `confirm.top_k` of the new study or WARM_START_CONFIGS) are prepended to the new study's
`enqueue_trials`, restricted to the parameters both studies search: a parameter only the new study searches is
sampled, one it fixes keeps its fixed value. The old winner's values must all be ones the new space can take
(422 naming the parameter otherwise, and nothing is stored); a later configuration that the new space cannot
take is left out. A study of another task, one that does not exist or has no complete trial yet is refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.core.access import DEFAULT_PROJECT
from service.core.errors import InvalidInput
from service.core.spec import WARM_START_CONFIGS, Param, StudySpec, enqueued_problem, field_errors
from service.store.db import session_scope
from service.store.ranking import best_per_config_sql
from service.store.winner import confirmed_winners

_FIELD = "warm_start_from"

_BEST_CONFIGS = text(f"""
    SELECT c.params FROM ({best_per_config_sql("t.params IS NOT NULL")}) c ORDER BY c.rank_key, c.number LIMIT :k
""")


def top_configurations(s: Session, study_id: str, limit: int) -> list[dict[str, Any]]:
    """The study's best distinct configurations, best first: its winner (a confirmed configuration, when it
    has one), then the best trial of each other configuration."""
    configs: list[dict[str, Any]] = []
    won = confirmed_winners(s, [study_id]).get(study_id)
    if won is not None and won.params is not None:
        configs.append(dict(won.params))
    for params in s.execute(_BEST_CONFIGS, {"sid": study_id, "k": limit}).scalars():
        if params not in configs:
            configs.append(dict(params))
    return configs[:limit]


def apply(factory: sessionmaker[Session], spec: StudySpec, project: str = DEFAULT_PROJECT) -> StudySpec:
    """The spec to store: `spec` with the old study's top configurations enqueued first (unchanged without
    `warm_start_from`). InvalidInput (field `warm_start_from`, the parameter named in the message) when they do
    not fit; the old study must be of the new one's `project` (another project's does not exist for it)."""
    source = spec.warm_start_from
    if source is None:
        return spec
    limit = max(WARM_START_CONFIGS, spec.confirm.top_k if spec.confirm else 0)
    with session_scope(factory) as s:
        row = s.execute(text("SELECT spec FROM studies WHERE id = :id AND project = :p"),
                        {"id": source, "p": project}).first()
        if row is None:
            raise InvalidInput(f"study {source} not found", field=_FIELD)
        old = StudySpec.model_validate(row.spec)
        if old.task != spec.task:
            raise InvalidInput(f"study {source} is a {old.task} study, this one is {spec.task}", field=_FIELD)
        configs = top_configurations(s, source, limit)
    if not configs:
        raise InvalidInput(f"study {source} has no complete trial yet", field=_FIELD)
    new_space, old_space = spec.searched(), old.searched()
    shared = {name: param for name, param in new_space.items() if name in old_space}
    enqueued: list[dict[str, Any]] = []
    for rank, params in enumerate(configs):
        config, problem = _restricted(params, shared)
        if problem is not None:
            if rank == 0:
                raise InvalidInput(f"{problem} (the winner of {source})", field=_FIELD)
            continue
        if config and config not in enqueued:
            enqueued.append(config)
    body = spec.model_dump(mode="json")
    body["enqueue_trials"] = enqueued + body["enqueue_trials"]
    try:
        return StudySpec.model_validate(body)
    except ValidationError as exc:
        first = field_errors(exc)[0]
        raise InvalidInput(f"{first['field']}: {first['message']}", field=_FIELD) from exc


def _restricted(params: dict[str, Any], shared: dict[str, Param]) -> tuple[dict[str, Any], str | None]:
    """The configuration on the parameters both studies search, or why one value does not fit the new space
    ("search_space.<param>: ...")."""
    config: dict[str, Any] = {}
    for name, param in shared.items():
        if name not in params:
            continue  # a loss parameter of a loss this configuration did not pick
        problem = enqueued_problem(param, params[name])
        if problem is not None:
            return config, f"search_space.{name}: {problem}"
        config[name] = params[name]
    return config, None
