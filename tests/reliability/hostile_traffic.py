"""What test_hostile_intake.py publishes: each hostile message with what it must become, mixed with
valid requests of every scope. Everything goes through :class:`HostilePublisher` (kombu's Producer,
raw LPUSH and XADD); nothing through the producer library.
"""

from __future__ import annotations

import gzip
import json
import random
import string
import uuid
import zlib
from typing import Any, Final

from producer import names
from tests.support.hostile import HostilePublisher, celery_envelope, nested, task_body, task_headers
from worker.pipeline.envelope import MAX_JSON_DEPTH
from worker.pipeline.intake import NOT_AN_OBJECT
from worker.pipeline.pump import PRIORITY_SEPARATOR
from worker.settings import Settings

DEEP: Final = f"message: nested deeper than {MAX_JSON_DEPTH} levels"
MAX_BYTES: Final[int] = Settings.model_fields["max_message_bytes"].default
FLOOD_MESSAGES: Final = 100
#: Entries just under the size limit sent at once: a worker must not read them all at once.
BURST: Final = 12
#: Made-up connection names of the flood (seeded): no key may ever hold one.
_RANDOM: Final = random.Random(12)
FLOOD_NAMES: Final = [
    "".join(_RANDOM.choices(string.ascii_lowercase + string.digits, k=12)) for _ in range(10_000)
]
#: A list-scoped request's targets, and what it must reach.
LIST_TARGETS: Final = {"whatcounts": {"list_ids": ["5", "7"]}, "insider": {"group": "weekly-news"}}
LISTED: Final = {"whatcounts": {"list:5", "list:7"}, "insider": {"group:weekly-news"}}
#: What no log line may hold: the local part (but its first letter) of addresses published in
#: fields a worker might log, in every spelling a log could use.
LOG_TOKENS: Final = [
    "öhn.döe.hx", "\\u00f6hn.d\\u00f6e.hx", "%C3%B6hn.d%C3%B6e.hx", "\\xc3\\xb6hn.d\\xc3\\xb6e.hx",
    "id.addr-hx", "uoted.reason-hx", "öhn.reason-hx", "\\u00f6hn.reason-hx", "ane.pct-hx",
    "rpaddr-hx", "uoted-bad-hx",
]  # fmt: skip


def publish_flood(pub: HostilePublisher) -> None:
    """100 requests naming 100 made-up connections each, half at each door."""
    for n in range(FLOOD_MESSAGES):
        request_id = f"flood-{n}"
        request = {"request_id": request_id, "email": f"flood{n}@example.com"}
        request["connections"] = FLOOD_NAMES[n * 100 : (n + 1) * 100]
        if n % 2:
            pub.publish_text(task_body([request]))
        else:
            pub.xadd(json.dumps(request))
        pub.traffic.unknown.add(request_id)


def publish_everything(pub: HostilePublisher) -> None:
    for scenario in (
        deep_nesting,
        undecodable,
        content_types,
        task_names_and_signatures,
        hostile_headers,
        compression,
        priorities_and_sizes,
        bad_siblings_and_contract,
        stream_bytes,
        addresses_in_fields,
        borrowed_request_ids,
    ):
        scenario(pub)
        good_traffic(pub)


def good_traffic(pub: HostilePublisher) -> None:
    """Valid requests of every scope at both doors, between the hostile ones."""
    pub.publish_text(task_body([[pub.good(), listed(pub)]]))
    defaults = pub.good({"whatcounts": {"list:5"}, "insider": {"group:newsletter"}}, scope="list")
    every_account = pub.good(
        {"cc-partner": {"all_accounts"}},
        connections=["cc-partner"],
        targets={"cc-partner": {"all_accounts": True}},
    )
    one_account = pub.good({"cc-partner": {"account"}}, connections=["cc-partner"], scope="list")
    pub.xadd(json.dumps([defaults, every_account, one_account]))


def listed(pub: HostilePublisher) -> dict[str, Any]:
    return pub.good(LISTED, scope="list", targets=LIST_TARGETS)


def deep_nesting(pub: HostilePublisher) -> None:
    for depth in (520, 950):  # the whole argument nested: its one request is refused
        task_id = pub.publish_text(f"[[{nested(depth)}], {{}}, {{}}]")
        pub.traffic.item(f"task:{task_id}", 0, "invalid_message", DEEP)
    for depth in (5000, 100_000):  # beside a valid sibling, which is delivered
        task_id = pub.publish_text(f"[[[{json.dumps(pub.good())}, {nested(depth)}]], {{}}, {{}}]")
        pub.traffic.item(f"task:{task_id}", 1, "invalid_message", DEEP)
    entry = pub.xadd(f"[{nested(100_000)}, {json.dumps(pub.good())}]")
    pub.traffic.item(f"stream:{entry}", 0, "invalid_message", DEEP)


