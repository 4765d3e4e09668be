"""The stsweep stack a bench runs its worker against (bench/train_bench.py and bench/ttq_stsweep.py).

A fresh migrated database, a token, the data files under a data root, our API in a subprocess
(bench/api_bench.py's `server`), and the environment for a worker process pointed at all of them. The caller
starts and stops its own worker (it measures it); the stack drops the database on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def env_set(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Stack:
    url: str
    ctx: Any  # service.context.Context
    token: str
    port: int
    data_root: Path
    worker_env: dict[str, str]
    _api: Any = field(repr=False, default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop_api(self) -> None:
        """Stop the API server now (its CPU seconds then count among this process's children); idempotent."""
        if self._api is not None:
            api, self._api = self._api, None
            api.__exit__(None, None, None)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@contextlib.contextmanager
def stsweep_stack(workdir: Path, db_prefix: str, files: dict[str, list[dict[str, Any]]],
                  worker_env: dict[str, str]) -> Iterator[Stack]:
    """`files`: paths relative to the data root -> JSONL rows. `worker_env` is added to the worker's environment
    (this process's, less every STSWEEP_ variable) before the stack's own database, home and roots."""
    from bench.api_bench import _http_ok, server
    from bench.fill import create_database, drop_database
    from service.context import Context
    from service.settings import Settings
    from service.store import migrate, optuna_bridge
    from service.store.tokens import create_token

    logdir, data_root = workdir / "logs", workdir / "data"
    logdir.mkdir(parents=True, exist_ok=True)
    for rel, rows in files.items():
        _write_jsonl(data_root / rel, rows)
    artifact_root = logdir / "ours-home" / "artifacts"  # where api_bench's server keeps its artifacts
    db_name, url = create_database(db_prefix)
    ctx = None
    try:
        migrate.upgrade(url)
        settings = Settings(database_url=url, optuna_schema="optuna", home=workdir / "home",
                            artifact_root=str(artifact_root), data_root=data_root,
                            _env_file=None)  # type: ignore[call-arg]
        ctx = Context(settings, url)
        ctx.optuna_storage  # noqa: B018  (schema optuna and its tables)
        token = create_token(ctx.sessions, "bench")
        wenv = {k: v for k, v in os.environ.items() if not k.startswith("STSWEEP_")}
        wenv.update(worker_env)
        wenv.update({"STSWEEP_DATABASE_URL": url, "STSWEEP_HOME": str(workdir / "worker-home"),
                     "STSWEEP_ARTIFACT_ROOT": str(artifact_root), "STSWEEP_DATA_ROOT": str(data_root)})
        with env_set(STSWEEP_DATA_ROOT=str(data_root)):  # the API checks that data paths exist under it
            api = server("ours", url, logdir, _http_ok("/healthz"))
            port = api.__enter__()
        stack = Stack(url=url, ctx=ctx, token=token, port=port, data_root=data_root, worker_env=wenv, _api=api)
        try:
            yield stack
        finally:
            stack.stop_api()
    finally:
        if ctx is not None:
            ctx.close()
        optuna_bridge.storage.cache_clear()
        drop_database(db_name)
