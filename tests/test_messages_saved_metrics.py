"""Messages saved are counted by source, once their transaction commits."""

from django.contrib.admin.utils import quote
from django.test import Client
from prometheus_client import REGISTRY

from chat.models import ChatSession


def saved(source: str) -> float:
    return REGISTRY.get_sample_value("chat_messages_saved_total", {"source": source}) or 0.0


def test_every_write_path_counts_its_source(as_alice, as_staff, staff, django_capture_on_commit_callbacks):
    before = {source: saved(source) for source in ("api", "guest", "staff", "admin")}
    with django_capture_on_commit_callbacks(execute=True):
        as_alice.post_json("/api/chat/messages", {"sessionId": "s1", "messages": [{"role": "user"}] * 3})
        key = (
            Client().post("/api/v1/chat/guest/sessions", content_type="application/json").json()["data"]["session_key"]
        )
        Client().post(f"/api/v1/chat/guest/{key}/messages", {"content": "hi"}, content_type="application/json")
        as_staff.post_json(f"/api/v1/chat/guest/{key}/replies", {"content": "hello"})
        browser = Client()
        staff.is_superuser = True
        staff.save(update_fields=["is_superuser"])
        browser.force_login(staff)
        session = ChatSession.objects.get(session_key=key)
        # quote(): the admin reads "_22" in a URL as '"' (a guest id is "guest_" and hex).
        browser.post(f"/admin/chat/chatsession/{quote(session.pk)}/reply/", {"reply_content": "from the admin"})

    assert saved("api") - before["api"] == 3
    assert saved("guest") - before["guest"] == 1
    assert saved("staff") - before["staff"] == 1
    assert saved("admin") - before["admin"] == 1
    assert ChatSession.objects.get(session_key=key).message_count == 3


def test_a_rejected_save_counts_nothing(as_alice, as_charlie, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        as_alice.post_json("/api/chat/messages", {"sessionId": "s1", "message": {"role": "user"}})
    before = saved("api")
    with django_capture_on_commit_callbacks(execute=True):
        response = as_charlie.post_json("/api/chat/messages", {"sessionId": "s1", "message": {"role": "user"}})
    assert response.status_code == 403
    assert saved("api") == before
