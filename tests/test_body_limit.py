"""BodySizeLimitMiddleware's chunked path: a body without Content-Length is read up to the limit and handed on.

It replaces the request's private `_stream` (Django reads a body of no declared
length as empty): a Django upgrade that renames it makes the first test fail.
"""

import io
import json

from tests.support import assert_envelope

MESSAGES = "/api/chat/messages"


def chunked_post(client, body: bytes):
    # As gunicorn hands on a chunked request: the body de-chunked in wsgi.input, no CONTENT_LENGTH.
    # (A stream that ends, as gunicorn's does; the test client's own refuses reads past its length.)
    stream = {"wsgi.input": io.BytesIO(body)}
    return client.generic(
        "POST",
        MESSAGES,
        body,
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **stream,
    )


def test_a_chunked_body_under_the_limit_is_read_whole(as_alice):
    body = json.dumps({"sessionId": "chunked-1", "message": {"id": "m1", "role": "user", "content": "sent chunked"}})
    response = chunked_post(as_alice, body.encode())
    assert response.status_code == 201, response.content
    saved = as_alice.get(MESSAGES, {"session_id": "chunked-1"}).json()
    assert [m["content"] for m in saved] == ["sent chunked"]


def test_a_chunked_body_over_the_limit_is_a_413(as_alice, settings):
    limit = settings.MAX_REQUEST_BODY_BYTES
    body = b'{"sessionId": "chunked-2", "message": {"role": "user", "content": "' + b"x" * limit + b'"}}'
    assert_envelope(chunked_post(as_alice, body), 413, "PAYLOAD_TOO_LARGE")
