"""DRF's reference cycles around a response are broken (chat/api/base.py), so every response is freed when sent.

DRF keeps the response on the view (`view.response`) and, while rendering, the
response in its own `renderer_context` (with the view beside it). Without
ApiView's breaks each response, and its data, waited for a full garbage
collection. Through Django's own WSGI handler and the real URLs, with the
collector off, a response must die when the server drops it: a DRF upgrade that
adds another cycle fails here.
"""

import gc
import io
import weakref

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from tests.support import make_user


def serve(path: str, headers: dict | None = None) -> weakref.ref:
    """One request through the WSGI handler as a server makes it; a weak reference to its response, once sent."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        **(headers or {}),
    }
    statuses = []
    # As Django's test client does: the test's database connection (in its transaction) stays open.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
        b"".join(response)  # the server writes the body, then closes the response
        response.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert statuses and statuses[0].startswith(("200", "401")), statuses
    ref = weakref.ref(response)
    del response
    return ref


@pytest.fixture
def collector_off():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.django_db
@pytest.mark.parametrize("authenticated", [False, True])
def test_a_drf_response_is_freed_when_sent_without_a_garbage_collection(collector_off, authenticated):
    headers = {}
    if authenticated:
        headers["HTTP_AUTHORIZATION"] = f"Token {make_user('memo').api_token}"
    response = serve("/api/chat/sessions", headers)
    assert response() is None, [type(r).__name__ for r in gc.get_referrers(response())]