def undecodable(pub: HostilePublisher) -> None:
    task_id = pub.publish_text("{not json")
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: not valid JSON")
    task_id = pub.publish_text(task_body([pub.never()]) + b"\xff")
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: not valid UTF-8")
    latin = b'{"email": "latin@example.com", "reason": "caf\xe9"}'
    task_id = pub.publish_text(b"[[[" + json.dumps(pub.good()).encode() + b", " + latin + b"]], {}, {}]")
    pub.traffic.item(f"task:{task_id}", 1, "invalid_message", "message: not valid UTF-8")
    task_id = f"bad-base64-{uuid.uuid4()}"
    pub.lpush(celery_envelope(b"", task_id=task_id, body_text="!!not base64!!"))
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: body is not valid base64")
    task_id = pub.publish_text("")
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: not valid JSON: Expecting value")
    pub.lpush(b"hostile-not-json \xff\xfe")
    pub.traffic.unseen("invalid_message", "message: not valid UTF-8", marker="hostile-not-json")
    pub.lpush(b"hostile plain text")
    pub.traffic.unseen("invalid_message", "message: not valid JSON", marker="hostile plain text")
    pub.lpush(b"")
    pub.traffic.unseen("invalid_message", "message: not valid JSON: Expecting value (line 1, column 1)")


def content_types(pub: HostilePublisher) -> None:
    for serializer, content_type in (("pickle", "x-python-serialize"), ("yaml", "x-yaml")):
        task_id = pub.publish([[pub.never()], {}, {}], serializer=serializer)
        problem = f"message: content type 'application/{content_type}'"
        pub.traffic.whole(f"task:{task_id}", "invalid_message", problem)
    msgpack = b"\x93\x91\x81\xa5email\xb0m@example.com\x80\x80"  # [[{"email": ...}], {}, {}]
    task_id = pub.publish(msgpack, content_type="application/x-msgpack", content_encoding="binary")
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: content type 'application/x-msgpack'")


def task_names_and_signatures(pub: HostilePublisher) -> None:
    for name in ("unsub.Intake", "unsub.deliver"):
        task_id = pub.publish_text(task_body([pub.never()]), headers=task_headers("", task=name))
        pub.traffic.whole(f"task:{task_id}", "unknown_task", f"message: task '{name}' is not 'unsub.intake'")
    pub.publish_text(task_body([pub.good(), pub.good()]))  # two positional arguments: both read
    pub.publish_text(task_body([], {"request": pub.good()}))
    pub.publish_text(task_body([], {"payload": [pub.good(), pub.good()]}))
    task_id = pub.publish_text(task_body([]))
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: holds no request")
    protocol_1 = {"task": names.INTAKE_TASK, "id": "p1", "args": [[pub.good()]], "kwargs": {}}
    pub.publish_text(json.dumps(protocol_1), headers={})


def hostile_headers(pub: HostilePublisher) -> None:
    """Headers that would delay, expire, multiply or kill the task: ignored; delivered once, now."""
    for extra in (
        {"eta": "2999-01-01T00:00:00+00:00"},
        {"countdown": 86_400},
        {"expires": "2000-01-01T00:00:00+00:00"},
        {"timelimit": [1, 1]},
        {"soft_time_limit": 0.001, "time_limit": 0.001},
        {"retries": 99, "eta": "2999-01-01T00:00:00+00:00", "expires": "2999-01-01T00:00:00+00:00"},
    ):
        pub.publish_text(task_body([pub.good()]), headers=task_headers("", **extra))


def compression(pub: HostilePublisher) -> None:
    pub.publish_text(task_body([[pub.good(), pub.good()]]), compression="zlib")
    task_id = pub.publish_text(task_body([pub.never()]), compression="bzip2")
    pub.traffic.whole(f"task:{task_id}", "invalid_message", "message: compression 'application/x-bz2'")
    bomb = gzip.compress(b'[[{"email": "bomb@example.com", "reason": "' + b"x" * 100_000_000, 9)
    assert len(bomb) < 200_000
    task_id = f"gzip-bomb-{uuid.uuid4()}"
    headers = task_headers(task_id, compression="application/x-gzip")
    pub.lpush(celery_envelope(bomb, headers=headers, task_id=task_id))
    expands = f"message: expands to more than {MAX_BYTES} bytes"
    pub.traffic.whole(f"task:{task_id}", "invalid_message", expands)
    small = zlib.compress(task_body([pub.good()]))
    pub.lpush(celery_envelope(small, headers=task_headers("zlib-by-hand", compression="zlib")))


