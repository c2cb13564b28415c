"""JSON Schemas of the Constant Contact v3 operations this project uses, written from CC's spec.

Source: CC's official Swagger 2.0 spec v3.0.172 (``../shared/specs/constant-contact-v3.swagger.yaml``):
operation ``partnerUnsubscribeContacts`` and definitions ``PartnerUnsubscribeResponse``,
``APIErrorSchema``, ``EmailAddress``, ``ContactResource``, ``Contacts``, ``EmailAddressPut`` and
``ContactPutRequest``. Only the properties we send or read are kept; each keeps the spec's type,
enum, ``maxLength``, ``maxItems`` and ``required``. ``tests/sandbox/test_cc_contract.py`` checks
these against the spec file and the sandbox's traffic against both.
"""

from __future__ import annotations

from typing import Any, Final

Schema = dict[str, Any]

_STRING: Final[Schema] = {"type": "string"}
_UUID_LIST_50: Final[Schema] = {"type": "array", "items": {"type": "string"}, "maxItems": 50}

PARTNER_UNSUBSCRIBE_REQUEST: Final[Schema] = {
    "type": "object",
    "required": ["update_source"],
    "properties": {
        "email_addresses": {"type": "array", "items": {"type": "string"}, "maxItems": 500},
        "update_source": {"type": "string", "enum": ["Account", "Contact", "System"]},
        "opt_out_reason": {"type": "string", "maxLength": 255},
        "delete_contacts": {"type": "boolean"},
        "global_unsubscribe": {"type": "boolean"},
    },
}

PARTNER_UNSUBSCRIBE_RESPONSE: Final[Schema] = {
    "type": "object",
    "properties": {"unsubscribed_count": {"type": "integer"}},
}

API_ERROR: Final[Schema] = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"error_key": _STRING, "error_message": _STRING},
    },
}

EMAIL_ADDRESS: Final[Schema] = {
    "type": "object",
    "required": ["address"],
    "properties": {
        "address": {"type": "string", "maxLength": 80},
        "permission_to_send": _STRING,
        "created_at": _STRING,
        "updated_at": _STRING,
        "opt_in_source": _STRING,
        "opt_in_date": _STRING,
        "opt_out_source": _STRING,
        "opt_out_date": _STRING,
        "opt_out_reason": {"type": "string", "maxLength": 255},
        "confirm_status": _STRING,
    },
}

CONTACT_RESOURCE: Final[Schema] = {
    "type": "object",
    "properties": {
        "contact_id": _STRING,
        "email_address": EMAIL_ADDRESS,
        "first_name": {"type": "string", "maxLength": 50},
        "last_name": {"type": "string", "maxLength": 50},
        "job_title": {"type": "string", "maxLength": 50},
        "company_name": {"type": "string", "maxLength": 50},
        "birthday_month": {"type": "integer"},
        "birthday_day": {"type": "integer"},
        "anniversary": {"type": "string", "maxLength": 10},
        "update_source": _STRING,
        "create_source": _STRING,
        "created_at": _STRING,
        "updated_at": _STRING,
        "custom_fields": {"type": "array", "maxItems": 25},
        "phone_numbers": {"type": "array", "maxItems": 3},
        "street_addresses": {"type": "array", "maxItems": 3},
        "list_memberships": _UUID_LIST_50,
        "taggings": _UUID_LIST_50,
        "notes": {"type": "array", "maxItems": 150},
    },
}

CONTACTS: Final[Schema] = {
    "type": "object",
    "properties": {
        "contacts": {"type": "array", "items": CONTACT_RESOURCE},
        "contacts_count": {"type": "integer"},
    },
}

EMAIL_ADDRESS_PUT: Final[Schema] = {
    "type": "object",
    "required": ["address"],
    "properties": {
        "address": {"type": "string", "maxLength": 80},
        "permission_to_send": _STRING,
        "created_at": _STRING,
        "opt_in_date": _STRING,
        "opt_out_reason": {"type": "string", "maxLength": 255},
        "confirm_status": _STRING,
    },
}

CONTACT_PUT_REQUEST: Final[Schema] = {
    "type": "object",
    "required": ["update_source"],
    "properties": {
        "email_address": EMAIL_ADDRESS_PUT,
        "first_name": {"type": "string", "maxLength": 50},
        "last_name": {"type": "string", "maxLength": 50},
        "job_title": {"type": "string", "maxLength": 50},
        "company_name": {"type": "string", "maxLength": 50},
        "birthday_month": {"type": "integer"},
        "birthday_day": {"type": "integer"},
        "anniversary": {"type": "string", "maxLength": 10},
        "update_source": _STRING,
        "custom_fields": {"type": "array", "maxItems": 25},
        "phone_numbers": {"type": "array", "maxItems": 3},
        "street_addresses": {"type": "array", "maxItems": 3},
        "list_memberships": _UUID_LIST_50,
        "taggings": _UUID_LIST_50,
        "notes": {"type": "array", "maxItems": 150},
    },
}

#: Our schema → where its original lives in the spec (a definition name, or the operation's body).
SPEC_SOURCES: Final[dict[str, tuple[Schema, str]]] = {
    "partner_unsubscribe_request": (PARTNER_UNSUBSCRIBE_REQUEST, "operation:partnerUnsubscribeContacts"),
    "partner_unsubscribe_response": (PARTNER_UNSUBSCRIBE_RESPONSE, "PartnerUnsubscribeResponse"),
    "api_error": (API_ERROR, "APIErrorSchema"),
    "email_address": (EMAIL_ADDRESS, "EmailAddress"),
    "contact_resource": (CONTACT_RESOURCE, "ContactResource"),
    "contacts": (CONTACTS, "Contacts"),
    "email_address_put": (EMAIL_ADDRESS_PUT, "EmailAddressPut"),
    "contact_put_request": (CONTACT_PUT_REQUEST, "ContactPutRequest"),
}
