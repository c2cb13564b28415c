"""The sandbox's configuration: seeded credentials, accounts, realms, contacts and default limits.

The built-in seed (``seed.yaml`` next to this module) matches ``worker/examples/sandbox.yaml``. A
config file given with ``unsub sandbox --config FILE`` is merged over it one provider section at a
time: a section's keys replace the built-in ones, sections left out keep the built-in seed.
``POST /_sandbox/seed`` takes the same shape and adds to what is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field

BUILTIN_SEED_PATH: Final = Path(__file__).with_name("seed.yaml")
PARTNER_TOKEN_TTL_S: Final = 3600.0
CONTACTS_TOKEN_TTL_S: Final = 24 * 3600.0
EASYTOOLS_RATE_LIMIT_PER_MINUTE: Final = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OAuthClient(_Model):
    client_id: str
    client_secret: str


class CcPartnerConfig(_Model):
    clients: list[OAuthClient] = Field(default_factory=list)
    api_keys: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    token_ttl_s: float = PARTNER_TOKEN_TTL_S


class CcContactSeed(_Model):
    model_config = ConfigDict(extra="allow")
    email: str
    contact_id: str | None = None
    permission_to_send: str = "implicit"


class CcContactsConfig(_Model):
    clients: list[OAuthClient] = Field(default_factory=list)
    refresh_tokens: list[str] = Field(default_factory=list)
    #: Single-use refresh tokens (each use returns a new one and retires the old), as CC's rotating keys.
    rotate_refresh_tokens: bool = True
    token_ttl_s: float = CONTACTS_TOKEN_TTL_S
    contacts: list[CcContactSeed] = Field(default_factory=list)


class Subscriber(_Model):
    email: str
    customer_key: str | None = None
    #: List ids the address is subscribed to; empty means every list of the realm.
    lists: list[str] = Field(default_factory=list)


class Realm(_Model):
    realm: str
    password: str
    lists: list[str] = Field(default_factory=list)
    customer_key: bool = False
    subscribers: list[Subscriber] = Field(default_factory=list)


class WhatCountsConfig(_Model):
    realms: list[Realm] = Field(default_factory=list)


class InsiderPartner(_Model):
    name: str
    token: str


class InsiderConfig(_Model):
    partners: list[InsiderPartner] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class EasyContactSeed(_Model):
    model_config = ConfigDict(extra="allow")
    email: str
    uuid: str | None = None


class EasyToolsConfig(_Model):
    tokens: list[str] = Field(default_factory=list)
    rate_limit_per_minute: int | None = EASYTOOLS_RATE_LIMIT_PER_MINUTE
    contacts: list[EasyContactSeed] = Field(default_factory=list)


class SandboxConfig(_Model):
    #: Seed of the fault injector's random numbers (a fault setting may bring its own).
    seed: int = 0
    #: Create cc_contacts and easy.tools contacts on first lookup for addresses that match:
    #: ``true`` for every address, a regular expression (``"@example\\.com$"``) for some, ``false`` for none.
    #: WhatCounts then also treats matching addresses as subscribed to every list of every realm.
    auto_contacts: bool | str = False
    cc_partner: CcPartnerConfig = Field(default_factory=CcPartnerConfig)
    cc_contacts: CcContactsConfig = Field(default_factory=CcContactsConfig)
    whatcounts: WhatCountsConfig = Field(default_factory=WhatCountsConfig)
    insider: InsiderConfig = Field(default_factory=InsiderConfig)
    easytools: EasyToolsConfig = Field(default_factory=EasyToolsConfig)


def _read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the sandbox config must be a mapping")
    return data


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each top-level section of ``override`` merged over it one key deep."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SandboxConfig:
    """The built-in seed, with the file at ``path`` and then ``overrides`` merged over it."""
    data = _read_yaml(BUILTIN_SEED_PATH)
    if path is not None:
        data = merged(data, _read_yaml(path))
    if overrides:
        data = merged(data, overrides)
    return SandboxConfig.model_validate(data)