def priorities_and_sizes(pub: HostilePublisher) -> None:
    pub.publish_text(task_body([pub.good()]), priority=9)
    low, mid = (f"{names.INTAKE_QUEUE}{PRIORITY_SEPARATOR}{step}" for step in (3, 6))
    pub.lpush(celery_envelope(task_body([pub.good()])), queue=low)
    pub.lpush(celery_envelope(b"", task_id="prio-bad", body_text="%%"), queue=mid)
    pub.traffic.whole("task:prio-bad", "invalid_message", "message: body is not valid base64")
    too_big = b'{"body": "' + b"A" * (MAX_BYTES + 1001) + b'"}'
    pub.lpush(too_big)
    pub.traffic.unseen("message_too_large", f"message: {len(too_big)} bytes, more than the {MAX_BYTES}")
    entry = pub.xadd(b'"' + b"B" * (MAX_BYTES + 2002) + b'"')
    pub.traffic.whole(f"stream:{entry}", "message_too_large", f"message: {MAX_BYTES + 2004} bytes")
    big = b'"' + b"C" * (MAX_BYTES - 300_000) + b'"'  # each under the limit; together 12 times it
    pipe = pub.raw.pipeline(transaction=True)  # all there before any worker reads
    for _ in range(BURST):
        pipe.xadd(names.NATIVE_INTAKE_STREAM, {names.NATIVE_INTAKE_FIELD: big})
    for entry in pipe.execute():
        pub.traffic.item(f"stream:{entry.decode()}", 0, "invalid_message", NOT_AN_OBJECT)
    task_id = pub.publish_text(task_body([[pub.never(connections=["insider"]) for _ in range(20_000)]]))
    too_many = "message: holds 20000 requests, more than the 5000"
    pub.traffic.whole(f"task:{task_id}", "message_too_large", too_many)
    pub.xadd(json.dumps([pub.good(connections=["insider"]) for _ in range(5000)]))


def bad_siblings_and_contract(pub: HostilePublisher) -> None:
    """Requests breaking the contract beside valid ones, at both doors: each refused alone."""
    for door in ("celery", "stream"):
        requests, expected = zip(*contract_breakers(pub), strict=True)
        if door == "celery":
            origin = f"task:{pub.publish_text(task_body([list(requests)]))}"
        else:
            origin = f"stream:{pub.xadd(json.dumps(requests))}"
        for index, wanted in enumerate(expected):
            if wanted is not None:
                pub.traffic.item(origin, index, *wanted)
    duplicate = '{"email": "dup@example.com", "email": "dup2@example.com"}'
    twice = "message: an object has the same key twice"
    entry = pub.xadd(f"[{json.dumps(pub.good())}, {duplicate}]")
    pub.traffic.item(f"stream:{entry}", 1, "invalid_message", twice)
    task_id = pub.publish_text(f"[[[{duplicate}, {json.dumps(pub.good())}]], {{}}, {{}}]")
    pub.traffic.item(f"task:{task_id}", 0, "invalid_message", twice)
    long_number = '{"email": "long@example.com", "version": ' + "7" * 5000 + "}"  # int() fails at 4,300
    task_id = pub.publish_text(f"[[[{json.dumps(pub.good())}, {long_number}, NaN]], {{}}, {{}}]")
    pub.traffic.item(f"task:{task_id}", 1, "invalid_message", "message: a number longer than 64 characters")
    pub.traffic.item(f"task:{task_id}", 2, "invalid_message", "message: NaN and Infinity are not JSON")


