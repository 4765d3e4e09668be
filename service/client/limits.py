"""How much the client trusts a server: download cap, timeouts and the slowest body it waits for.

=============================  ======================  =========  ============================================
environment                    config file key         default    what
=============================  ======================  =========  ============================================
STSWEEP_MAX_DOWNLOAD_BYTES     max_download_bytes      4GiB       largest checkpoint `pull` downloads (also
                                                                  `--max-bytes`); never more than the size the
                                                                  server announced
STSWEEP_CONNECT_TIMEOUT        connect_timeout         10         seconds to connect
STSWEEP_READ_TIMEOUT           read_timeout            60         seconds of silence on a connection; also the
                                                                  longest wait for an answer's headers in total
STSWEEP_MIN_DOWNLOAD_RATE      min_download_rate       1024       bytes per second, on average over each
                                                                  read_timeout: a slower body is abandoned (0: off)
=============================  ======================  =========  ============================================

Sizes take a binary suffix: 512K, 64MiB, 4G (1K = 1024 bytes). JSON answers (and error answers) are capped at
``MAX_ANSWER_BYTES``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

GiB = 1024**3
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


class LimitError(ValueError):
    """A limit that is not a valid value; the message starts with the setting's name."""


@dataclass(frozen=True)
class ClientLimits:
    max_download_bytes: int = 4 * GiB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    min_download_rate: int = 1024  # bytes per second over each read_timeout window; 0: no floor
    max_answer_bytes: int = MAX_ANSWER_BYTES


# setting -> (environment variable, config file key)
SOURCES: dict[str, tuple[str, str]] = {
    "max_download_bytes": ("STSWEEP_MAX_DOWNLOAD_BYTES", "max_download_bytes"),
    "connect_timeout": ("STSWEEP_CONNECT_TIMEOUT", "connect_timeout"),
    "read_timeout": ("STSWEEP_READ_TIMEOUT", "read_timeout"),
    "min_download_rate": ("STSWEEP_MIN_DOWNLOAD_RATE", "min_download_rate"),
}
CONFIG_KEYS = tuple(key for _, key in SOURCES.values())


def parse_size(value: object, name: str, *, allow_zero: bool = False) -> int:
    """Bytes in ``value``: a whole number, optionally with a binary suffix (K, M, G, T; KiB, MB, ...)."""
    if isinstance(value, bool):
        raise LimitError(f"{name}: expected a number of bytes like 4GiB, not {value!r}")
    match = _SIZE.fullmatch(str(value).strip())
    if match is None:
        raise LimitError(f"{name}: expected a number of bytes like 4GiB or 500M, not {value!r}")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if size == 0 and not allow_zero:
        raise LimitError(f"{name}: must be more than 0 bytes")
    return size


def parse_seconds(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise LimitError(f"{name}: expected seconds, not {value!r}")
    try:
        seconds = float(str(value).strip())
    except ValueError:
        raise LimitError(f"{name}: expected seconds, not {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise LimitError(f"{name}: must be a positive number of seconds, not {value!r}")
    return seconds


_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "max_download_bytes": parse_size,
    "connect_timeout": parse_seconds,
    "read_timeout": parse_seconds,
    "min_download_rate": lambda v, n: parse_size(v, n, allow_zero=True),
}


def resolve_limits(env: Mapping[str, str], file_values: Callable[[str], object | None],
                   file_name: str) -> ClientLimits:
    """Each limit from the environment, else the config file (``file_values(key)``), else its default."""
    found: dict[str, Any] = {}
    for field, (env_name, key) in SOURCES.items():
        if env.get(env_name, "").strip():
            found[field] = _PARSERS[field](env[env_name], env_name)
            continue
        value = file_values(key)
        if value is not None and str(value).strip():
            found[field] = _PARSERS[field](value, f"{key} in {file_name}")
    return replace(ClientLimits(), **found)
