"""GET /api/chat/search: every word, accents and case ignored, ranked, snippets, stable pages, own messages only."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.selectors.search import ELLIPSIS, snippet

URL = "/api/chat/search"
MESSAGES = "/api/chat/messages"


def save(client, session_id: str, *contents: str, title: str | None = None, start: int = 0) -> None:
    body = {
        "sessionId": session_id,
        "messages": [
            {"id": f"{session_id}-{i}", "role": "user", "content": c, "timestamp": f"2025-03-01T10:{i:02d}:00Z"}
            for i, c in enumerate(contents, start)
        ],
    }
    if title:
        body["sessionTitle"] = title
    response = client.post_json(MESSAGES, body)
    assert response.status_code == 201, response.content


def found(client, q: str, **params) -> list[str]:
    response = client.get(URL, {"q": q, **params})
    assert response.status_code == 200, response.content
    return [r["message"]["id"] for r in response.json()["results"]]


def test_finds_messages_across_sessions_with_their_session(as_alice):
    save(as_alice, "trip", "Where is the best café in Lyon?", title="Lyon")
    save(as_alice, "work", "The café downstairs has wifi")
    save(as_alice, "other", "Nothing to see here")

    body = as_alice.get(URL, {"q": "café"}).json()

    assert sorted(r["message"]["id"] for r in body["results"]) == ["trip-0", "work-0"]
    lyon = next(r for r in body["results"] if r["session_id"] == "trip")
    assert lyon["session_title"] == "Lyon"
    assert lyon["message"] == as_alice.get(MESSAGES, {"session_id": "trip"}).json()[0]  # the GET shape
    assert body["next"] is None


def test_never_finds_another_users_messages(as_alice, as_charlie, anon):
    save(as_charlie, "theirs", "secret café recipe")
    guest_key = anon.post_json("/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    anon.post_json(f"/api/v1/chat/guest/{guest_key}/messages", {"content": "secret café recipe"})
    save(as_alice, "mine", "my own notes")

    assert found(as_alice, "secret café recipe") == []
    assert found(as_charlie, "secret") == ["theirs-0"]


def test_text_shaped_like_an_owners_lexeme_finds_nothing_of_that_owner(as_alice, alice, as_charlie, charlie):
    # Each indexed word is stored as `<owner id>~<word>`; the parser splits at `~`,
    # so neither a message nor a query can name another user's words.
    save(as_charlie, "theirs", "secret recipe")
    save(as_alice, "mine", f"{charlie.pk}~secret and '{charlie.pk}~recipe' \\'{charlie.pk}~secret")

    assert found(as_alice, f"{charlie.pk}~secret") == ["mine-0"]  # alice's own words, not charlie's
    assert found(as_alice, f"'{charlie.pk}~recipe'") == ["mine-0"]
    assert found(as_charlie, f"{charlie.pk}~secret") == []  # "secret" AND the number: not both in charlie's
    assert found(as_charlie, "secret recipe") == ["theirs-0"]
    assert found(as_alice, f"{alice.pk}~secret") == []


def test_every_word_must_match(as_alice):
    save(as_alice, "s1", "red apple pie", "red cherry pie", "green apple")
    assert found(as_alice, "apple pie") == ["s1-0"]
    assert sorted(found(as_alice, "pie")) == ["s1-0", "s1-1"]
    assert found(as_alice, "apple pie banana") == []


def test_words_not_substrings(as_alice):
    save(as_alice, "s1", "a category of things")
    assert found(as_alice, "cat") == []


@pytest.mark.parametrize("q", ["café", "cafe", "CAFÉ", "Cafe", "cafÉ"])
def test_accents_and_case_are_ignored(as_alice, q):
    save(as_alice, "s1", "Un Café au lait", "un cafe noir", "CAFÉ CRÈME", "thé")
    assert sorted(found(as_alice, q)) == ["s1-0", "s1-1", "s1-2"]


@pytest.mark.parametrize(
    ("content", "q"),
    [
        ("Ich möchte eine Straßenbahn nehmen", "MOCHTE straßenbahn"),
        ("Привет, как ДЕЛА?", "привет дела"),
        # SQLite's FTS5 (unicode61) removes diacritics from Latin letters only.
        pytest.param("Η Αθήνα είναι όμορφη", "αθηνα ΟΜΟΡΦΗ", marks=pytest.mark.postgres),  # noqa: RUF001
        ("Η Αθήνα είναι όμορφη", "Αθήνα όμορφη"),  # noqa: RUF001
        ("¿Dónde está la estación?", "donde ESTACION"),
        ("Crème brûlée à la française", "creme brulee francaise"),
    ],
)
def test_non_english_text(as_alice, content, q):
    save(as_alice, "s1", content, "unrelated words only")
    assert found(as_alice, q) == ["s1-0"]


def test_best_matches_first_then_newest(as_alice):
    save(as_alice, "s1", "python once", "python python python thrice", "python once again", "python twice python")
    assert found(as_alice, "python") == ["s1-1", "s1-3", "s1-2", "s1-0"]


def test_snippet_and_highlights_point_at_the_matched_words(as_alice):
    long = "Lorem ipsum " * 30 + "we met at the Café Procope in Paris, a very old cafe. " + "Dolor sit amet " * 30
    save(as_alice, "s1", long)

    [result] = as_alice.get(URL, {"q": "cafe paris"}).json()["results"]

    text = result["snippet"]
    assert text.startswith(ELLIPSIS) and text.endswith(ELLIPSIS)
    assert len(text) <= 162
    assert [text[a:b] for a, b in result["highlights"]] == ["Café", "Paris", "cafe"]


def test_a_short_message_is_its_own_snippet():
    assert snippet("Hello café", ["cafe"]) == ("Hello café", [[6, 10]])


def test_pages_are_stable_and_complete(as_alice):
    contents = [("alpha beta " * (1 + i % 3)).strip() for i in range(25)]
    save(as_alice, "s1", *contents)
    everything = found(as_alice, "alpha beta", limit=100)
    assert len(everything) == 25

    seen, cursor = [], None
    while True:
        params = {"q": "beta alpha", "limit": 7, **({"cursor": cursor} if cursor else {})}
        body = as_alice.get(URL, params).json()
        seen += [r["message"]["id"] for r in body["results"]]
        if len(seen) == 7:
            # Someone writes between two pages: new matches rank before or after,
            # but nothing already listed or still to come moves.
            save(as_alice, "s2", "alpha beta " * 9, "alpha beta", start=50)
        cursor = body["next"]
        if cursor is None:
            break

    # Nothing repeated, nothing skipped, the order kept; of the two new messages the
    # best-ranked one sorts before the pages already read, the weak one after.
    assert [m for m in seen if not m.startswith("s2")] == everything
    assert "s2-50" not in seen and "s2-51" in seen


def test_upserts_and_deletes_reach_the_index(as_alice):
    save(as_alice, "s1", "old words here")
    assert found(as_alice, "old") == ["s1-0"]
    save(as_alice, "s1", "new words here")  # the same id: an upsert
    assert found(as_alice, "old") == []
    assert found(as_alice, "new") == ["s1-0"]
    as_alice.delete("/api/chat/sessions/s1")
    assert found(as_alice, "new") == []


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "x" * 201},
        {"q": "a", "limit": 0},
        {"q": "a", "limit": 101},
        {"q": "a", "limit": "ten"},
        {"q": "a", "cursor": "not-a-cursor"},
        {"q": "a", "cursor": "WzEsMiwi"},
        {"q": "a", "cursor": "WyJhIiwxLDJd"},  # ["a",1,2]
        {"q": "a", "cursor": "WzEuMCwxLC0xXQ"},  # [1.0,1,-1]
        {"q": "a\x00b"},
    ],
)
def test_bad_parameters_are_400(as_alice, params):
    response = as_alice.get(URL, params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("q", ["!!!", "_", "__ --", "   "])
def test_a_query_without_words_finds_nothing(as_alice, q):
    save(as_alice, "s1", "!!! ??? _ __ --", "plain words")
    assert found(as_alice, q) == []


@pytest.mark.postgres
def test_a_page_is_one_statement_and_its_messages_are_in_the_get_shape(as_alice):
    extra = {
        "id": "t-9",
        "role": "assistant",
        "content": "café again",
        "model": "m",
        "suggestions": ["x"],
        "k": {"a": 1},
    }
    save(as_alice, "trip", "café one", "café two", "café three")
    as_alice.post_json(MESSAGES, {"sessionId": "trip", "message": extra})
    as_alice.get(URL, {"q": "café"})  # the connection's first use belongs to no request

    with CaptureQueriesContext(connection) as captured:
        first = as_alice.get(URL, {"q": "café", "limit": 2}).json()
        second = as_alice.get(URL, {"q": "café", "limit": 3, "cursor": first["next"]}).json()

    reads = [
        q["sql"] for q in captured.captured_queries if "chat_message_search" in q["sql"] or "chat_messages" in q["sql"]
    ]
    assert len(reads) == 2  # one a page
    shown = [r["message"] for r in first["results"] + second["results"]]
    assert len(shown) == 4 and second["next"] is None
    history = {m["id"]: m for m in as_alice.get(MESSAGES, {"session_id": "trip"}).json()}
    assert shown == [history[m["id"]] for m in shown]  # extra keys and JSON fields included


def test_search_needs_credentials(anon):
    assert anon.get(URL, {"q": "a"}).status_code == 401
