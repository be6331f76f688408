"""The one error envelope, on every endpoint and for every kind of bad request."""

import uuid

import pytest

from tests.support import assert_envelope

URL = "/api/chat/messages"


def test_unknown_url_is_a_not_found_envelope(anon):
    assert_envelope(anon.get("/api/nothing/here"), 404, "NOT_FOUND")


def test_wrong_method_is_method_not_allowed(as_alice):
    assert_envelope(as_alice.put(URL, {}, content_type="application/json"), 405, "METHOD_NOT_ALLOWED")


def test_malformed_json_is_a_validation_error(as_alice):
    body = assert_envelope(
        as_alice.post(URL, '{"sessionId": ', content_type="application/json"), 400, "VALIDATION_ERROR"
    )
    assert "body" in body["error"]["details"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sessionId": "s1", "message": {"role": "user", "content": "\xff\xfe"}}',  # invalid UTF-8
        b'{"sessionId": "s1", "message": {"role": "user", "content": "\\ud800"}}',  # lone surrogate
        b'{"sessionId": "s1", "message": {"role": "user", "total_tokens": NaN}}',
        b"[" * 5000 + b"]" * 5000,  # deep nesting
        b"",
    ],
)
def test_undecodable_bodies_are_validation_errors(as_alice, raw):
    assert_envelope(as_alice.post(URL, raw, content_type="application/json"), 400, "VALIDATION_ERROR")


def test_a_body_that_is_not_json_is_unsupported(as_alice):
    assert_envelope(
        as_alice.post(URL, "sessionId=s1", content_type="application/x-www-form-urlencoded"),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    assert_envelope(as_alice.post(URL, "hello", content_type="text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_body_over_the_limit_is_too_large(as_alice, settings):
    big = '{"sessionId": "s1", "message": {"role": "user", "content": "' + "x" * (1024 * 1024) + '"}}'
    assert_envelope(as_alice.post(URL, big, content_type="application/json"), 413, "PAYLOAD_TOO_LARGE")


def test_a_lying_content_length_is_a_validation_error(as_alice):
    response = as_alice.generic("POST", URL, b"{}", content_type="application/json", CONTENT_LENGTH="-5")
    assert_envelope(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "user", "content": "a\x00b"}, "content"),
        ({"role": "user", "model": "\x00"}, "model"),
        ({"role": "user", "suggestions": ["ok", "n\x00"]}, "suggestions"),
        ({"role": "user", "error_message": "\x00"}, "error_message"),
        ({"role": "user", "total_tokens": 2**31}, "total_tokens"),
        ({"role": "user", "total_tokens": 10**30}, "total_tokens"),
        ({"role": "user", "elapsed_time": -1}, "elapsed_time"),
        ({"role": "user", "retry_after": 1.5}, "retry_after"),
        ({"role": "user", "input_tokens": "42"}, "input_tokens"),
        ({"role": "user", "output_tokens": True}, "output_tokens"),
        ({"role": "user", "content": 42}, "content"),
        ({"role": "user", "error": "yes"}, "error"),
        ({"role": "user", "timestamp": 1700000000}, "timestamp"),
        ({"role": "user", "timestamp": "yesterday"}, "timestamp"),
        ({"role": "user", "timestamp": "0000-01-01T00:00:00Z"}, "timestamp"),
        ({"role": "user", "timestamp": "9999-12-31T23:59:59-05:00"}, "timestamp"),
        ({"role": "user", "suggestions": ["s"] * 21}, "suggestions"),
        ({"role": "user", "suggestions": "one"}, "suggestions"),
        ({"role": "user", "contentType": "html"}, "contentType"),
        ({"role": "admin"}, "role"),
        ({"content": "no role"}, "role"),
        ({"role": "user", "id": "x" * 129}, "id"),
        ({"role": "user", "id": "has space"}, "id"),
        ({"role": "user", "id": ""}, "id"),
        ({"role": "user", "model": "m" * 256}, "model"),
    ],
)
def test_bad_message_fields_are_named(as_alice, message, field):
    response = as_alice.post_json(URL, {"sessionId": "s1", "message": message})
    body = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert field in body["error"]["details"]["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"message": {"role": "user"}}, "sessionId"),
        ({"sessionId": "", "message": {"role": "user"}}, "sessionId"),
        ({"sessionId": "a/b", "message": {"role": "user"}}, "sessionId"),
        ({"sessionId": "s\x00", "message": {"role": "user"}}, "sessionId"),
        ({"sessionId": "x" * 129, "message": {"role": "user"}}, "sessionId"),
        ({"sessionId": 12, "message": {"role": "user"}}, "sessionId"),
        ({"sessionId": "s1", "sessionTitle": "t" * 256, "message": {"role": "user"}}, "sessionTitle"),
        ({"sessionId": "s1", "sessionTitle": "\x00", "message": {"role": "user"}}, "sessionTitle"),
        ({"sessionId": "s1"}, "non_field_errors"),
        ({"sessionId": "s1", "message": {"role": "user"}, "messages": [{"role": "user"}]}, "non_field_errors"),
        ({"sessionId": "s1", "messages": []}, "messages"),
        ({"sessionId": "s1", "messages": [{"role": "user"}] * 101}, "messages"),
        ({"sessionId": "s1", "messages": {"role": "user"}}, "messages"),
        ({"sessionId": "s1", "message": [{"role": "user"}]}, "message"),
    ],
)
def test_bad_requests_are_named(as_alice, payload, field):
    body = assert_envelope(as_alice.post_json(URL, payload), 400, "VALIDATION_ERROR")
    assert field in body["error"]["details"]


