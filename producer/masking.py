"""Masked views of requests, for anything a human or a dashboard (Flower) will see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

#: How many masked addresses a chunk's ``argsrepr`` lists before summarising the rest.
ARGSREPR_SHOWN: Final = 3


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``; not an address → ``***``."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def masked_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The request with its address masked (everything else is not personal data)."""
    email = payload.get("email")
    return {**payload, "email": mask_email(email) if isinstance(email, str) else "***"}


def chunk_argsrepr(payloads: Sequence[dict[str, Any]]) -> str:
    """What Flower shows for an intake task: request ids and masked addresses, never a full address."""
    shown = [
        f"{{'request_id': {p.get('request_id')!r}, 'email': {masked_payload(p)['email']!r}}}"
        for p in payloads[:ARGSREPR_SHOWN]
    ]
    more = len(payloads) - len(shown)
    if more > 0:
        shown.append(f"... {more} more")
    return f"([{', '.join(shown)}],)  # {len(payloads)} request(s)"
