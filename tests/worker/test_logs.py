"""Log redaction: no secret and no clear email address ever reaches a log line."""

from __future__ import annotations

import io
import json
import logging

import pytest

from worker.logs import configure_logging, get_logger, mask_email, redact_text, register_secret

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwYXJ0bmVyIn0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture
def log_lines() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


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
    event = lines(log_lines)[0]
    assert event["email"] == "j***@example.com"
    assert "p=[REDACTED]" in str(event["url"])
    assert "j***@example.com" in str(event["url"])


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
    from worker.logs import bind

    with bind(request_id="r-1", connection="wc-main", task_id="t-1"):
        get_logger("test").info("one")

    event = lines(log_lines)[0]
    assert (event["request_id"], event["connection"], event["task_id"]) == ("r-1", "wc-main", "t-1")


@pytest.mark.parametrize(
    ("address", "masked"),
    [("jane.doe@example.com", "j***@example.com"), ("x@y.io", "x***@y.io"), ("nonsense", "***")],
)
def test_mask_email(address: str, masked: str) -> None:
    assert mask_email(address) == masked


def test_ordinary_words_are_left_alone() -> None:
    assert redact_text("step=3 and app=web, 12 records") == "step=3 and app=web, 12 records"


def test_the_word_token_in_prose_is_not_mistaken_for_a_credential() -> None:
    text = "token refreshed for cc-partner; access token expires in 3600 seconds"
    assert redact_text(text) == text


def test_a_token_scheme_authorization_value_is_redacted() -> None:
    assert "9f8e7d6c5b4a3210" not in redact_text("Authorization: Token 9f8e7d6c5b4a3210")
    assert "9f8e7d6c5b4a3210" not in redact_text("sent Token 9f8e7d6c5b4a3210 upstream")
