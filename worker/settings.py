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
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from limits import parse_many
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from producer.connect import SentinelOptions, is_sentinel_url
from worker.config_problems import env_problem, validation_problems
from worker.config_sources import ENV_PREFIX as ENV_PREFIX
from worker.config_sources import SECRET_FIELDS as SECRET_FIELDS
from worker.config_sources import (
    ConfigFileSource,
    EnvFileSecretsSource,
    config_path,
    read_config_file,
)
from worker.errors import ConfigError
from worker.urls import RedisUse, check_provider_url, check_redis_url

CONFIG_ENV_VAR: Final = "UNSUB_CONFIG"
#: The settings that hold Redis URLs (any may be a ``sentinel://`` one).
REDIS_URL_FIELDS: Final = ("broker_url", "result_backend", "redis_url")
DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
HOUR_S: Final = 3600.0
DAY_S: Final = 24 * HOUR_S

#: A Redis URL Celery (broker, result backend) can open; checked by ``worker.urls``.
CeleryRedisUrl = Annotated[str, AfterValidator(partial(check_redis_url, use=RedisUse.CELERY))]
#: A Redis URL redis-py (the state store) can open.
StateRedisUrl = Annotated[str, AfterValidator(partial(check_redis_url, use=RedisUse.STATE))]


def _base_url(url: AnyHttpUrl) -> AnyHttpUrl:
    check_provider_url(str(url), base=True)
    return url


def _endpoint_url(url: AnyHttpUrl) -> AnyHttpUrl:
    check_provider_url(str(url), base=False)
    return url


#: A provider API root: no credentials, no query (the adapter appends its own path and parameters).
BaseUrl = Annotated[AnyHttpUrl, AfterValidator(_base_url)]
#: A provider endpoint (token URL): no credentials.
EndpointUrl = Annotated[AnyHttpUrl, AfterValidator(_endpoint_url)]


class ProviderType(StrEnum):
    """The provider operations the system can deliver to."""

    CC_PARTNER = "cc_partner"
    CC_CONTACTS = "cc_contacts"
    WHATCOUNTS = "whatcounts"
    INSIDER = "insider"
    EASYTOOLS = "easytools"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """When a record whose delivery failed transiently is tried again.

    Waits are exponential with full jitter: after the n-th failed attempt the record waits a random
    time in ``[0, min(cap_s, base_s * 2**(n-1))]``, never less than the provider's ``Retry-After``.
    The last attempt is made at ``max_age_s`` after the record was accepted (so it still lands inside
    the 48-hour window Gmail and Yahoo expect); if that fails too, or ``max_attempts`` attempts
    failed, the record is dead-lettered with the last error.
    """

    #: High enough that ``max_age_s`` is what normally ends the schedule (about 80 waits of up to
    #: ``cap_s`` fill 36 hours).
    max_attempts: int = Field(default=80, ge=1, le=1000)
    base_s: float = Field(default=2.0, gt=0, le=HOUR_S)
    cap_s: float = Field(default=HOUR_S, gt=0, le=DAY_S)
    max_age_s: float = Field(default=36 * HOUR_S, gt=0, le=30 * DAY_S)


class BreakerPolicy(_Strict):
    """Circuit breaker: after ``failure_threshold`` failed batches in a row the connection rests.

    While it is open, one probe batch is sent after each cool-down: the first lasts ``cooldown_s``,
    each failed probe doubles it, never past ``max_cooldown_s``. So however long the outage, a probe
    goes out at least every ``max_cooldown_s`` and delivery resumes within about that long after the
    provider is back.
    """

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    cooldown_s: float = Field(default=5.0, gt=0, le=DAY_S)
    #: The longest wait between two probes of an open circuit.
    max_cooldown_s: float = Field(default=20.0, gt=0, le=DAY_S)


def _check_rate_limit(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                "not a rate limit: use e.g. '4/second;10000/day' (see the limits package)"
            ) from None
    return value


RateLimitText = Annotated[str | None, Field(default=None, examples=["4/second;10000/day"])]


