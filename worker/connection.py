"""What every provider connection has, and the policies it carries: the part of the settings that
provider modules build on (each provider's own connection model lives in its module, see
:mod:`worker.providers`).
"""

from __future__ import annotations

from typing import Annotated, Final

from limits import parse_many
from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from worker.urls import check_provider_url

HOUR_S: Final = 3600.0
DAY_S: Final = 24 * HOUR_S


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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(Strict):
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


class BreakerPolicy(Strict):
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


def check_rate_limit(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                "not a rate limit: use e.g. '4/second;10000/day' (see the limits package)"
            ) from None
    return value


RateLimitText = Annotated[str | None, Field(default=None, examples=["4/second;10000/day"])]


class ConnectionBase(Strict):
    """What every provider connection has."""

    #: The provider type (each provider module's model narrows it to its own name).
    type: str
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
        return check_rate_limit(value)
