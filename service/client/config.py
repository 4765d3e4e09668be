"""Where the CLI finds its server and API token: client-side settings, kept out of the server's Settings.

Precedence, first found wins, for the URL and the token separately:

1. the flags ``--url`` / ``--token``;
2. the environment: ``STSWEEP_URL`` / ``STSWEEP_TOKEN``;
3. a TOML config file with the keys ``url`` and ``token``: ``$STSWEEP_CONFIG`` when set, otherwise
   ``~/.config/stsweep/config.toml``;
4. the URL defaults to ``http://127.0.0.1:8000``; there is no default token.

The limits that protect the client from a broken or hostile server (download cap, timeouts, slowest body; see
service.client.limits) come from the environment, else the same file, else their defaults; a file that cannot
be read is ignored for them when the URL and token did not need it.

An empty value counts as unset. The config file is read only when a flag and the environment left something
unresolved, so a broken file does not get in the way of ``--url``/``--token``. A missing default file is fine;
a missing ``$STSWEEP_CONFIG`` file is an error (it was asked for by name).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.client.limits import CONFIG_KEYS, ClientLimits, LimitError, resolve_limits

DEFAULT_URL = "http://127.0.0.1:8000"
ENV_URL = "STSWEEP_URL"
ENV_TOKEN = "STSWEEP_TOKEN"
ENV_CONFIG = "STSWEEP_CONFIG"


class ClientConfigError(ValueError):
    """A config file that cannot be read or parsed, or a URL that is not http(s)."""


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None
    url_source: str  # "--url", "STSWEEP_URL", "<config path>" or "default"
    token_source: str | None  # None when there is no token
    config_path: Path  # the file that was (or would have been) read
    limits: ClientLimits = ClientLimits()


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$STSWEEP_CONFIG`` when set, otherwise ``~/.config/stsweep/config.toml``."""
    env = os.environ if env is None else env
    named = env.get(ENV_CONFIG)
    if named:
        return Path(named).expanduser()
    return Path.home() / ".config" / "stsweep" / "config.toml"


def read_config_file(path: Path, *, required: bool = False) -> dict[str, str]:
    """The ``url`` / ``token`` keys and the limits (service.client.limits.CONFIG_KEYS) of a TOML file, as text
    ({} when the file is absent and not required). Other keys are ignored, so a newer file still works with an
    older client."""
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise ClientConfigError(f"config file {path} (from {ENV_CONFIG}) does not exist") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ClientConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ClientConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    out: dict[str, str] = {}
    for key in ("url", "token", *CONFIG_KEYS):
        value = data.get(key)
        if value is None:
            continue
        if key in CONFIG_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            kind = "a string" if key in ("url", "token") else "a number or a string"
            raise ClientConfigError(f"config file {path}: {key} must be {kind}")
        if value.strip():
            out[key] = value.strip()
    return out


def _check_url(url: str, source: str) -> str:
    if not url.lower().startswith(("http://", "https://")):
        raise ClientConfigError(f"server URL {url!r} (from {source}) must start with http:// or https://")
    return url.rstrip("/")


def resolve(url: str | None = None, token: str | None = None,
            env: Mapping[str, str] | None = None) -> ClientConfig:
    """The server URL and token from flags (``url``/``token``), the environment, the config file, the default."""
    env = os.environ if env is None else env
    path = config_path(env)
    file_values: dict[str, str] | None = None

    def from_file(key: str) -> str | None:
        nonlocal file_values
        if file_values is None:
            file_values = read_config_file(path, required=bool(env.get(ENV_CONFIG)))
        return file_values.get(key)

    def pick(key: str, flag: str | None, flag_name: str, env_name: str) -> tuple[str | None, str | None]:
        if flag and flag.strip():
            return flag.strip(), flag_name
        if env.get(env_name, "").strip():
            return env[env_name].strip(), env_name
        value = from_file(key)
        return (value, str(path)) if value else (None, None)

    chosen_url, url_source = pick("url", url, "--url", ENV_URL)
    if chosen_url is None:
        chosen_url, url_source = DEFAULT_URL, "default"
    chosen_token, token_source = pick("token", token, "--token", ENV_TOKEN)
    assert url_source is not None

    def limit_from_file(key: str) -> str | None:
        try:
            return from_file(key)
        except ClientConfigError:  # url and token did not need the file (or it failed above already)
            return None

    try:
        limits = resolve_limits(env, limit_from_file, str(path))
    except LimitError as exc:
        raise ClientConfigError(str(exc)) from None
    return ClientConfig(url=_check_url(chosen_url, url_source), token=chosen_token, url_source=url_source,
                        token_source=token_source, config_path=path, limits=limits)
