"""The limits on what a client sends in a request body (above all a study), and the checks that enforce them:
one module owns these rules. (The limits on decoding an uploaded data file are core/limits.py's.)

The study model (core/spec.py) applies them to every value of a study body, the request guard (api/guard.py)
applies the nesting-depth scan to every JSON body before it is parsed, and the worker's data loader
(workers/data.py) checks a Hugging Face dataset id again with the same function. README.md ("Limits") lists
them.

Nothing here recurses: bodies deeper than Python's recursion limit are refused, not crashed on. What is not
text and how deep raw JSON nests are decided by core/text_checks.py, as for a data file.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Any

from service.core.limits import MAX_NAME_BYTES
from service.core.numeric_limits import SEED_MAX
from service.core.text_checks import NUL, json_too_deep_at, not_text_at

# ---------------------------------------------------------------- the documented limits

MAX_NAME_LENGTH = 200  # a study's name
MAX_DESCRIPTION_LENGTH = 10_000  # a study's description
MAX_BASE_MODEL_LENGTH = 500  # a hub model id or a folder on the workers
MAX_PATH_LENGTH = 1024  # a data file path under STSWEEP_DATA_ROOT, in characters
MAX_PATH_PART_BYTES = 255  # one folder or file name in that path, in UTF-8 bytes (the file system's NAME_MAX)
MAX_COLUMN_NAME_LENGTH = MAX_NAME_BYTES  # a column name in data.columns (as core/limits.py allows in a header)
MAX_HUB_PART_LENGTH = 96  # the hub's own limit on a namespace and on a name
MAX_HUB_ID_LENGTH = 2 * MAX_HUB_PART_LENGTH + 1  # "org/name"
MAX_STRING_LENGTH = 200  # any other string in a study body: keys, choices, enqueued values, split, config, ...
MAX_DEPTH = 32  # nesting of objects and arrays in any JSON body (a study needs 6)
MAX_CHOICES = 1000  # choices of one categorical distribution
SEED_LIMIT = SEED_MAX + 1  # every seed (sampler, training, data split, train subset): 0 <= seed < 2**32
MAX_INTEGER = 2**63 - 1  # any integer anywhere in a study body: |n| <= 2**63 - 1
DEFAULT_MAX_GRID_SIZE = 10_000  # STSWEEP_MAX_GRID_SIZE's default: combinations a grid study may have
MAX_GRID_SIZE_CEILING = 100_000  # the largest STSWEEP_MAX_GRID_SIZE (the grid sampler holds every combination)

# Strings longer than MAX_STRING_LENGTH are allowed only here. A pattern is a study-body location with "*"
# standing for any one key or index; a field that is not listed gets the short default.
_PATH_FIELDS = (("data", "*", "path"), ("data", "split", "source", "path"))
_HUB_FIELDS = (("data", "*", "hf"), ("data", "split", "source", "hf"))
LONG_STRINGS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("name",), MAX_NAME_LENGTH),
    (("description",), MAX_DESCRIPTION_LENGTH),
    (("base_model",), MAX_BASE_MODEL_LENGTH),
    *((pattern, MAX_PATH_LENGTH) for pattern in _PATH_FIELDS),
    *((pattern, MAX_HUB_ID_LENGTH) for pattern in _HUB_FIELDS),
    (("data", "columns", "*"), MAX_COLUMN_NAME_LENGTH),
)

Location = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One refused input: where (a pydantic-style location) and why."""

    location: Location
    message: str


# ---------------------------------------------------------------- strings


# Control characters: C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F). They reach status_reason,
# logs and terminals (`stsweep status`), where escape codes rewrite the screen. Only the fields in
# MULTILINE_STRINGS may hold a newline or a tab.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
MULTILINE_STRINGS: tuple[tuple[str, ...], ...] = (("description",),)


def text_problem(value: str, multiline: bool = False) -> str | None:
    """Why a string is refused whatever field it is in, or None: a NUL, a lone UTF-16 surrogate
    (text_checks.not_text_at), any other control character (`multiline`: but newline and tab). The message
    never repeats the input (it may not even be encodable)."""
    at = not_text_at(value)
    if at >= 0:
        if value[at] == NUL:
            return f"must not contain a NUL character (found at position {at})"
        return (f"must not contain a lone UTF-16 surrogate (U+{ord(value[at]):04X} at position {at}); "
                "send valid Unicode")
    found = (_CONTROL_BUT_LINES if multiline else _CONTROL).search(value)
    if found is None:
        return None
    allowed = " (newline and tab are allowed here)" if multiline else ""
    return (f"must not contain a control character (U+{ord(found.group()):04X} at position {found.start()})"
            f"{allowed}")


def is_multiline(location: Location) -> bool:
    """Whether the string at a location of a study body may hold newlines and tabs (`description`)."""
    return tuple(str(p) for p in location) in MULTILINE_STRINGS


