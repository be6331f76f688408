"""Guest live chat through the real URLs: create, send, staff reply, poll."""

import re
import uuid

import pytest

from chat import selectors, services
from chat.models import ChatMessage, ChatSession, Role
from chat.selectors import guest as guest_selectors
from tests.support import ApiClient, assert_envelope

CREATE = "/api/v1/chat/guest/sessions"
RESOURCE_KEYS = {"id", "message_id", "role", "content", "contentType", "timestamp"}
TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

pytestmark = pytest.mark.django_db


def messages_url(key) -> str:
    return f"/api/v1/chat/guest/{key}/messages"


def replies_url(key) -> str:
    return f"/api/v1/chat/guest/{key}/replies"


def assert_not_found(response) -> None:
    body = assert_envelope(response, status=404)
    assert body["error"] == {"code": "NOT_FOUND", "details": None}
    assert body["message"] == "Session not found"


@pytest.fixture
def guest() -> ApiClient:
    return ApiClient()


def create(client) -> str:
    """A new guest session's key, made as `curl -X POST` does: no body, no Content-Type."""
    return client.generic("POST", CREATE).json()["data"]["session_key"]


@pytest.fixture
def key(guest) -> str:
    return create(guest)


def send(client, key, content="hello", **extra):
    return client.post_json(messages_url(key), {"content": content, **extra})


def poll(client, key, **params):
    return client.get(messages_url(key), params)


def test_a_whole_conversation(guest, as_staff, staff):
    created = assert_envelope(guest.post_json(CREATE, {"guest_name": "Ann"}), status=201)
    key = created["data"]["session_key"]
    assert set(created["data"]) == {"session_key", "created_at"}
    assert str(uuid.UUID(key)) == key
    assert TIMESTAMP_RE.fullmatch(created["data"]["created_at"])

    sent = assert_envelope(send(guest, key, "Is the shop open on Sunday?"), status=201, message="Message sent")["data"]
    assert set(sent) == RESOURCE_KEYS
    assert sent["role"] == "user" and sent["content"] == "Is the shop open on Sunday?"
    assert sent["contentType"] == "text" and isinstance(sent["id"], int)
    assert sent["message_id"].startswith("msg_")

    reply = as_staff.post_json(replies_url(key), {"content": "Yes, 10 to 4."})
    replied = assert_envelope(reply, status=201, message="Reply sent")["data"]
    assert replied["role"] == "assistant" and replied["id"] > sent["id"]

    everything = assert_envelope(poll(guest, key), status=200, message="Messages retrieved")
    assert everything["data"] == [sent, replied]
    assert everything["meta"] == {"last_message_id": replied["id"], "has_more": False}

    after_first = poll(guest, key, last_message_id=sent["id"]).json()
    assert after_first["data"] == [replied]
    nothing_new = poll(guest, key, last_message_id=replied["id"]).json()
    assert nothing_new["data"] == []
    assert nothing_new["meta"] == {"last_message_id": replied["id"], "has_more": False}

    session = ChatSession.objects.get(session_key=key)
    assert session.user_id is None and session.guest_name == "Ann"
    assert session.message_count == 2
    assert session.last_message_preview == "Yes, 10 to 4."
    assert session.title == "Is the shop open on Sunday?"
    assert ChatMessage.objects.get(pk=replied["id"]).author == staff


def test_a_session_can_be_created_without_any_body_or_content_type(guest):
    response = guest.generic("POST", CREATE, b"")
    assert "CONTENT_TYPE" not in response.wsgi_request.META or not response.wsgi_request.META["CONTENT_TYPE"]
    data = assert_envelope(response, status=201, message="Guest session created")["data"]
    assert ChatSession.objects.get(session_key=data["session_key"]).guest_name == ""


@pytest.mark.parametrize(
    "body",
    [{"guest_name": "x" * 101}, {"guest_name": 7}, {"guest_name": "a\u0000b"}],
    ids=["too-long", "not-a-string", "nul"],
)
def test_a_bad_guest_name_is_a_400(guest, body):
    body = assert_envelope(guest.post_json(CREATE, body), status=400)
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert "guest_name" in body["error"]["details"]
    assert not ChatSession.objects.exists()


