"""Security promises: CSRF on session-authenticated writes, staff-only admin, no internals in errors."""

import pytest
from django.test import Client

from chat.models import ChatMessage

URL = "/api/chat/messages"
BODY = '{"sessionId": "s1", "message": {"role": "user", "content": "hi"}}'


@pytest.fixture
def browser(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def test_session_authenticated_write_without_csrf_token_is_forbidden(browser):
    response = browser.post(URL, BODY, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    assert "CSRF" in response.json()["message"]
    assert not ChatMessage.objects.exists()


def test_session_authenticated_write_with_csrf_token_is_accepted(browser):
    browser.get("/api/chat/sessions", HTTP_ACCEPT="text/html")  # the browsable API sets the cookie
    token = browser.cookies["csrftoken"].value
    response = browser.post(URL, BODY, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201


def test_session_authenticated_read_needs_no_csrf_token(browser):
    assert browser.get("/api/chat/sessions").status_code == 200


def test_token_authenticated_writes_need_no_csrf_token(alice):
    from tests.support import ApiClient

    client = ApiClient(alice.api_token, enforce_csrf_checks=True)
    assert client.post_json(URL, {"sessionId": "s1", "message": {"role": "user"}}).status_code == 201


@pytest.mark.parametrize(
    "path", ["/admin/", "/admin/chat/chatsession/", "/admin/chat/chatmessage/", "/admin/accounts/user/"]
)
def test_admin_pages_need_staff(client, alice, path):
    assert client.get(path).status_code == 302
    client.force_login(alice)
    response = client.get(path)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_api_token_does_not_open_the_admin(alice, staff):
    from tests.support import ApiClient

    response = ApiClient(staff.api_token).get("/admin/chat/chatsession/")
    assert response.status_code == 302


def test_the_browsable_api_escapes_stored_content(as_alice, alice):
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user", "content": "<script>alert(1)</script>"}})
    browser = Client()
    browser.force_login(alice)
    page = browser.get(URL, {"session_id": "s1"}, HTTP_ACCEPT="text/html").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_responses_forbid_framing_and_sniffing(as_alice):
    response = as_alice.get("/api/chat/sessions")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