def length_problem(value: str, limit: int) -> str | None:
    if len(value) <= limit:
        return None
    return f"is {len(value)} characters long; the limit is {limit}"


def string_limit(location: Location) -> int:
    """The longest string allowed at a location of a study body."""
    for pattern, limit in LONG_STRINGS:
        if len(pattern) == len(location) and all(p in ("*", str(part)) for p, part in zip(pattern, location)):
            return limit
    return MAX_STRING_LENGTH


# ---------------------------------------------------------------- whole values


def value_problems(data: Any, string_limit_at: Callable[[Location], int] = string_limit,
                   limit: int = 20) -> list[Problem]:
    """Every string, number and key of a decoded JSON / YAML value checked at once, without recursion:
    NUL / lone surrogates and length in strings and keys, NaN / Infinity, integers past 64 bits, binary data,
    nesting past MAX_DEPTH. Returns at most `limit` problems, in document order."""
    problems: list[Problem] = []
    stack: list[tuple[Location, Any]] = [((), data)]
    while stack and len(problems) < limit:
        location, value = stack.pop()
        problem = _scalar_problem(value, location, string_limit_at)
        if problem is not None:
            problems.append(Problem(location, problem))
            continue
        if not isinstance(value, (dict, list, tuple)):
            continue
        if len(location) >= MAX_DEPTH:
            problems.append(Problem(location, _too_deep(MAX_DEPTH)))
            continue
        children: list[tuple[Location, Any]] = []
        items: Iterable[tuple[Any, Any]] = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            why = _key_problem(key)
            if why is not None:  # named by the object that holds it: the key itself may not be printable
                problems.append(Problem(location, why))
                break
            children.append(((*location, key), child))
        else:
            stack.extend(reversed(children))
    return problems


def _key_problem(key: Any) -> str | None:
    if isinstance(key, str):
        why = text_problem(key) or length_problem(key, MAX_STRING_LENGTH)
        return None if why is None else f"a key {why}"
    if isinstance(key, int) and not isinstance(key, bool):
        return None  # a list index, or a YAML number the model then refuses by name
    return "keys must be strings"


def _scalar_problem(value: Any, location: Location, string_limit_at: Callable[[Location], int]) -> str | None:
    if isinstance(value, str):
        return text_problem(value, is_multiline(location)) or length_problem(value, string_limit_at(location))
    if isinstance(value, (bytes, bytearray)):
        return "must be text, not binary data"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value!r} (NaN and Infinity are refused)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        return f"is out of range: integers must lie within +-{MAX_INTEGER} (2**63 - 1)"
    return None


# ---------------------------------------------------------------- Hugging Face dataset ids

_HUB_PART = re.compile(r"[A-Za-z0-9_.\-]+")
# Names `datasets.load_dataset` resolves to one of its own builders (json, csv, ...), which then read data files
# from the worker's working directory: never a hub dataset. tests/test_validation.py keeps this in step with
# the installed `datasets`.
PACKAGED_BUILDERS = frozenset({
    "arrow", "audiofolder", "cache", "conll", "csv", "eval", "fasta", "fastq", "genbank", "generator", "harbor",
    "hdf5", "iceberg", "imagefolder", "json", "lance", "meshfolder", "mmcif", "niftifolder", "pandas", "parquet",
    "pdb", "pdffolder", "spark", "sql", "text", "tsfile", "videofolder", "vortex", "webdataset", "xml",
})


def hub_id_problem(value: str) -> str | None:
    """Why `value` is not a Hugging Face hub dataset id (`name` or `org/name`), or None.

    The hub's rules: letters, digits, '-', '_' and '.'; a part is 1-96 characters and neither starts nor ends
    with '-' or '.'; no '--' or '..'; not ending in '.git'. Hence never a path (absolute, relative with '..',
    Windows), never a URL, and at most one '/'. Names of the `datasets` library's own builders are refused too."""
    why = _hub_name_problem(value, "dataset")
    if why is not None:
        return why
    parts = value.split("/")
    if len(parts) == 1 and value.lower() in PACKAGED_BUILDERS:
        return (f"{value!r} names one of the datasets library's file builders, which would read files on the "
                "worker; upload the data (dataset_id) or use path instead")
    if len(parts) == 2 and parts[0].lower() == "buckets":
        return "a hub dataset id is 'name' or 'org/name', never a path or a URL: 'buckets/...' names a storage " \
               "bucket, not a dataset"
    return None


