"""The demo's traffic: a realistic, reproducible mix of unsubscribe requests and what must become of it.

Most requests go to one to three connections with a scope, reason and source as upstream services
send them; some go to every connection. The mix also carries what a real day brings:

- requests for the Customer Key realm (``whatcounts-ck``) without a ``customer_key``
  (dead: ``missing_customer_key``), next to ones with a key (delivered);
- addresses no provider account knows (``unknown-*``) for the providers that look contacts up
  (``cc-contacts``, ``easytools``; dead: ``contact_not_found``);
- a couple of messages with an invalid address, sent as plain JSON on the language-neutral stream
  (the producer library would refuse them; dead at intake: ``invalid_email``).

Every address is unique, so each (connection, address) pair is one delivery and the sandbox's record
of distinct addresses per connection can be compared with the system's delivered counters.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

#: The connections of ``worker/examples/sandbox.yaml``.
CONNECTIONS: Final = ("cc-partner", "cc-contacts", "whatcounts", "whatcounts-ck", "insider", "easytools")
#: Connections whose adapter looks the contact up first (an unknown address is ``contact_not_found``).
LOOKUP_CONNECTIONS: Final = ("cc-contacts", "easytools")
CUSTOMER_KEY_CONNECTION: Final = "whatcounts-ck"
#: Addresses starting with this are unknown to every provider account (see ``AUTO_CONTACTS``).
UNKNOWN_PREFIX: Final = "unknown-"
#: Sandbox ``auto_contacts``: every address exists except the unknown ones.
AUTO_CONTACTS: Final = rf"^(?!{UNKNOWN_PREFIX})"
#: Invalid messages, as a service in another language might send them.
INVALID_MESSAGES: Final[tuple[dict[str, Any], ...]] = (
    {"email": "jane.doe(at)example.com", "reason": "footer link", "source": "Contact"},
    {"email": "no-domain@", "scope": "list", "connections": ["insider"]},
)
MIN_REQUESTS: Final = 20
MAX_REQUESTS: Final = 5000

_FIRST: Final = (
    "ana",
    "ben",
    "chloe",
    "dev",
    "emma",
    "farid",
    "grace",
    "hugo",
    "ines",
    "jonas",
    "kai",
    "lena",
)
_LAST: Final = ("lopez", "smith", "nowak", "okafor", "tanaka", "muller", "rossi", "dubois", "kowalski")
_DOMAINS: Final = ("example.com", "example.org", "mail.example.net", "shop.example")
_REASONS: Final = (
    "Too many emails",
    "No longer interested",
    "Never signed up",
    "Preference centre: all marketing off",
    "Complaint forwarded by the mailbox provider (FBL)",
    None,
)
_SOURCES: Final = (("Contact", 7), ("Account", 2), ("System", 1))
_INSIDER_GROUPS: Final = ("newsletter", "promotions", "weekly-digest")
_WHATCOUNTS_LISTS: Final = ("5", "7")


@dataclass
class Mix:
    """The requests to publish (in waves) and the outcome each connection must end with."""

    waves: list[list[dict[str, Any]]]
    #: Plain JSON messages for the native stream, one list per wave.
    invalid_waves: list[list[dict[str, Any]]]
    delivered: Counter[str] = field(default_factory=Counter)
    #: connection → reason → count
    dead: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(len(w) for w in self.waves) + self.invalid

    @property
    def invalid(self) -> int:
        return sum(len(w) for w in self.invalid_waves)

    @property
    def outcomes(self) -> int:
        """Every delivery's final outcome plus the invalid messages: what a settled run adds up to."""
        dead = sum(sum(c.values()) for c in self.dead.values())
        return sum(self.delivered.values()) + dead + self.invalid

    def expect_dead(self, connection: str, reason: str) -> None:
        self.dead.setdefault(connection, Counter())[reason] += 1


def _address(rng: random.Random, i: int) -> str:
    return f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}.{i}@{rng.choice(_DOMAINS)}"


