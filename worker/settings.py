"""The one typed settings object, built once.

Sources, highest precedence first:

1. keyword arguments (tests, the CLI's options);
2. environment variables with the ``UNSUB_`` prefix (``UNSUB_BROKER_URL``; nested values as JSON,
   e.g. ``UNSUB_CONNECTIONS='[...]'``);
3. ``UNSUB_<FIELD>_FILE`` environment variables naming a file that holds the value (Kubernetes secrets);
4. the config file named by ``UNSUB_CONFIG`` (YAML, JSON or TOML). Inside it, any secret may be given
   as ``<field>_file: /path`` instead of inline;
5. the defaults below.

``load_settings()`` builds the object and turns every validation problem into one
:class:`~worker.errors.ConfigError` whose lines name the bad fields and never echo a value.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from producer.connect import SentinelOptions, is_sentinel_url
from worker import providers
from worker.config_problems import env_problem, validation_problems
from worker.config_sources import ENV_PREFIX as ENV_PREFIX
from worker.config_sources import SECRET_FIELDS as SECRET_FIELDS
from worker.config_sources import (
    ConfigFileSource,
    EnvFileSecretsSource,
    config_path,
    read_config_file,
)
from worker.connection import DAY_S as DAY_S
from worker.connection import HOUR_S as HOUR_S
from worker.connection import BreakerPolicy as BreakerPolicy
from worker.connection import ConnectionBase as ConnectionBase
from worker.connection import RetryPolicy as RetryPolicy
from worker.errors import ConfigError
from worker.urls import RedisUse, check_redis_url

CONFIG_ENV_VAR: Final = "UNSUB_CONFIG"
#: The settings that hold Redis URLs (any may be a ``sentinel://`` one).
REDIS_URL_FIELDS: Final = ("broker_url", "result_backend", "redis_url")
DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"

#: A Redis URL Celery (broker, result backend) can open; checked by ``worker.urls``.
CeleryRedisUrl = Annotated[str, AfterValidator(partial(check_redis_url, use=RedisUse.CELERY))]
#: A Redis URL redis-py (the state store) can open.
StateRedisUrl = Annotated[str, AfterValidator(partial(check_redis_url, use=RedisUse.STATE))]


def _rebuild_connections() -> None:
    """Make ``Settings`` accept the connections of every registered provider (a test's too)."""
    field = Settings.model_fields["connections"]
    field.annotation = list[connection_type()]  # type: ignore[assignment,misc]
    Settings.model_rebuild(force=True)


def connection_type() -> Any:
    """The union of every registered provider's connection model, told apart by ``type``."""
    return Annotated[Union[tuple(providers.connection_models())], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:
    Connection = ConnectionBase
else:
    Connection = connection_type()


class Settings(BaseSettings):
    """Everything the workers, the scheduler and the CLI need, validated once at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False, env_ignore_empty=True
    )

    broker_url: CeleryRedisUrl = DEFAULT_REDIS_URL
    #: Celery result backend; defaults to the broker URL.
    result_backend: CeleryRedisUrl | None = None
    #: Redis that holds the durable buffers, retries, dead letters and status; defaults to the broker URL.
    redis_url: StateRedisUrl | None = None
    #: The master name the Sentinels monitor; required when any Redis URL is a ``sentinel://`` one.
    sentinel_master: str | None = Field(
        default=None, min_length=1, max_length=255, pattern=r"^[^\s]+$", validate_default=True
    )
    #: The Sentinels' own password (``requirepass`` in sentinel.conf); the data nodes' is in the URL.
    sentinel_password: SecretStr | None = None
    #: Replicas that must confirm each message `unsub send` / `unsub import` publish (WAIT), so a
    #: failover right after cannot lose it. 0: the primary's answer is enough.
    publish_replicas: int = Field(default=0, ge=0, le=16)
    #: How long a publish waits for those replicas before it counts as failed.
    publish_replica_timeout_s: float = Field(default=1.0, gt=0, le=60)

    connections: list[Connection] = Field(default_factory=list)

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    #: How often waiting records are flushed to providers even when no batch is full.
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Longest a delivery task drains one connection before handing over.
    drain_budget_s: float = Field(default=10.0, gt=0, le=600)
    #: A record claimed by a worker that went silent this long is taken over by another.
    reclaim_idle_s: float = Field(default=120.0, ge=1, le=DAY_S)
    #: Redis broker visibility timeout: unacknowledged Celery messages come back after it.
    visibility_timeout_s: float = Field(default=900.0, ge=1, le=DAY_S)
    #: The kombu sweep that returns unacknowledged messages runs about this often.
    unacked_restore_interval_s: float = Field(default=10.0, gt=0, le=3600)
    #: Same email, connection and target seen within this window: delivered once. 0 turns it off.
    dedupe_window_s: float = Field(default=600.0, ge=0, le=7 * DAY_S)
    #: Largest intake message taken in (bytes, after decompression); a larger one is dead-lettered.
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=512 * 1024 * 1024)
    #: Most requests one intake message may hold (the producer sends at most 5000 a message).
    max_requests_per_message: int = Field(default=5000, ge=1, le=100_000)
    #: How long request status (the compliance evidence) is kept.
    status_retention_s: float = Field(default=30 * DAY_S, ge=HOUR_S, le=400 * DAY_S)
    #: Dead letters older than this are deleted (they hold clear addresses): export them first.
    dlq_retention_s: float = Field(default=90 * DAY_S, ge=DAY_S, le=3 * 365 * DAY_S)
    #: How long Celery keeps each task's result (counts).
    result_expires_s: float = Field(default=DAY_S, ge=60, le=30 * DAY_S)
    #: Worker processes per `unsub worker` (Celery prefork concurrency).
    worker_concurrency: int = Field(default=2, ge=1, le=64)
    #: SIGTERM: finish or hand back the in-flight batch within this time, then stop.
    shutdown_timeout_s: float = Field(default=30.0, ge=1, le=3600)

    flower_user: str | None = None
    flower_password: SecretStr | None = None
    #: Flower's remote control (shutdown, pool, queues, limits), revoke/terminate and task
    #: publishing; off unless set (Flower is read-only).
    flower_allow_control: bool = False
    #: Where the worker writes its liveness heartbeat and readiness files.
    health_dir: Path = Path("/tmp/unsub-health")  # noqa: S108 - a per-pod tmpfs in deployment
    metrics_port: int = Field(default=9108, ge=1, le=65535)
    #: Address the Prometheus exporter listens on (0.0.0.0 in a pod, so Prometheus reaches it).
    metrics_address: str = Field(default="127.0.0.1", min_length=1, max_length=255)

    @field_validator("sentinel_master")
    @classmethod
    def _master_for_sentinel_urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            named = [f for f in REDIS_URL_FIELDS if is_sentinel_url(str(info.data.get(f) or ""))]
            if named:
                raise ValueError(
                    f"required: {named[0]} is a sentinel:// URL, which needs the master name the "
                    "Sentinels monitor (e.g. sentinel_master: mymaster)"
                )
        return value

    @model_validator(mode="after")
    def _unique_connection_names(self) -> Settings:
        seen: set[str] = set()
        for conn in self.connections:
            if conn.name in seen:
                raise ValueError(f"connection name {conn.name!r} is used twice")
            seen.add(conn.name)
        return self

    @property
    def state_redis_url(self) -> str:
        return self.redis_url or self.broker_url

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.broker_url

    @property
    def sentinel(self) -> SentinelOptions:
        """``sentinel_master`` and ``sentinel_password`` as keyword arguments of
        ``producer.connect.redis_client``, ``Producer`` and ``worker.redis_client.redis_for``."""
        password = self.sentinel_password.get_secret_value() if self.sentinel_password else None
        return SentinelOptions(sentinel_master=self.sentinel_master, sentinel_password=password)

    def connection(self, name: str) -> Connection:
        for conn in self.connections:
            if conn.name == name:
                return conn
        raise KeyError(name)

    @property
    def enabled_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.enabled]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            EnvFileSecretsSource(settings_cls),
            ConfigFileSource(settings_cls),
        )


# ---------------------------------------------------------------------------------------------
# Building it once

_settings: Settings | None = None


providers.on_change(_rebuild_connections)


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings.

    ``config`` (else ``UNSUB_CONFIG``) names the config file. Raises :class:`ConfigError` that lists
    every problem as ``field.path: message``, with connection names in place of list indexes.
    """
    path = Path(config) if config else _env_config_path()
    token = config_path.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except SettingsError as exc:  # an UNSUB_* value that is not the JSON it must be
        raise ConfigError([env_problem(exc, ENV_PREFIX)]) from None
    finally:
        config_path.reset(token)


def _env_config_path() -> Path | None:
    value = os.environ.get(CONFIG_ENV_VAR)
    return Path(value) if value else None


def _describe(exc: ValidationError, path: Path | None) -> list[str]:
    return validation_problems(exc, _raw_connections(path), providers.types())


def _raw_connections(path: Path | None) -> list[Any]:
    """The connections as written (environment first, as for the settings), to name them in problems."""
    text = next((v for k, v in os.environ.items() if k.upper() == f"{ENV_PREFIX}CONNECTIONS" and v), None)
    try:
        data = json.loads(text) if text else read_config_file(path).get("connections") if path else None
    except (ValueError, ConfigError):
        return []
    return list(data) if isinstance(data, list) else []


def get_settings() -> Settings:
    """The process's settings, built on first use."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def use_settings(settings: Settings | None) -> None:
    """Install settings built elsewhere (the CLI's ``--config``, tests); ``None`` forgets them."""
    global _settings
    _settings = settings
