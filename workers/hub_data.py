"""A hub data set's split, read from its own repository only, with the same readers and limits as an upload.

`datasets.load_dataset` is never called: it reads whatever a repository's card lists (absolute paths on the
worker, URLs, internal addresses included). Instead:

1. The repository's file list: from the hub (`HfApi.dataset_info`, one commit pinned) or, offline
   (`HF_HUB_OFFLINE`) or when the hub cannot be reached, from huggingface_hub's cache (`refs/main` ->
   `snapshots/<commit>/`, walked without following links).
2. The split's files, chosen by name among those only (workers/hub_card.py).
3. Their sizes together against `max_upload_bytes` (STSWEEP_MAX_UPLOAD_BYTES), before any is downloaded or read.
4. Each file's real path must lie in the repository's cache (its snapshot folder or its `blobs/`) or in
   huggingface_hub's cache-wide blob store (`<cache>/blobs/<2 hex>/<64 hex>`): a link anywhere else is refused.
5. The files are read by core/tabular.py's readers against one shared budget: the rows and decoded bytes of all
   of a split's files together count against `max_rows` and `max_decoded_bytes`, every cell and line as in an
   upload.

Every refusal is an InvalidInput naming `data.<role>.hf`; none quotes a file's contents.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from service.core.errors import InvalidInput, PayloadTooLarge
from service.core.limits import SETTING, Budget, ReadLimits, size_text
from service.core.tabular import read_table
from workers.hub_card import choose_files

CARD = "README.md"
MAX_CARD_BYTES = 1024 * 1024  # the card is parsed (YAML) only up to this size
MAX_LISTED_FILES = 100_000  # files of a repository considered at all
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHARED_BLOB = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}")


@dataclass(frozen=True)
class Repo:
    """One commit of a data set repository: its files (path -> size in bytes, None when unknown) and how to get
    a local copy of one."""

    repo_id: str
    commit: str
    sizes: dict[str, int | None]
    cache_dir: Path
    online: bool

    @property
    def folder(self) -> Path:
        return self.cache_dir / ("datasets--" + self.repo_id.replace("/", "--"))

    @property
    def snapshot(self) -> Path:
        return self.folder / "snapshots" / self.commit


class _SplitBudget(Budget):
    """One budget for all of a split's files: rows count on from the files read before."""

    def __init__(self, limits: ReadLimits, total_size: int) -> None:
        super().__init__(limits, total_size)
        self.rows_before = 0

    def rows(self, count: int, where: str) -> None:
        super().rows(self.rows_before + count, where)


def load_hub_split(repo_id: str, config: str | None, split: str, field: str, limits: ReadLimits,
                   cache_dir: Path | None = None) -> pa.Table:
    """The split's rows as one table. `repo_id` was checked (body_limits.hub_id_problem) by the caller.
    `cache_dir`: huggingface_hub's cache (default: its own setting, HF_HUB_CACHE)."""
    from huggingface_hub import constants

    where = f"hub dataset {repo_id!r}" + (f" config {config!r}" if config else "") + f" split {split!r}"
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser().absolute()
    repo = _repository(repo_id, cache, constants.is_offline_mode(), where, field)
    card = _card(repo, where, field)
    choice = choose_files(repo.sizes, card, config, split, where, field)
    known = sum(repo.sizes[n] or 0 for n in choice.files)
    _check_size(known, limits, where, field)
    paths = [_local(repo, name, where, field) for name in choice.files]
    total = sum(p.stat().st_size for p in paths)
    _check_size(total, limits, where, field)
    return _read(list(zip(choice.files, paths)), total, limits, where, field)


# ---------------------------------------------------------------- the repository's files