def _hub_name_problem(value: str, kind: str) -> str | None:
    """The hub's rules for a repository id (`name` or `org/name`) of a dataset or a model, or None."""
    why = text_problem(value)
    if why is not None:
        return why
    if len(value) > MAX_HUB_ID_LENGTH:
        return f"a hub {kind} id is at most {MAX_HUB_ID_LENGTH} characters (got {len(value)})"
    hint = f"a hub {kind} id is 'name' or 'org/name', never a path or a URL"
    if value.startswith(("/", "\\", "~")) or ":" in value or "\\" in value:
        return f"{hint} ({_PATH_HINT[kind]})"
    if ".." in value or "--" in value:
        return f"{hint}: '..' and '--' are not allowed"
    parts = value.split("/")
    if len(parts) > 2:
        return f"{hint}; it has {len(parts) - 1} '/'"
    for part in parts:
        if not part:
            return f"{hint}; it has an empty part"
        if len(part) > MAX_HUB_PART_LENGTH:
            return f"each part of a hub {kind} id is at most {MAX_HUB_PART_LENGTH} characters"
        if not _HUB_PART.fullmatch(part):
            return f"{hint}: use letters, digits, '-', '_' and '.' only"
        if part[0] in "-." or part[-1] in "-.":
            return f"{hint}: a part may not start or end with '-' or '.'"
    if value.lower().endswith(".git"):
        return f"{hint}: it may not end in '.git'"
    return None


_PATH_HINT = {"dataset": "use path for files under STSWEEP_DATA_ROOT",
              "model": "a folder on the workers is an absolute path under STSWEEP_MODELS_ROOT"}


# ---------------------------------------------------------------- base models


def model_ref_problem(value: str) -> str | None:
    """Why `value` is neither a hub model id (`name` or `org/name`, the hub's rules) nor a model folder on the
    workers (an absolute path without '..'), or None. Whether the folder lies under the models root is
    `models_root_problem`'s (it needs the setting)."""
    if value.startswith("/"):
        if ".." in value.split("/"):
            return "a model folder may not contain '..' (give its absolute path under STSWEEP_MODELS_ROOT)"
        return text_problem(value)
    return _hub_name_problem(value, "model")


def model_folder_without_root(value: str) -> str | None:
    """A model folder where no models root is configured: always refused."""
    return "a model folder needs a models root (STSWEEP_MODELS_ROOT)" if value.startswith("/") else None


def models_root_problem(value: str, models_root: PurePath) -> str | None:
    """Why a model folder (an absolute path) lies outside `models_root`, told lexically (a worker resolves links
    again), or None. A hub model id is not a folder and passes."""
    if not value.startswith("/"):
        return None
    folder = PurePosixPath(posixpath.normpath(value))
    root = PurePosixPath(posixpath.normpath(str(models_root)))
    if folder == root or not folder.is_relative_to(root):
        return (f"the folder {value!r} is not under the models root {str(root)!r} (STSWEEP_MODELS_ROOT); put the "
                "model there, or give a hub model id")
    return None


# A split name as the `datasets` library allows one (`naming._split_re`, ASCII only); a config name as the hub
# allows one (no '/', '\\', ':', '..'). Neither is ever a path, a pattern or a URL: the worker matches them
# against the repository's card and files only (workers/hub_card.py).
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-+=, ]*")


def hub_name_problem(value: str, what: str) -> str | None:
    """Why `value` is not a hub data set's split name (`what` "split") or config name ("config"), or None."""
    why = text_problem(value) or length_problem(value, MAX_STRING_LENGTH)
    if why is not None:
        return why
    if what == "split":
        if not _SPLIT_NAME.fullmatch(value):
            return ("a split name is letters, digits and '_' (parts joined by '.'), e.g. 'train'; never a path, "
                    "a pattern, a slice or a URL")
        return None
    if not _CONFIG_NAME.fullmatch(value) or ".." in value:
        return ("a config name is letters, digits, '_', '-', '.', '+', '=', ',' and spaces, e.g. 'default'; never a "
                "path or a URL")
    return None


# ---------------------------------------------------------------- grid size


def grid_size_problem(counts: dict[str, int], cap: int, setting: str = "STSWEEP_MAX_GRID_SIZE") -> str | None:
    """Whether a grid of these per-parameter value counts fits under `cap`: computed arithmetically (the product
    of the counts), never by building the grid."""
    size = math.prod(counts.values())
    if size <= cap:
        return None
    shown = " x ".join(f"{count} ({name})" for name, count in counts.items())
    return f"the grid has {size} combinations ({shown}), over the limit of {cap} ({setting})"


# ---------------------------------------------------------------- JSON nesting, before parsing


def json_depth_problem(body: bytes, max_depth: int = MAX_DEPTH) -> Problem | None:
    """Scan raw JSON for nesting deeper than `max_depth` without parsing it (a parser would recurse): the
    location of the first value that is too deep, or None. Bytes are decoded as `json.loads` decodes them; what
    cannot be decoded is left for the parser to refuse."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return None
    location = json_too_deep_at(text, max_depth)
    return None if location is None else Problem(location, _too_deep(max_depth))


def _too_deep(max_depth: int) -> str:
    return f"nests deeper than {max_depth} levels of objects and arrays"