def _request(
    rng: random.Random, i: int, mix: Mix, *, every: bool = False, customer_key: bool | None = None
) -> dict[str, Any]:
    """One request; records the outcome expected on each connection it names.

    ``customer_key`` False: the request names ``whatcounts-ck`` and carries no key; True: it carries
    one when it names that connection; None: it carries one 19 times in 20.
    """
    names = list(CONNECTIONS) if every else rng.sample(CONNECTIONS, k=rng.choice((1, 1, 2, 2, 3)))
    if customer_key is False and CUSTOMER_KEY_CONNECTION not in names:
        names.append(CUSTOMER_KEY_CONNECTION)
    with_key = customer_key if customer_key is not None else rng.random() < 0.95
    request: dict[str, Any] = {
        "request_id": f"demo-{i:05d}",
        "email": _address(rng, i),
        "scope": "list" if rng.random() < 0.4 else "global",
        "source": rng.choices([s for s, _ in _SOURCES], [w for _, w in _SOURCES])[0],
    }
    if not every:
        request["connections"] = names
    if (reason := rng.choice(_REASONS)) is not None:
        request["reason"] = reason
    if targets := _targets(rng, names, request["scope"]):
        request["targets"] = targets
    for name in names:
        if name == CUSTOMER_KEY_CONNECTION and not with_key:
            mix.expect_dead(name, "missing_customer_key")
            continue
        if name == CUSTOMER_KEY_CONNECTION:
            request["customer_key"] = str(rng.randint(10000, 99999))
        mix.delivered[name] += 1
    return request


def _targets(rng: random.Random, names: list[str], scope: str) -> dict[str, dict[str, Any]]:
    """Lists and groups for some list-scope requests (the others use the connection's default)."""
    targets: dict[str, dict[str, Any]] = {}
    if scope == "list":
        if "whatcounts" in names and rng.random() < 0.5:
            targets["whatcounts"] = {"list_ids": [rng.choice(_WHATCOUNTS_LISTS)]}
        if "insider" in names and rng.random() < 0.6:
            targets["insider"] = {"group": rng.choice(_INSIDER_GROUPS)}
    if "cc-partner" in names and rng.random() < 0.1 and scope == "global":  # every account: never list
        targets["cc-partner"] = {"all_accounts": True}
    return targets


def _unknown(rng: random.Random, i: int, mix: Mix) -> dict[str, Any]:
    """A request for an address the contact-based providers do not know."""
    for name in LOOKUP_CONNECTIONS:
        mix.expect_dead(name, "contact_not_found")
    return {
        "request_id": f"demo-{i:05d}",
        "email": f"{UNKNOWN_PREFIX}{i}@{rng.choice(_DOMAINS)}",
        "connections": list(LOOKUP_CONNECTIONS),
        "reason": "Unsubscribe link in an old campaign",
    }


def build_mix(total: int, *, seed: int = 7, waves: int = 2) -> Mix:
    """``total`` messages (``INVALID_MESSAGES`` among them) split into ``waves`` waves.

    Every wave starts with a request to every connection, so each provider is called in each wave
    (the JWT expiry between waves hits a live token); the same seed gives the same mix.
    """
    if not MIN_REQUESTS <= total <= MAX_REQUESTS:
        raise ValueError(f"requests must be between {MIN_REQUESTS} and {MAX_REQUESTS}, got {total}")
    rng = random.Random(seed)
    mix = Mix(waves=[[] for _ in range(waves)], invalid_waves=[[] for _ in range(waves)])
    valid = total - len(INVALID_MESSAGES)
    per_wave = -(-valid // waves)
    for i in range(valid):
        wave = mix.waves[i // per_wave]
        if not wave:
            request = _request(rng, i, mix, every=True, customer_key=True)
        elif i % 25 == 7:
            request = _unknown(rng, i, mix)
        elif i % 25 == 13:
            request = _request(rng, i, mix, every=True)
        elif i % 20 == 4:
            request = _request(rng, i, mix, customer_key=False)
        else:
            request = _request(rng, i, mix)
        wave.append(request)
    for j, message in enumerate(INVALID_MESSAGES):
        mix.invalid_waves[j % waves].append(dict(message))
    return mix