def test_a_json_array_body_is_a_validation_error(as_alice):
    assert_envelope(as_alice.post_json(URL, [1, 2]), 400, "VALIDATION_ERROR")


def test_a_hundred_messages_are_accepted(as_alice):
    response = as_alice.post_json(URL, {"sessionId": "s1", "messages": [{"role": "user"}] * 100})
    assert response.status_code == 201
    assert response.json()["count"] == 100


def test_the_request_id_is_echoed_when_well_formed(as_alice):
    response = as_alice.get(URL, {"session_id": "nope"}, HTTP_X_REQUEST_ID="req-123_abc.DEF")
    assert response["X-Request-ID"] == "req-123_abc.DEF"
    assert response.json()["trace_id"] == "req-123_abc.DEF"


def test_the_correlation_id_is_used_when_the_request_id_is_malformed(as_alice):
    response = as_alice.get(
        URL, {"session_id": "nope"}, HTTP_X_REQUEST_ID="bad id with spaces", HTTP_X_CORRELATION_ID="corr-1"
    )
    assert response["X-Request-ID"] == "corr-1"


def test_a_new_trace_id_is_made_otherwise(as_alice):
    response = as_alice.get(URL, {"session_id": "nope"}, HTTP_X_REQUEST_ID="x" * 65)
    assert uuid.UUID(response["X-Request-ID"]).version == 4


def test_successful_responses_carry_the_request_id_too(as_alice):
    response = as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user"}}, HTTP_X_REQUEST_ID="abc")
    assert response.status_code == 201
    assert response["X-Request-ID"] == "abc"


def test_errors_show_no_internals_when_debug_is_off(as_alice, monkeypatch):
    from chat import selectors

    def explode(**kwargs):
        raise RuntimeError("SELECT secret FROM internals")

    monkeypatch.setattr(selectors, "session_history", explode)
    response = as_alice.get(URL, {"session_id": "s1"})
    assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "secret" not in response.content.decode()
    assert "Traceback" not in response.content.decode()


def test_a_trailing_newline_is_not_a_valid_id(as_alice):
    body = assert_envelope(
        as_alice.post_json(URL, {"sessionId": "s1\n", "message": {"role": "user"}}), 400, "VALIDATION_ERROR"
    )
    assert "sessionId" in body["error"]["details"]


def test_a_django_validation_error_in_an_api_view_is_a_400_envelope(as_alice, monkeypatch):
    from django.core.exceptions import ValidationError

    from chat import selectors

    def refuse(**kwargs):
        raise ValidationError("“x” value has an invalid format.")

    monkeypatch.setattr(selectors, "session_history", refuse)
    body = assert_envelope(as_alice.get(URL, {"session_id": "s1"}), 400, "VALIDATION_ERROR")
    assert body["error"]["details"] == {"non_field_errors": ["“x” value has an invalid format."]}


def test_a_django_validation_error_in_a_plain_view_is_a_400_envelope(anon, monkeypatch):
    from django.core.exceptions import ValidationError

    from chat.api import health

    def refuse():
        raise ValidationError("bad value")

    monkeypatch.setattr(health, "database_ready", refuse)
    body = assert_envelope(anon.get("/readyz"), 400, "VALIDATION_ERROR")
    assert body["error"]["details"] == {"non_field_errors": ["bad value"]}