def test_a_body_that_is_not_json_is_a_415(guest):
    response = guest.post(CREATE, "guest_name=Ann", content_type="text/plain")
    assert assert_envelope(response, status=415)["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_an_unknown_key_is_a_404_everywhere(guest, as_staff):
    unknown = str(uuid.uuid4())
    assert_not_found(poll(guest, unknown))
    assert_not_found(send(guest, unknown))
    assert_not_found(as_staff.post_json(replies_url(unknown), {"content": "hi"}))


@pytest.mark.parametrize(
    "segment",
    ["not-a-uuid", "12345", "0" * 32, "{00000000-0000-0000-0000-000000000000}", "%E2%98%83", "a" * 300],
    ids=["word", "digits", "hex-without-dashes", "braces", "snowman", "long"],
)
def test_a_key_that_is_not_a_uuid_is_a_404_like_an_unknown_one(guest, as_staff, segment):
    assert_not_found(poll(guest, segment))
    assert_not_found(send(guest, segment))
    assert_not_found(as_staff.post_json(replies_url(segment), {"content": "hi"}))


def test_another_spelling_of_a_real_key_is_a_404(guest, key):
    send(guest, key)
    assert_not_found(poll(guest, key.upper()))
    assert_not_found(poll(guest, uuid.UUID(key).hex))


def test_the_key_of_an_owned_session_answers_like_an_unknown_key(guest, as_alice, as_staff, alice):
    as_alice.post_json("/api/chat/messages", {"sessionId": "mine", "message": {"role": "user", "content": "secret"}})
    owned_key = str(ChatSession.objects.get(pk="mine").session_key)

    assert_not_found(poll(guest, owned_key))
    assert_not_found(send(guest, owned_key))
    assert_not_found(as_staff.post_json(replies_url(owned_key), {"content": "hi"}))
    assert ChatMessage.objects.filter(session_id="mine").count() == 1


def test_a_poll_never_shows_another_sessions_messages(guest, key):
    other_key = create(guest)
    mine = send(guest, key, "mine").json()["data"]
    send(guest, other_key, "theirs")
    send(guest, other_key, "theirs too")

    assert poll(guest, key).json()["data"] == [mine]
    assert [m["content"] for m in poll(guest, other_key).json()["data"]] == ["theirs", "theirs too"]


def test_polling_pages_through_more_than_a_hundred_messages(guest, key, settings):
    settings.RATE_LIMIT_ENABLED = False
    ids = [services.guest_message_send(session_key=uuid.UUID(key), content=f"m{i}").pk for i in range(205)]

    seen, cursor, pages = [], 0, []
    while True:
        body = poll(guest, key, last_message_id=cursor).json()
        pages.append((len(body["data"]), body["meta"]["has_more"]))
        seen += [m["id"] for m in body["data"]]
        cursor = body["meta"]["last_message_id"]
        if not body["meta"]["has_more"]:
            break

    assert pages == [(100, True), (100, True), (5, False)]
    assert seen == ids
    assert cursor == ids[-1]


def test_exactly_a_hundred_new_messages_have_no_more(guest, key, settings):
    settings.RATE_LIMIT_ENABLED = False
    for i in range(100):
        services.guest_message_send(session_key=uuid.UUID(key), content=f"m{i}")
    body = poll(guest, key).json()
    assert len(body["data"]) == 100 and body["meta"]["has_more"] is False


@pytest.mark.parametrize(
    "value",
    ["abc", "-1", "1.5", str(2**63), "\u0663", "", " 1", "1 ", "+1", "0x10", "1e3", "9" * 40],
    ids=[
        "word",
        "negative",
        "decimal",
        "2^63",
        "arabic-indic-3",
        "empty",
        "lead-space",
        "trail-space",
        "plus",
        "hex",
        "exponent",
        "huge",
    ],
)
def test_a_junk_last_message_id_is_a_400_naming_the_parameter(guest, key, value):
    send(guest, key)
    body = assert_envelope(poll(guest, key, last_message_id=value), status=400)
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert list(body["error"]["details"]) == ["last_message_id"]


def test_a_repeated_last_message_id_is_a_400(guest, key):
    response = guest.get(messages_url(key) + "?last_message_id=1&last_message_id=2")
    assert assert_envelope(response, status=400)["error"]["details"].keys() == {"last_message_id"}


def test_the_largest_cursor_is_accepted(guest, key):
    sent = send(guest, key).json()["data"]
    body = assert_envelope(poll(guest, key, last_message_id=str(2**63 - 1)), status=200)
    assert body["data"] == [] and body["meta"]["last_message_id"] == 2**63 - 1
    leading_zeros = poll(guest, key, last_message_id=f"00{sent['id']}").json()
    assert leading_zeros["data"] == [] and leading_zeros["meta"]["last_message_id"] == sent["id"]


def test_a_junk_cursor_is_refused_before_any_query_whatever_the_key(guest, key, django_assert_num_queries):
    for some_key in (key, str(uuid.uuid4())):
        with django_assert_num_queries(0):
            assert poll(guest, some_key, last_message_id="abc").status_code == 400


def test_a_retry_with_the_same_id_stores_nothing_new(guest, key):
    first = assert_envelope(send(guest, key, "hello", id="client-1"), status=201)["data"]
    again = assert_envelope(send(guest, key, "hello, edited", id="client-1"), status=201)["data"]

    assert again == first
    assert first["message_id"] == "client-1" and first["content"] == "hello"
    session = ChatSession.objects.get(session_key=key)
    assert session.message_count == 1 == ChatMessage.objects.filter(session=session).count()
    assert ChatMessage.objects.get(session=session).content == "hello"


def test_the_same_client_id_in_two_sessions_is_two_messages(guest, key):
    other_key = create(guest)
    a = send(guest, key, "a", id="same").json()["data"]
    b = send(guest, other_key, "b", id="same").json()["data"]
    assert a["id"] != b["id"] and (a["content"], b["content"]) == ("a", "b")


def test_the_id_of_a_staff_reply_is_a_conflict_not_a_retry(guest, key, as_staff):
    reply = as_staff.post_json(replies_url(key), {"content": "staff text"}).json()["data"]

    body = assert_envelope(send(guest, key, "guest text", id=reply["message_id"]), status=409)

    assert body["error"] == {"code": "CONFLICT", "details": {"id": [reply["message_id"]]}}
    assert [(m["role"], m["content"]) for m in poll(guest, key).json()["data"]] == [("assistant", "staff text")]
    # The guest's own retry is still a retry.
    first = send(guest, key, "mine", id="w-1").json()["data"]
    assert send(guest, key, "mine", id="w-1").json()["data"] == first


def test_without_an_id_every_send_is_a_new_message(guest, key):
    a = send(guest, key, "same").json()["data"]
    b = send(guest, key, "same").json()["data"]
    assert a["id"] != b["id"] and a["message_id"] != b["message_id"]


@pytest.mark.parametrize(
    "body",
    [
        {"content": ""},
        {"content": "   \n\t "},
        {"content": "x" * 2001},
        {"content": "a\u0000b"},
        {"content": 42},
        {"content": None},
        {},
    ],
    ids=["empty", "blank", "too-long", "nul", "number", "null", "missing"],
)
def test_bad_content_is_a_400_and_stores_nothing(guest, key, body):
    response = guest.post_json(messages_url(key), body)
    error = assert_envelope(response, status=400)["error"]
    assert error["code"] == "VALIDATION_ERROR" and "content" in error["details"]
    assert not ChatMessage.objects.exists()


@pytest.mark.parametrize(
    "client_id", ["has space", "x" * 129, "trailing\n", 7], ids=["space", "long", "newline", "int"]
)
def test_a_bad_client_id_is_a_400(guest, key, client_id):
    error = assert_envelope(send(guest, key, id=client_id), status=400)["error"]
    assert "id" in error["details"]


def test_content_is_stored_as_sent(guest, key):
    text = "  two thousand  " + "é" * 1984
    assert len(text) == 2000
    sent = send(guest, key, text).json()["data"]
    assert sent["content"] == text == ChatMessage.objects.get().content


def test_a_retried_staff_reply_stores_one_message(as_staff, key):
    first = assert_envelope(as_staff.post_json(replies_url(key), {"content": "Yes", "id": "inbox_1"}), status=201)
    again = assert_envelope(as_staff.post_json(replies_url(key), {"content": "Yes!", "id": "inbox_1"}), status=201)

    assert again["data"] == first["data"]
    assert first["data"]["message_id"] == "inbox_1" and first["data"]["role"] == "assistant"
    session = ChatSession.objects.get(session_key=key)
    assert session.message_count == 1
    assert list(ChatMessage.objects.filter(session=session).values_list("content", flat=True)) == ["Yes"]


def test_a_staff_reply_with_the_id_of_another_message_is_a_conflict(guest, key, as_staff, as_bob, bob):
    send(guest, key, "guest text", id="w-1")
    as_staff.post_json(replies_url(key), {"content": "from sam", "id": "inbox_1"})
    bob.is_staff = True
    bob.save(update_fields=["is_staff"])

    for client, taken in ((as_staff, "w-1"), (as_bob, "inbox_1")):  # the guest's; another staff member's
        body = assert_envelope(client.post_json(replies_url(key), {"content": "again", "id": taken}), status=409)
        assert body["error"] == {"code": "CONFLICT", "details": {"id": [taken]}}
    assert [(m["role"], m["content"]) for m in poll(guest, key).json()["data"]] == [
        ("user", "guest text"),
        ("assistant", "from sam"),
    ]


@pytest.mark.parametrize("client_id", ["has space", "x" * 129, "", 7], ids=["space", "long", "empty", "int"])
def test_a_bad_staff_reply_id_is_a_400(as_staff, key, client_id):
    error = assert_envelope(as_staff.post_json(replies_url(key), {"content": "hi", "id": client_id}), status=400)
    assert "id" in error["error"]["details"]
    assert not ChatMessage.objects.exists()


def test_replies_are_for_staff_only(anon, as_alice, alice, guest, key):
    anonymous = assert_envelope(anon.post_json(replies_url(key), {"content": "hi"}), status=401)
    assert anonymous["error"]["code"] == "UNAUTHENTICATED"
    forbidden = assert_envelope(as_alice.post_json(replies_url(key), {"content": "hi"}), status=403)
    assert forbidden["error"]["code"] == "FORBIDDEN"
    assert not ChatMessage.objects.exists()


def test_a_staff_reply_validates_its_content(as_staff, key):
    error = assert_envelope(as_staff.post_json(replies_url(key), {"content": " "}), status=400)["error"]
    assert "content" in error["details"]


def test_staff_replies_count_against_the_staff_tier_not_the_guest_limits(as_staff, key):
    response = as_staff.post_json(replies_url(key), {"content": "hi"})
    assert response.wsgi_request.rate_limit_scope == "user:free"
    assert response["X-RateLimit-Limit"] == "100"


def test_the_trace_id_comes_from_x_request_id(guest, key):
    response = guest.get(messages_url(key), HTTP_X_REQUEST_ID="poll-123")
    assert response["X-Request-ID"] == "poll-123" == response.json()["trace_id"]
    error = guest.get(messages_url(str(uuid.uuid4())), HTTP_X_REQUEST_ID="miss-1")
    assert error["X-Request-ID"] == "miss-1" == error.json()["trace_id"]
    correlated = guest.generic("POST", CREATE, HTTP_X_CORRELATION_ID="corr.7")
    assert correlated.json()["trace_id"] == "corr.7"


def test_a_poll_is_one_query(guest, key, django_assert_num_queries):
    send(guest, key, "one")
    send(guest, key, "two")
    with django_assert_num_queries(1):
        assert len(poll(guest, key).json()["data"]) == 2
    with django_assert_num_queries(1):
        assert poll(guest, key, last_message_id=2**40).json()["data"] == []
    with django_assert_num_queries(1):
        assert_not_found(poll(guest, str(uuid.uuid4())))


def test_other_methods_are_a_405(guest, key):
    response = guest.delete(messages_url(key))
    assert assert_envelope(response, status=405)["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_a_guest_message_is_a_user_message_of_the_session(guest, key):
    sent = send(guest, key).json()["data"]
    stored = ChatMessage.objects.get(pk=sent["id"])
    assert stored.role == Role.USER and stored.author is None
    assert stored.session.session_key == uuid.UUID(key)


@pytest.mark.postgres
def test_the_compiled_poll_sql_answers_as_the_orm_query_does(guest, key):
    ids = [send(guest, key, f"m{i}").json()["data"]["id"] for i in range(3)]
    for after_id, limit in [(0, 100), (ids[0], 100), (0, 2), (ids[-1], 100)]:
        orm_rows = list(
            guest_selectors._guest_poll_queryset(session_key=uuid.UUID(key), after_id=after_id, limit=limit)
        )
        messages, has_more = selectors.guest_messages_after(session_key=uuid.UUID(key), after_id=after_id, limit=limit)
        expected = [row for row in orm_rows if row[0] is not None]
        assert [tuple(m.values()) for m in messages] == expected[:limit]
        assert has_more == (len(expected) > limit)


def test_an_empty_last_message_id_is_a_400_not_zero(guest, key):
    """API.md: missing means 0; anything but ASCII digits (the empty string included) is a 400."""
    body = assert_envelope(guest.get(messages_url(key) + "?last_message_id="), status=400)
    assert "last_message_id" in body["error"]["details"]


def test_a_poll_answer_is_never_stored_by_a_cache(guest, key):
    assert poll(guest, key)["Cache-Control"] == "no-store"


@pytest.mark.parametrize("client_id", [".", ".."])
def test_a_guest_id_a_url_cannot_address_is_a_400(guest, key, client_id):
    assert_envelope(send(guest, key, "hi", id=client_id), status=400)