class ConnectionBase(_Strict):
    """What every provider connection has."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    base_url: BaseUrl
    enabled: bool = True
    #: Requests the provider allows, shared by every worker (the ``limits`` notation).
    rate_limit: RateLimitText = None
    #: Records in one provider call; capped by the provider's own maximum.
    batch_size: int | None = Field(default=None, ge=1, le=10_000)
    #: Delivery tasks that may drain this connection at once (isolates a slow provider).
    max_parallel: int = Field(default=4, ge=1, le=64)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str | None) -> str | None:
        return _check_rate_limit(value)


class CcPartnerConnection(ConnectionBase):
    """Constant Contact technology partner: bulk unsubscribe under one client account."""

    type: Literal[ProviderType.CC_PARTNER]
    api_key: SecretStr
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    #: The Cognito client-credentials endpoint that issues the one-hour partner JWT.
    token_url: EndpointUrl
    encoded_account_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    delete_contacts: bool = False
    rate_limit: RateLimitText = "4/second;10000/day"
    token_rate_limit: str = "1/second"

    @field_validator("token_rate_limit")
    @classmethod
    def _valid_token_rate_limit(cls, value: str) -> str:
        _check_rate_limit(value)
        return value

    #: Re-authenticate this long before the JWT expires.
    token_refresh_margin_s: float = Field(default=600.0, ge=0, le=HOUR_S)


class CcContactsConnection(ConnectionBase):
    """Constant Contact v3 contacts API with an OAuth2 user token (24 h) and a refresh token."""

    type: Literal[ProviderType.CC_CONTACTS]
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    token_url: EndpointUrl
    #: First refresh token; rotated ones are stored in Redis and take precedence.
    refresh_token: SecretStr
    rate_limit: RateLimitText = "4/second;10000/day"
    token_refresh_margin_s: float = Field(default=HOUR_S, ge=0, le=DAY_S)
    #: One contact per call: this many calls of a batch in flight at once (each takes its turn
    #: from the shared ``rate_limit``). A batch is ``3 * parallel_calls`` records unless ``batch_size``
    #: says otherwise or the rate limit cuts it (see ``worker.adapters.parallel``).
    parallel_calls: int = Field(default=8, ge=1, le=32)


class WhatCountsConnection(ConnectionBase):
    """WhatCounts ``api_web``: realm and password, caret-separated batches."""

    type: Literal[ProviderType.WHATCOUNTS]
    realm: str = Field(min_length=1, max_length=128)
    password: SecretStr
    #: The realm has Customer Key enabled: records without a ``customer_key`` cannot be delivered.
    customer_key_required: bool = False
    #: List used for scope=list requests that name none.
    default_list_id: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,17}$")
    #: Also write an opt-out record on list unsubscribes (``optout=1``), so the list cannot re-add them.
    list_optout: bool = True
    #: Send records in a form body (POST) rather than the documented query string (GET).
    use_post: bool = False
    #: Longest request URL the adapter builds when ``use_post`` is off.
    max_url_length: int = Field(default=2000, ge=256, le=65536)


class InsiderConnection(ConnectionBase):
    """Insider email API v2: global or group unsubscribe, 500 addresses a request."""

    type: Literal[ProviderType.INSIDER]
    partner_name: str = Field(min_length=1, max_length=128)
    token: SecretStr
    uploader_email: EmailStr
    default_group: str | None = Field(default=None, min_length=3, max_length=29)

    @field_validator("partner_name")
    @classmethod
    def _lower(cls, value: str) -> str:
        # Insider requires the X-PARTNER-NAME header in lower case.
        return value.lower()


class EasyToolsConnection(ConnectionBase):
    """easy.tools email API v1: account-wide unsubscribe of one contact by UUID."""

    type: Literal[ProviderType.EASYTOOLS]
    token: SecretStr
    rate_limit: RateLimitText = "100/minute"
    #: One contact per call: as for ``CcContactsConnection.parallel_calls``.
    parallel_calls: int = Field(default=8, ge=1, le=32)


Connection = Annotated[
    CcPartnerConnection
    | CcContactsConnection
    | WhatCountsConnection
    | InsiderConnection
    | EasyToolsConnection,
    Field(discriminator="type"),
]


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
    return validation_problems(exc, _raw_connections(path), [p.value for p in ProviderType])


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