def contract_breakers(pub: HostilePublisher) -> list[tuple[dict[str, Any], tuple[str, str] | None]]:
    """Lax booleans, a boolean version, scope-less lists and groups, list ids a provider could read
    as 0, a group with CRLF, a bad address: each with its reason and problem; valid ones between."""
    boolean = "targets.cc-partner.all_accounts: Input should be a valid boolean"
    pattern = "targets.whatcounts.list_ids.0: String should match pattern"
    cc = {"connections": ["cc-partner"]}
    return [
        (pub.good(), None),
        ({"email": "not-an-address"}, ("invalid_email", "email:")),
        *(({"email": "a1@example.com", **cc, "targets": {"cc-partner": {"all_accounts": lax}}},
           ("invalid_message", boolean)) for lax in ("yes", "1", "on", 1, 1.0)),
        ({"email": "a2@example.com", "version": True}, ("invalid_message", "version:")),
        ({"email": "a3@example.com", "version": 1.0}, ("invalid_message", "version:")),
        ({"email": "a4@example.com", "targets": {"whatcounts": {"list_ids": ["12"]}}},
         ("invalid_message", "targets.whatcounts.list_ids: names lists but scope is global")),
        ({"email": "a5@example.com", "targets": {"insider": {"group": "weekly-news"}}},
         ("invalid_message", "targets.insider.group: names a group but scope is global")),
        (listed(pub), None),
        *(({"email": "a6@example.com", "scope": "list", "targets": {"whatcounts": {"list_ids": [bad]}}},
           ("invalid_message", pattern)) for bad in ("00", "-0", "0_", "0", "05")),
        ({"email": "a7@example.com", "scope": "list", "targets": {"insider": {"group": "news\r\nletter"}}},
         ("invalid_message", "targets.insider.group: Value error, must not contain control characters")),
        (pub.good(), None),
    ]  # fmt: skip


def stream_bytes(pub: HostilePublisher) -> None:
    """Entries a non-Python publisher might XADD, among valid neighbours read with them."""
    pipe = pub.raw.pipeline(transaction=True)
    fields = names.NATIVE_INTAKE_FIELD.encode()
    latin1 = b'{"email": "latin1@example.com", "reason": "caf\xe9 cr\xe8me"}'
    no_field = "message: the stream entry has no 'message' field"
    entries = [
        (fields, json.dumps(pub.good()).encode(), None),
        (fields, latin1, ("item", "message: not valid UTF-8")),
        (fields, json.dumps(pub.good()).encode(), None),
        (fields, b'[{"email": "outside@example.com"}] \xff', ("whole", "message: not valid UTF-8")),
        (b"\xffmessage", json.dumps(pub.never()).encode(), ("whole", no_field)),
        (b"celery", b"forged celery field", ("whole", "message: not valid JSON")),
        (fields, json.dumps([pub.good(), pub.good()]).encode(), None),
    ]
    for name, value, _ in entries:
        pipe.xadd(names.NATIVE_INTAKE_STREAM, {name: value})
    for entry_id, (_, _, wanted) in zip(pipe.execute(), entries, strict=True):
        origin = f"stream:{entry_id.decode()}"
        if wanted and wanted[0] == "item":
            pub.traffic.item(origin, 0, "invalid_message", wanted[1])
        elif wanted:
            pub.traffic.whole(origin, "invalid_message", wanted[1])


def addresses_in_fields(pub: HostilePublisher) -> None:
    """Addresses where a worker might log them: quoted, percent-encoded, non-ASCII, as a request
    id, as a group. Delivered; and no log line may show one (LOG_TOKENS)."""
    insider = {"connections": ["insider"]}
    reason = (
        "forwarded by 'quoted.reason-hx@example.com' <jöhn.reason-hx@exämple.com> "
        "email%5Ejane.pct-hx%40example.com"
    )
    group = "grpaddr-hx@example.com"
    requests = [
        pub.good({"insider": {"global"}}, email="jöhn.döe.hx@exämple.com", **insider),
        pub.good(request_id="rid.addr-hx@example.com"),
        pub.good({"cc-partner": {"account"}}, connections=["cc-partner"], reason=reason),
        pub.good(
            {"insider": {f"group:{group}"}}, scope="list", targets={"insider": {"group": group}}, **insider
        ),
        {"email": "'quoted-bad-hx@example.com'"},
    ]
    pub.publish_text(task_body([requests[:2]]))
    entry = pub.xadd(json.dumps(requests[2:], ensure_ascii=False))
    pub.traffic.item(f"stream:{entry}", 2, "invalid_email", "email:")


def borrowed_request_ids(pub: HostilePublisher) -> None:
    """Invalid requests carrying the ids of valid ones (sent long before, in the same message, and
    just before): each is a dead letter, and none marks the valid request failed."""
    early, later = "good-0", pub.good()
    same_message = [{"request_id": early, "email": "not an address"}, pub.good()]
    same_message.append({"request_id": same_message[1]["request_id"], "email": "bad"})
    entry = pub.xadd(json.dumps([{"request_id": later["request_id"], "email": "x"}]))
    pub.traffic.item(f"stream:{entry}", 0, "invalid_email", "email:")
    task_id = pub.publish_text(task_body([[*same_message, later]]))
    pub.traffic.item(f"task:{task_id}", 0, "invalid_email", "email:")
    pub.traffic.item(f"task:{task_id}", 2, "invalid_email", "email:")