def _repository(repo_id: str, cache: Path, offline: bool, where: str, field: str) -> Repo:
    if offline:
        return _cached(repo_id, cache, where, field, "HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi

    try:
        info = HfApi().dataset_info(repo_id, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - unreachable hub, unknown repository, ...: try the cache
        return _cached(repo_id, cache, where, field, f"the hub answered {type(exc).__name__}: {exc}")
    siblings = info.siblings or []
    if len(siblings) > MAX_LISTED_FILES or not info.sha or not _COMMIT.fullmatch(info.sha):
        raise InvalidInput(f"{where}: the hub's listing of the repository is not usable (more than "
                           f"{MAX_LISTED_FILES:,} files, or no commit)", field=field)
    return Repo(repo_id, info.sha, {s.rfilename: s.size for s in siblings}, cache, online=True)


def _cached(repo_id: str, cache: Path, where: str, field: str, why: str) -> Repo:
    """The repository as huggingface_hub's cache holds it at `refs/main`."""
    folder = cache / ("datasets--" + repo_id.replace("/", "--"))
    ref = folder / "refs" / "main"
    try:
        with open(ref, "rb") as f:
            commit = f.read(64).decode("ascii", "replace").strip()
    except OSError:
        raise InvalidInput(f"{where}: not in the local hub cache ({cache}) and not fetched ({why}); upload the "
                           f"data and use dataset_id instead", field=field) from None
    if not _COMMIT.fullmatch(commit):
        raise InvalidInput(f"{where}: the cache's refs/main does not hold a commit hash", field=field)
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir() or snapshot.is_symlink():
        raise InvalidInput(f"{where}: the cache has no snapshot folder for its refs/main", field=field)
    sizes: dict[str, int | None] = {}
    for root, dirs, files in os.walk(snapshot):  # links to folders are listed in `dirs` but never entered
        base = Path(root).relative_to(snapshot)
        for name in files:
            sizes[(base / name).as_posix()] = None
        if len(sizes) > MAX_LISTED_FILES:
            raise InvalidInput(f"{where}: the repository has more than {MAX_LISTED_FILES:,} files", field=field)
    return Repo(repo_id, commit, sizes, cache, online=False)


def _card(repo: Repo, where: str, field: str) -> str | None:
    if CARD not in repo.sizes:
        return None
    if (repo.sizes[CARD] or 0) > MAX_CARD_BYTES:
        raise InvalidInput(f"{where}: its card ({CARD}) is over {size_text(MAX_CARD_BYTES)}", field=field)
    path = _local(repo, CARD, where, field)
    with open(path, "rb") as f:
        raw = f.read(MAX_CARD_BYTES + 1)
    if len(raw) > MAX_CARD_BYTES:
        raise InvalidInput(f"{where}: its card ({CARD}) is over {size_text(MAX_CARD_BYTES)}", field=field)
    return raw.decode("utf-8", "replace")


def _local(repo: Repo, name: str, where: str, field: str) -> Path:
    """The real path of the repository file `name` (downloaded first when online), inside the cache."""
    if repo.online:
        from huggingface_hub import hf_hub_download

        try:
            hf_hub_download(repo.repo_id, name, repo_type="dataset", revision=repo.commit,
                            cache_dir=repo.cache_dir)
        except Exception as exc:  # noqa: BLE001 - any failure to fetch is the repository's at fault here
            raise InvalidInput(f"{where}: could not download {name!r} ({type(exc).__name__}: {exc})",
                               field=field) from exc
    return _inside_cache(repo, name, where, field)


def _inside_cache(repo: Repo, name: str, where: str, field: str) -> Path:
    pointer = repo.snapshot / name
    real = Path(os.path.realpath(pointer))
    folder = Path(os.path.realpath(repo.folder))
    shared = Path(os.path.realpath(repo.cache_dir)) / "blobs"
    inside = (real.parent == folder / "blobs"
              or real.is_relative_to(folder / "snapshots" / repo.commit)
              or (real.is_relative_to(shared) and _SHARED_BLOB.fullmatch(real.relative_to(shared).as_posix())
                  is not None))
    if not inside:
        raise InvalidInput(f"{where}: the repository file {name!r} is a link that leads out of the repository's "
                           f"cache; refusing it (nothing was read)", field=field)
    if not real.is_file():
        raise InvalidInput(f"{where}: the repository file {name!r} is not in the cache as a file", field=field)
    return real


# ---------------------------------------------------------------- limits and reading


def _check_size(total: int, limits: ReadLimits, where: str, field: str) -> None:
    if total > limits.max_upload_bytes:
        raise InvalidInput(f"{where}: the split's files hold {size_text(total)}, more than "
                           f"{size_text(limits.max_upload_bytes)}, the limit an upload has "
                           f"({SETTING['max_upload_bytes']}); nothing was read", field=field)


def _read(files: list[tuple[str, Path]], total: int, limits: ReadLimits, where: str, field: str) -> pa.Table:
    budget = _SplitBudget(limits, total)
    tables: list[pa.Table] = []
    for name, path in files:
        try:
            table = read_table(path, header=True, limits=limits, budget=budget, name=name)
        except (InvalidInput, PayloadTooLarge) as exc:
            limit = isinstance(exc, PayloadTooLarge) and len(files) > 1
            together = " (all of the split's files together)" if limit else ""
            raise InvalidInput(f"{where}, file {name!r}{together}: {exc.message}", field=field) from exc
        budget.rows_before += table.num_rows
        tables.append(table)
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidInput(f"{where}: the split's files do not share their columns and types ({exc})",
                           field=field) from exc
