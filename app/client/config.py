"""Client configuration: flags > environment (STEPH_URL, STEPH_API_KEY) > config file.

Config file (TOML), from `--config PATH`, else $STEPH_CLIENT_CONFIG, else `$XDG_CONFIG_HOME/steph/client.toml`
(default `~/.config/steph/client.toml`); a missing default file is fine, a missing named file is an error:

    url = "https://steph.example.org"
    api_key = "…"               # or: key_file = "/etc/steph/key" (first line; relative to this file)
    timeout = 120               # seconds per request
    retries = 5                 # extra attempts on connection errors, 429 and 5xx
    backoff = 0.5               # first retry delay in seconds, doubled each time (with jitter)
    workers = 4                 # default --workers for `score`
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_URL = "STEPH_URL"
ENV_KEY = "STEPH_API_KEY"
ENV_CONFIG = "STEPH_CLIENT_CONFIG"


class ConfigError(ValueError):
    """The configuration is missing something or malformed (exit code 2)."""


@dataclass(frozen=True)
class ClientConfig:
    """Resolved settings. `api_key` is excluded from repr; `origin` says where url and key came from."""

    url: str
    api_key: str = field(repr=False)
    timeout: float = 120.0
    retries: int = 5
    backoff: float = 0.5
    workers: int = 4
    origin: dict[str, str] = field(default_factory=dict)


def default_config_path(env: Mapping[str, str]) -> Path:
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "steph" / "client.toml"


def read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    """Parse the TOML file (a `[client]` table or top-level keys); {} when absent and not required."""
    if not path.is_file():
        if required:
            raise ConfigError(f"config file {path} not found: create it or drop --config")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = data.get("client", data) if isinstance(data.get("client"), dict) else data
    if "key_file" in data and "api_key" not in data:
        key_path = Path(str(data["key_file"])).expanduser()
        key_path = key_path if key_path.is_absolute() else path.parent / key_path
        try:
            data["api_key"] = key_path.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError):
            raise ConfigError(f"key_file {key_path} (from {path}) cannot be read or is empty") from None
    return data


def _number(value: Any, name: str, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None


def resolve_config(
    *,
    url: str | None = None,
    api_key: str | None = None,
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    require_key: bool = True,
) -> ClientConfig:
    """Combine flags, environment and the config file; raises ConfigError when url (or key) is missing."""
    env = os.environ if env is None else env
    path = Path(config_path).expanduser() if config_path else default_config_path(env)
    file_cfg = read_config_file(path, required=config_path is not None or bool(env.get(ENV_CONFIG)))
    origin: dict[str, str] = {}

    def pick(name: str, flag: Any, env_name: str | None, file_key: str) -> Any:
        for source, value in (
            ("flag", flag),
            ("env", env.get(env_name) if env_name else None),
            (f"config {path}", file_cfg.get(file_key)),
        ):
            if value not in (None, ""):
                origin[name] = source
                return value
        return None

    final_url = pick("url", url, ENV_URL, "url")
    final_key = pick("api_key", api_key, ENV_KEY, "api_key")
    if not final_url:
        raise ConfigError(f'no service URL: pass --url, set {ENV_URL}, or put url = "…" in {path}')
    if require_key and not final_key:
        raise ConfigError(f"no API key: pass --key, set {ENV_KEY}, or put api_key / key_file in {path}")
    return ClientConfig(
        url=str(final_url).rstrip("/"),
        api_key=str(final_key or ""),
        timeout=_number(file_cfg.get("timeout", 120.0), "timeout", float),
        retries=_number(file_cfg.get("retries", 5), "retries", int),
        backoff=_number(file_cfg.get("backoff", 0.5), "backoff", float),
        workers=_number(file_cfg.get("workers", 4), "workers", int),
        origin=origin,
    )
