"""Where the settings come from besides the environment: the config file (YAML, JSON or TOML) and
secret files (``<field>_file: /path`` inside it, ``UNSUB_<FIELD>_FILE=/path`` outside it).

``worker.settings`` plugs :class:`ConfigFileSource` and :class:`EnvFileSecretsSource` into its sources;
``config_path`` carries the file ``load_settings`` was given to the source that reads it.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic_settings import PydanticBaseSettingsSource

from worker.config_problems import file_problem
from worker.errors import ConfigError

ENV_PREFIX: Final = "UNSUB_"
#: Names of fields that hold secrets, anywhere in the settings.
SECRET_FIELDS: Final = frozenset(
    {"api_key", "client_secret", "refresh_token", "password", "token", "flower_password", "sentinel_password"}
)

config_path: ContextVar[Path | None] = ContextVar("unsubconfig_path", default=None)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML, JSON or TOML config file into a mapping, resolving ``*_file`` secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: cannot read it ({exc.strerror})"]) from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError([file_problem(path, exc)]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: expected a mapping at the top level"])
    resolved: dict[str, Any] = resolve_secret_files(data, base=path.parent)
    return resolved


def resolve_secret_files(data: Any, *, base: Path, where: str = "") -> Any:
    """Replace every ``<field>_file: path`` with ``<field>: <file contents>`` (trailing newline cut)."""
    if isinstance(data, list):
        return [resolve_secret_files(v, base=base, where=f"{where}[{i}]") for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str) and key.endswith("_file") and key[: -len("_file")] in SECRET_FIELDS:
            field = key[: -len("_file")]
            out[field] = _read_secret(base / str(value), f"{where}.{key}".lstrip("."))
        else:
            out[key] = resolve_secret_files(value, base=base, where=f"{where}.{key}".lstrip("."))
    return out


def _read_secret(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read secret file {path} ({exc.strerror})"]) from None


class ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the config file named by ``load_settings(config=...)`` or ``UNSUB_CONFIG``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path.get()
        return read_config_file(path) if path else {}


class EnvFileSecretsSource(PydanticBaseSettingsSource):
    """``UNSUB_<FIELD>_FILE=/path`` reads the value of ``<field>`` from that file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            env_name = f"{ENV_PREFIX}{name.upper()}_FILE"
            if path := os.environ.get(env_name):
                values[name] = _read_secret(Path(path), env_name)
        return values
