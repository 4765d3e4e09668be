"""Which of a hub data set repository's own files hold one split: chosen by name, never opened here.

The repository's card (README.md's YAML header) may list a config's data files (`configs: [{config_name,
data_dir, data_files}]`); every entry must be a pattern relative to the repository (no absolute path, no '..', no
URL or other scheme, no backslash), and is matched against the repository's file list only. Without `configs`
the hub's own layout conventions choose (as the `datasets` library does, data_files.py): sharded
`data/{split}-NNNNN-of-NNNNN*.*` files, else the split's keywords in a folder name, else in a file name, else
every data file is `train`. Only data files an upload may be (.csv, .tsv, .jsonl, .json, .parquet) are chosen.

Refusals are InvalidInput naming `field` (`data.<role>.hf`); a message names the entry's kind and place in the
card, never the entry itself or anything from a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from service.core.errors import InvalidInput
from service.core.text_checks import not_text_at

DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
MAX_PATTERNS = 1000  # data_files entries one split of a card may list
MAX_PATTERN_LENGTH = 1024
_IGNORED = frozenset({"config.json", "dataset_info.json", "dataset_infos.json", "dataset_dict.json"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_SEP = r"[-._ 0-9]"
SPLIT_KEYWORDS = {  # datasets.data_files.SPLIT_KEYWORDS
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_SHARDED = re.compile(r"data/(\w+(?:\.\w+)*)-[0-9]{5}-of-[0-9]{5}[^/]*\.[^/]*")


@dataclass(frozen=True)
class Choice:
    """The split's files (repository paths, sorted) and where the choice came from, for messages."""

    files: list[str]
    source: str


def choose_files(names: Iterable[str], card: str | None, config: str | None, split: str, where: str,
                 field: str) -> Choice:
    """The repository files (from `names`, the repository's own list) that hold `split` of `config`.
    `card`: README.md's text (None: the repository has none). `where` starts every message."""
    repo_files = sorted(n for n in names if _plain(n))
    configs = _configs(card, where, field)
    if configs is None:
        if config not in (None, "default"):
            raise InvalidInput(f"{where}: the card declares no configs, so there is no config {config!r}", field=field)
        return Choice(_by_layout(repo_files, split, where, field), "the hub's file layout")
    index, chosen = _pick_config(configs, config, where, field)
    place = f"configs[{index}]"
    prefix = ""
    if chosen.get("data_dir") is not None:
        prefix = _relative(chosen["data_dir"], f"{place}.data_dir", where, field)
        prefix = "" if prefix == "." else prefix.rstrip("/") + "/"
    files = [n for n in repo_files if n.startswith(prefix)]
    if chosen.get("data_files") is None:
        layout = [prefix + n for n in _by_layout([n[len(prefix):] for n in files], split, where, field)]
        return Choice(layout, f"{place} (data_dir) and the hub's file layout")
    patterns = _split_patterns(chosen["data_files"], split, f"{place}.data_files", where, field)
    matched: set[str] = set()
    for i, pattern in patterns:
        rel = _relative(pattern, f"{place}.data_files entry {i} for split {split!r}", where, field)
        regex = _glob(prefix + rel.removeprefix("./"))
        matched.update(n for n in files if regex.fullmatch(n))
    if not matched:
        raise InvalidInput(f"{where}: {place}.data_files for split {split!r} match none of the repository's files",
                           field=field)
    for name in sorted(matched):
        if not name.lower().endswith(DATA_SUFFIXES):
            raise InvalidInput(f"{where}: {place} names {name!r} for split {split!r}, which is not a data file "
                               f"stsweep reads ({', '.join(DATA_SUFFIXES)})", field=field)
    return Choice(sorted(matched), place)


# ---------------------------------------------------------------- the card


def _configs(card: str | None, where: str, field: str) -> list[Any] | None:
    """The card's `configs` list, or None when it has none."""
    if card is None:
        return None
    lines = card.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---")
    except StopIteration:
        return None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        raise InvalidInput(f"{where}: the card's YAML header is not valid YAML", field=field) from None
    if not isinstance(meta, dict) or meta.get("configs") is None:
        return None
    configs = meta["configs"]
    if not isinstance(configs, list) or not configs or not all(
            isinstance(c, dict) and isinstance(c.get("config_name"), str) for c in configs):
        raise InvalidInput(f"{where}: the card's configs are not a list of {{config_name, data_files}}", field=field)
    return configs


def _pick_config(configs: list[dict[str, Any]], config: str | None, where: str,
                 field: str) -> tuple[int, dict[str, Any]]:
    names = [c["config_name"] for c in configs]
    if config is not None:
        if config in names:
            return names.index(config), configs[names.index(config)]
        raise InvalidInput(f"{where}: no config {config!r} in the card (it has {_listed(names)})", field=field)
    for i, c in enumerate(configs):
        if c.get("default") is True:
            return i, c
    if "default" in names:
        return names.index("default"), configs[names.index("default")]
    if len(configs) == 1:
        return 0, configs[0]
    raise InvalidInput(f"{where}: the card has several configs and none is the default; give config "
                       f"({_listed(names)})", field=field)


