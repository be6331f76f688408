"""Staff reply to guests from the Django admin, through the same service as the API."""

import re

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client

from accounts.models import User
from chat.models import ChatMessage, ChatSession
from tests.support import ApiClient, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def guest_session() -> ChatSession:
    guest = ApiClient()
    key = guest.post_json("/api/v1/chat/guest/sessions", {"guest_name": "Visitor"}).json()["data"]["session_key"]
    guest.post_json(f"/api/v1/chat/guest/{key}/messages", {"content": "Anyone there?"})
    return ChatSession.objects.get(session_key=key)


def change_url(session: ChatSession) -> str:
    return f"/admin/chat/chatsession/{quote(session.pk)}/change/"


def reply_url(session: ChatSession) -> str:
    return f"/admin/chat/chatsession/{quote(session.pk)}/reply/"


def test_the_guest_session_page_has_a_reply_box_that_posts_to_the_reply_view(staff_browser, guest_session):
    page = staff_browser.get(change_url(guest_session)).content.decode()
    assert "name='reply_content'" in page
    assert f"formaction='{reply_url(guest_session)}'" in page
    assert "Anyone there?" in page


def test_a_reply_from_the_admin_reaches_the_guests_poll(staff_browser, staff, guest_session):
    response = staff_browser.post(reply_url(guest_session), {"reply_content": "Yes, how can I help?"}, follow=True)

    assert response.redirect_chain == [(change_url(guest_session), 302)]
    assert "Reply sent to the guest." in response.content.decode()
    reply = ChatMessage.objects.get(session=guest_session, role="assistant")
    assert reply.author == staff and reply.content == "Yes, how can I help?"
    guest_session.refresh_from_db()
    assert guest_session.message_count == 2 and guest_session.last_message_preview == "Yes, how can I help?"

    polled = ApiClient().get(f"/api/v1/chat/guest/{guest_session.session_key}/messages").json()["data"]
    assert [(m["role"], m["content"]) for m in polled] == [
        ("user", "Anyone there?"),
        ("assistant", "Yes, how can I help?"),
    ]


def page_reply_id(staff_browser, session: ChatSession) -> str:
    page = staff_browser.get(change_url(session)).content.decode()
    return re.search(r"name='reply_id' value='([^']+)'", page).group(1)


def test_a_reply_sent_twice_from_one_page_is_stored_once(staff_browser, staff, guest_session):
    reply_id = page_reply_id(staff_browser, guest_session)
    assert reply_id != page_reply_id(staff_browser, guest_session)  # each page load: a reply of its own

    for _ in range(2):  # a double click, or the browser re-sending the POST
        response = staff_browser.post(
            reply_url(guest_session), {"reply_content": "On it.", "reply_id": reply_id}, follow=True
        )
        assert "Reply sent to the guest." in response.content.decode()

    [reply] = ChatMessage.objects.filter(session=guest_session, role="assistant")
    assert (reply.message_id, reply.content, reply.author) == (reply_id, "On it.", staff)
    guest_session.refresh_from_db()
    assert guest_session.message_count == 2


def test_a_reply_id_of_the_guests_message_is_refused(staff_browser, guest_session):
    guest_id = ChatMessage.objects.get(session=guest_session).message_id
    response = staff_browser.post(reply_url(guest_session), {"reply_content": "hi", "reply_id": guest_id}, follow=True)
    assert "Reply not sent" in response.content.decode()
    assert not ChatMessage.objects.filter(role="assistant").exists()


@pytest.mark.parametrize("reply_id", ["..", "has space", "x" * 300])
def test_a_bad_reply_id_is_refused_with_a_message(staff_browser, guest_session, reply_id):
    response = staff_browser.post(reply_url(guest_session), {"reply_content": "hi", "reply_id": reply_id}, follow=True)
    assert "Reply not sent" in response.content.decode()
    assert not ChatMessage.objects.filter(role="assistant").exists()


def test_saving_the_page_with_a_draft_reply_sends_nothing(staff_browser, guest_session):
    form = {"guest_name": "Visitor", "title": "Renamed", "user": "", "reply_content": "draft", "_save": "Save"}
    assert staff_browser.post(change_url(guest_session), form).status_code == 302
    guest_session.refresh_from_db()
    assert guest_session.title == "Renamed" and guest_session.message_count == 1


@pytest.mark.parametrize("content", ["", "   ", "x" * 2001, "a\u0000b"], ids=["empty", "blank", "too-long", "nul"])
def test_a_bad_reply_is_refused_with_a_message(staff_browser, guest_session, content):
    response = staff_browser.post(reply_url(guest_session), {"reply_content": content}, follow=True)
    assert "Reply not sent" in response.content.decode()
    assert not ChatMessage.objects.filter(role="assistant").exists()


def test_an_owned_session_takes_no_reply(staff_browser, as_alice):
    as_alice.post_json("/api/chat/messages", {"sessionId": "mine", "message": {"role": "user", "content": "hi"}})
    owned = ChatSession.objects.get(pk="mine")
    assert "Only guest sessions take staff replies." in staff_browser.get(change_url(owned)).content.decode()

    response = staff_browser.post(reply_url(owned), {"reply_content": "hello"}, follow=True)
    assert "Reply not sent: Session not found" in response.content.decode()
    assert ChatMessage.objects.filter(session=owned).count() == 1


def test_the_reply_view_takes_only_posts_of_known_sessions(staff_browser, guest_session):
    assert staff_browser.get(reply_url(guest_session)).status_code == 405
    assert staff_browser.post("/admin/chat/chatsession/nope/reply/", {"reply_content": "hi"}).status_code == 404


def test_replying_needs_staff_with_the_change_permission(client, alice, guest_session):
    url = reply_url(guest_session)
    assert client.post(url, {"reply_content": "hi"}).status_code == 302  # to the login page
    client.force_login(alice)
    assert client.post(url, {"reply_content": "hi"}).status_code == 302

    viewer: User = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_chatsession"))
    client.force_login(viewer)
    assert client.post(url, {"reply_content": "hi"}).status_code == 403
    assert not ChatMessage.objects.filter(role="assistant").exists()


def test_the_reply_needs_the_pages_csrf_token(staff, guest_session):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    assert browser.post(reply_url(guest_session), {"reply_content": "hi"}).status_code == 403
    assert not ChatMessage.objects.filter(role="assistant").exists()


def test_the_list_filters_guest_sessions_newest_activity_first(staff_browser, guest_session, as_alice):
    older = ChatSession.objects.create(id="guest_old", guest_name="Old")
    ChatSession.objects.filter(pk=older.pk).update(updated_at=guest_session.updated_at.replace(year=2020))
    as_alice.post_json("/api/chat/messages", {"sessionId": "owned-1", "message": {"role": "user", "content": "x"}})

    page = staff_browser.get("/admin/chat/chatsession/?kind=guest").content.decode()
    assert guest_session.pk in page and "guest_old" in page and "owned-1" not in page
    assert page.index(guest_session.pk) < page.index("guest_old")
