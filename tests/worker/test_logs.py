"""Log redaction: no secret and no clear email address ever reaches a log line, whoever logs it."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator

import pytest
from billiard import util as billiard_util

import producer.masking
import worker.logs
from tests.worker.logging_support import configured_logging, json_lines
from worker.logs import (
    REDACTED,
    TOO_DEEP,
    bind,
    get_logger,
    mask_email,
    redact_mapping,
    redact_text,
    redact_value,
    register_secret,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwYXJ0bmVyIn0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    with configured_logging() as stream:
        yield stream


# -- whole lines, through configure_logging ------------------------------------------------------


def test_a_line_with_an_email_a_bearer_token_and_a_whatcounts_password_shows_none_of_them(
    log_lines: io.StringIO,
) -> None:
    get_logger("test").info(
        "calling provider",
        email="jane.doe@example.com",
        authorization=f"Bearer {JWT}",
        url="https://api.whatcounts.com/bin/api_web?r=acme&p=secret-pass&c=unsub&data=email^jane.doe@example.com",
    )

    text = log_lines.getvalue()
    for secret in ("jane.doe@example.com", JWT, "secret-pass"):
        assert secret not in text
    event = json_lines(log_lines)[0]
    assert event["email"] == "j***@example.com"
    assert "p=[REDACTED]" in str(event["url"])
    assert "data=email^j***@example.com" in str(event["url"])


def test_secrets_inside_free_text_are_removed(log_lines: io.StringIO) -> None:
    get_logger("test").warning(
        f'token response {{"access_token": "{JWT}", "refresh_token": "r-123456"}} '
        "pwd=abc123 Basic dXNlcjpwYXNz"
    )

    text = log_lines.getvalue()
    assert JWT not in text
    assert "r-123456" not in text
    assert "abc123" not in text
    assert "dXNlcjpwYXNz" not in text


def test_secret_keys_are_redacted_at_any_depth(log_lines: io.StringIO) -> None:
    get_logger("test").info("headers", headers={"x-api-key": "k-abcdef", "X-REQUEST-TOKEN": "tok-abcdef"})

    assert "abcdef" not in log_lines.getvalue()


def test_registered_secrets_are_masked_wherever_they_appear(log_lines: io.StringIO) -> None:
    register_secret("a-very-odd-secret-value")
    get_logger("test").info("oops a-very-odd-secret-value leaked into a message")

    assert "a-very-odd-secret-value" not in log_lines.getvalue()


def test_standard_library_and_library_loggers_are_redacted_too(log_lines: io.StringIO) -> None:
    logging.getLogger("celery.worker").error("task failed for bob@example.org with Bearer abc.def.ghi")

    text = log_lines.getvalue()
    assert "bob@example.org" not in text
    assert "abc.def.ghi" not in text


@pytest.mark.parametrize("name", ["celery.app.trace", "kombu.transport.redis", "httpx", "billiard"])
def test_each_library_logger_masks_a_quoted_non_ascii_address(log_lines: io.StringIO, name: str) -> None:
    logging.getLogger(name).warning("failed for %s", "'jöhn.döe@exämple.com'")

    text = log_lines.getvalue()
    assert "döe" not in text
    assert "'j***@exämple.com'" in json_lines(log_lines)[0]["event"]


def test_billiards_own_logger_which_does_not_propagate_is_redacted(log_lines: io.StringIO) -> None:
    billiard_util.get_logger().error("Pool process %r error: %r", 1, ValueError("for jane@example.com"))

    assert "jane@" not in log_lines.getvalue()
    assert "j***@example.com" in log_lines.getvalue()


def test_a_logger_without_handlers_that_does_not_propagate_reaches_the_redacting_last_resort(
    log_lines: io.StringIO,
) -> None:
    orphan = logging.getLogger("test.orphan")
    orphan.propagate = False

    orphan.error("orphan line about jane@example.com")

    assert "jane@" not in log_lines.getvalue()
    assert json_lines(log_lines)[0]["event"] == "orphan line about j***@example.com"


def test_python_warnings_are_logged_redacted(log_lines: io.StringIO) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("serializer saw input_value='jane@example.com'", UserWarning, stacklevel=1)

    assert "jane@" not in log_lines.getvalue()
    assert "input_value='j***@example.com'" in log_lines.getvalue()


def test_exceptions_are_redacted(log_lines: io.StringIO) -> None:
    try:
        raise RuntimeError("provider said no to carol@example.net token=zzz999")
    except RuntimeError:
        get_logger("test").exception("delivery failed")

    text = log_lines.getvalue()
    assert "carol@example.net" not in text
    assert "zzz999" not in text


def test_httpx_request_lines_are_kept_out_of_info_logs(log_lines: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET https://x/bin/api_web?p=pw")

    assert log_lines.getvalue() == ""


def test_bound_context_appears_on_every_line(log_lines: io.StringIO) -> None:
    with bind(request_id="r-1", connection="wc-main", task_id="t-1"):
        get_logger("test").info("one")

    event = json_lines(log_lines)[0]
    assert (event["request_id"], event["connection"], event["task_id"]) == ("r-1", "wc-main", "t-1")


def test_ordinary_keys_in_an_event_keep_their_values(log_lines: io.StringIO) -> None:
    get_logger("test").info("sent", group="newsletter", step=3, setup="done", token_rate_limit="1/s")

    event = json_lines(log_lines)[0]
    assert (event["group"], event["step"], event["setup"], event["token_rate_limit"]) == (
        "newsletter",
        3,
        "done",
        "1/s",
    )


# -- values -------------------------------------------------------------------------------------


def test_keys_ending_in_a_secret_word_are_secret() -> None:
    values = {"db_password": "x1", "x-auth-token": "x2", "partner_api_key": "x3", "Session-Cookie": "x4"}

    redacted = redact_mapping(values)

    assert set(redacted.values()) == {REDACTED}


def test_keys_that_merely_contain_a_secret_word_are_not_secret() -> None:
    values = {"token_url": "https://x/token", "password_file": "/run/pw", "group": "g1", "map": "m"}

    assert redact_mapping(values) == values


def test_a_boolean_under_a_secret_key_says_whether_there_is_one() -> None:
    assert redact_value(True, "token") is True
    assert redact_value("abc", "token") == REDACTED


def test_dictionary_keys_holding_addresses_are_masked_too() -> None:
    redacted = redact_value({"outcomes": {"jane@example.com": "delivered"}})

    assert redacted == {"outcomes": {"j***@example.com": "delivered"}}


def test_a_value_nested_hundreds_deep_is_cut_off_instead_of_overflowing_the_stack() -> None:
    value: object = "jane@example.com"
    for _ in range(2000):
        value = {"targets": [value]}

    redacted = redact_value(value)

    assert TOO_DEEP in repr(redacted)
    assert "jane@" not in repr(redacted)


def test_bytes_are_decoded_and_redacted() -> None:
    assert redact_value(b"for j\xc3\xb6hn@ex\xc3\xa4mple.com") == "for j***@exämple.com"


# -- secrets in free text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("{'group': 'newsletter', 'step': 3}", "{'group': 'newsletter', 'step': 3}"),
        ("setup: done, map: m, app=web, sp=2", "setup: done, map: m, app=web, sp=2"),
        ("GET http://sandbox:8025/bin/api_web", "GET http://sandbox:8025/bin/api_web"),
        ("?group=news&p=pw-123&step=2", f"?group=news&p={REDACTED}&step=2"),
        ("password='hunter two'", f"password='{REDACTED}'"),
        ('{"password": "pa\\"ss word", "n": 1}', f'{{"password": "{REDACTED}", "n": 1}}'),
        ('{\\"client_secret\\": \\"s e c\\"}', f'{{\\"client_secret\\": \\"{REDACTED}\\"}}'),
        ("db_password=abc&x=1", f"db_password={REDACTED}&x=1"),
        ("X-Auth-Token: abc123", f"X-Auth-Token: {REDACTED}"),
        ('"token" => "t-123"', f'"token" => "{REDACTED}"'),
        ('password="unterminated value', f'password="{REDACTED}"'),
        (f"password={REDACTED}", f"password={REDACTED}"),
    ],
)
def test_secret_names_match_on_word_boundaries_and_take_the_whole_value(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("redis://:hunter2@localhost:6379/0", f"redis://:{REDACTED}@localhost:6379/0"),
        ("http://user:pw12@host/x", f"http://user:{REDACTED}@host/x"),
        ("redis://:p@ss@redis:6379", f"redis://:{REDACTED}@redis:6379"),
        ("amqp://guest:**@rabbit//", f"amqp://guest:{REDACTED}@rabbit//"),
        ("https://jane%40x.com:s3cret@host/", f"https://j***@x.com:{REDACTED}@host/"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ],
)
def test_credentials_inside_urls_are_removed_and_the_rest_kept(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


def test_ordinary_words_are_left_alone() -> None:
    assert redact_text("step=3 and app=web, 12 records") == "step=3 and app=web, 12 records"


def test_the_word_token_in_prose_is_not_mistaken_for_a_credential() -> None:
    text = "token refreshed for cc-partner; access token expires in 3600 seconds"
    assert redact_text(text) == text


def test_authorization_schemes_in_prose_are_not_mistaken_for_credentials() -> None:
    text = "the basic setup sends a bearer token, see Basic authentication"
    assert redact_text(text) == text


def test_a_token_scheme_authorization_value_is_redacted() -> None:
    assert "9f8e7d6c5b4a3210" not in redact_text("Authorization: Token 9f8e7d6c5b4a3210")
    assert "9f8e7d6c5b4a3210" not in redact_text("sent Token 9f8e7d6c5b4a3210 upstream")


# -- the one masking function -------------------------------------------------------------------


def test_the_logs_use_the_producers_masking_function() -> None:
    assert worker.logs.mask_email is producer.masking.mask_email


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("x@y.io", "x***@y.io"),
        ("JANE@EXAMPLE.COM", "J***@EXAMPLE.COM"),
        ("jöhn.döe@exämple.com", "j***@exämple.com"),
        ("öla@例え.テスト", "ö***@例え.テスト"),
        ("jane@xn--exmple-cua.com", "j***@xn--exmple-cua.com"),
        ("'jane'@example.com", "****@example.com"),  # the first character shown only if alphanumeric
        ("a@b@example.com", "a***@example.com"),  # the domain is what follows the last '@'
        ("nonsense", "***"),  # no '@'
        ("@example.com", "***"),  # nothing before it
        ("jane@", "***"),  # nothing after it
        ("jane%40example.com", "***"),  # escapes are not decoded: no '@'
        ("jane@exa mple.com", "***"),  # not hostname-shaped: nothing shown
        ("jane@example.com\r\nBcc: x", "***"),
        ("jane@exa\u202emple.com", "***"),  # a bidi override could disguise the line
        ("", "***"),
    ],
)
def test_mask_email_shows_at_most_a_letter_and_a_hostname(address: str, masked: str) -> None:
    assert mask_email(address) == masked