def _split_patterns(data_files: Any, split: str, place: str, where: str, field: str) -> list[tuple[int, Any]]:
    """The entries listed for `split`, numbered for messages. data_files is a pattern, a list of patterns
    (split `train`), a list of {split, path} or a mapping split -> pattern(s)."""
    by_split: dict[str, list[Any]] = {}
    if isinstance(data_files, (str, list)) and (isinstance(data_files, str) or not any(
            isinstance(e, dict) for e in data_files)):
        by_split["train"] = [data_files] if isinstance(data_files, str) else list(data_files)
    elif isinstance(data_files, list):
        for entry in data_files:
            if not isinstance(entry, dict) or not isinstance(entry.get("split"), str) or "path" not in entry:
                raise InvalidInput(f"{where}: {place} mixes entries that are not {{split, path}}", field=field)
            paths = entry["path"]
            by_split.setdefault(entry["split"], []).extend(paths if isinstance(paths, list) else [paths])
    elif isinstance(data_files, dict):
        for name, paths in data_files.items():
            by_split.setdefault(str(name), []).extend(paths if isinstance(paths, list) else [paths])
    else:
        raise InvalidInput(f"{where}: {place} is not a pattern, a list or a mapping of splits", field=field)
    if split not in by_split:
        raise InvalidInput(f"{where}: {place} has no split {split!r} (it has {_listed(by_split)})", field=field)
    patterns = by_split[split]
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInput(f"{where}: {place} lists {len(patterns):,} entries for split {split!r}, more than "
                           f"{MAX_PATTERNS:,}", field=field)
    return list(enumerate(patterns, start=1))


def _relative(entry: Any, place: str, where: str, field: str) -> str:
    """`entry` as a pattern relative to the repository, or InvalidInput naming its kind (never its text)."""
    kind = entry_kind(entry)
    if kind is not None:
        raise InvalidInput(f"{where}: the card's {place} is {kind}; only files of the repository itself are read, "
                           f"by paths relative to it (nothing was read)", field=field)
    return str(entry)


def entry_kind(entry: Any) -> str | None:
    """Why a card entry is not a relative pattern inside the repository (its kind, e.g. 'a URL'), or None."""
    if not isinstance(entry, str):
        return "not a text pattern"
    if not entry.strip():
        return "empty"
    if not_text_at(entry) >= 0:
        return "not text (a NUL or a lone surrogate)"
    if len(entry) > MAX_PATTERN_LENGTH:
        return f"longer than {MAX_PATTERN_LENGTH} characters"
    if "://" in entry or _SCHEME.match(entry):
        return "a URL (or another scheme, or a drive letter)"
    if entry.startswith(("/", "\\")):
        return "an absolute path"
    if entry.startswith("~"):
        return "a path in a home folder"
    if "\\" in entry:
        return "a path with a backslash"
    if ".." in entry.split("/"):
        return "a path with a '..' part"
    return None


def _listed(names: Iterable[str]) -> str:
    shown = [repr(n) for n in names if isinstance(n, str) and len(n) <= 100 and not_text_at(n) < 0][:20]
    return ", ".join(shown) or "none"


# ---------------------------------------------------------------- patterns and the hub's layout


def _plain(name: str) -> bool:
    """A repository path the choice may use: relative, no '..', no hidden or dunder part (as `datasets`)."""
    parts = PurePosixPath(name).parts
    return (bool(parts) and not name.startswith("/") and "\\" not in name and ".." not in parts
            and not any(p.startswith((".", "__")) for p in parts))


def _glob(pattern: str) -> re.Pattern[str]:
    """A glob over repository paths as fsspec reads it: '**' any folders, '*' and '?' within one name, [...]."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def _data_files(names: list[str]) -> list[str]:
    return [n for n in names if n.lower().endswith(DATA_SUFFIXES) and PurePosixPath(n).name not in _IGNORED]


def _by_layout(names: list[str], split: str, where: str, field: str) -> list[str]:
    """The hub's conventions, in the `datasets` library's order; the first that finds any split decides."""
    files = _data_files(names)
    sharded = {n: m.group(1) for n in files if (m := _SHARDED.fullmatch(n))}
    if sharded:
        return _found([n for n, s in sharded.items() if s == split], split, sorted(set(sharded.values())), where,
                      field)
    keywords = dict(SPLIT_KEYWORDS)
    keywords.setdefault(split, (split,))
    for in_dir in (True, False):
        found = {s: [n for n in files if _names_split(n, words, in_dir)] for s, words in keywords.items()}
        if any(found.values()):
            return _found(found[split], split, [s for s, f in found.items() if f], where, field)
    return _found(files if split == "train" else [], split, ["train"] if files else [], where, field)


def _names_split(name: str, keywords: tuple[str, ...], in_dir: bool) -> bool:
    parts = name.split("/")
    for word in keywords:
        w = re.escape(word)
        if in_dir and any(re.fullmatch(rf"(?:.*{_SEP})?{w}(?:{_SEP}.*)?", p) for p in parts[:-1]):
            return True
        if not in_dir and re.fullmatch(rf"(?:{w}|.*{_SEP}{w}){_SEP}.*", parts[-1]):
            return True
    return False


def _found(files: list[str], split: str, splits: list[str], where: str, field: str) -> list[str]:
    if not files:
        raise InvalidInput(f"{where}: no data files ({', '.join(DATA_SUFFIXES)}) for split {split!r} in the "
                           f"repository (its splits: {_listed(splits)})", field=field)
    return sorted(files)
