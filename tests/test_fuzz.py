"""Schemathesis against the app's own OpenAPI schema, in-process, on every endpoint.

Three personas call every operation: a user (alice), a staff member (the inbox,
staff replies, another user's usage) and no one. Generated inputs include NUL bytes
and arbitrary Unicode; path and query ids are often ones that exist (alice's session
and message, a guest session, alice's name), so the calls reach past the 404s.
Every response must be no 5xx and must match the schema: status code, content
type, headers, body.

The run is bounded for CI; FUZZ_EXAMPLES raises it (see README, Reliability). The
two CI runs (PostgreSQL, then SQLite) draw different examples (a seed per
database), so together they send twice as many distinct inputs.
"""

import base64
import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import pytest
import schemathesis
from django.db import connection
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from chat.services import guest_message_send, guest_reply_send, guest_session_create, messages_save
from chatsite.wsgi import application

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
# One seed per database: the PostgreSQL and the SQLite runs of CI draw different examples.
SEED = {"postgresql": 1601, "sqlite": 1602}.get(connection.vendor, 1600)

# The event streams are served by chat.live on ASGI, not by this WSGI app (and never end by
# themselves): tests/test_live_server.py and tests/test_live_one_port.py cover them.
schema = schemathesis.openapi.from_wsgi("/api/schema/", application).exclude(
    operation_id=["guest_events_stream", "guest_inbox_events_stream"]
)


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value) -> bytes:
    """The import's body: the generated string as it is (lines of JSON, or not)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else str(value).encode()


# DRF's cursors are base64 of a query string: p (position), o (offset), r (reverse).
# The schema says only "string", so the fuzzer would almost never reach the decoder's
# inner checks; these build cursors that decode, with positions good and bad.
POSITIONS = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(str),
    st.datetimes().map(str),  # naive
    st.dates().map(str),
    st.sampled_from(["notadate", "0001-01-01 00:00:00+14:00", "9999-12-31 23:59:59-14:00", "2026-13-45", ""]),
    st.text(max_size=40),
)
CURSOR_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "p": POSITIONS,
        "o": st.one_of(st.integers(-5, 5000).map(str), st.text(max_size=5)),
        "r": st.one_of(st.sampled_from(["0", "1"]), st.text(max_size=3)),
    },
)
CRAFTED_CURSORS = st.one_of(
    CURSOR_FIELDS.map(lambda fields: base64.b64encode(urlencode(fields).encode()).decode()),
    st.binary(max_size=60).map(lambda raw: base64.b64encode(raw).decode()),
)


# Ids that exist while a test runs (the `world` fixture fills it): a generated id almost
# never names anything, so without these most calls would stop at a 404.
KNOWN: dict[str, str] = {}


def with_known(values: dict, names) -> st.SearchStrategy:
    """`values` as generated, or with those of `names` that KNOWN has set to the known ones."""
    known = {name: KNOWN[name] for name in names if name in KNOWN}
    if not known:
        return st.just(values)
    return st.one_of(st.just(values), st.just({**values, **known}))


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """An existing session id, message id or guest session key, half the time."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    return with_known(path_parameters, {"session_id", "message_id", "session_key"} & set(path_parameters))


@schema.hook
def flatmap_query(context, query):
    """An existing session id or username half the time; a crafted `cursor` most of the time."""
    operation = context.operation
    if operation is None or not isinstance(query, dict):
        return st.just(query)
    names = {parameter.name for parameter in operation.query}
    strategy = with_known(query, {"session_id", "user"} & names)
    if "cursor" in names:
        strategy = strategy.flatmap(
            lambda chosen: st.one_of(st.just(chosen), CRAFTED_CURSORS.map(lambda cursor: {**chosen, "cursor": cursor}))
        )
    return strategy


# Every status the fuzzer got; conftest.py prints the tally at the end of the run.
STATUSES: Counter = Counter()
# Crafted cursors sent (a tally line of their own, so a schema change that loses them shows).
CURSORS: Counter = Counter()
# Inputs sent by each persona.
PERSONAS: Counter = Counter()


def contains_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


def schema_cannot_say_it(case) -> list:
    """Checks to skip for rules the schema does not state.

    Two messages of one request may not share an `id` (uniqueItems compares
    whole objects, not one key), so such a body is schema-valid yet a 400; a
    history page's `before` cursor is opaque: any string we did not make is a 400;
    a usage range must run forwards and span at most 366 days (two parameters together); a
    search cursor is valid only if the server made it. Text may not hold NUL (API.md):
    a pattern on every text field could say it, but would slow generation down; such
    a body is a 400 naming the field. Any other opaque `cursor` (the session list's,
    the inbox's) that does not decode is a 400 or 404.
    """
    if (case.query or {}).get("before") is not None:
        return [positive_data_acceptance]  # an opaque cursor is valid only if we made it
    if case.path == "/api/chat/usage" and usage_range_out_of_bounds(case.query or {}):
        return [positive_data_acceptance]
    if case.path == "/api/chat/import":
        return [positive_data_acceptance]  # NDJSON: lines of JSON objects, which a string schema cannot say
    if case.path == "/api/chat/search" and "cursor" in (case.query or {}):
        return [positive_data_acceptance]  # an opaque cursor is any string; only the server's own are valid
    body = case.body if isinstance(case.body, dict) else {}
    messages = body.get("messages")
    if isinstance(messages, list):
        ids = [m["id"] for m in messages if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if len(ids) != len(set(ids)):
            return [positive_data_acceptance]
    if contains_nul(case.body) or contains_nul(case.query):
        return [positive_data_acceptance]
    # Opaque cursors: the schema says "string"; which strings decode to a position it cannot say.
    if isinstance(case.query, dict) and ({"before", "cursor"} & set(case.query)):
        return [positive_data_acceptance]
    return []


def skipped_checks(case) -> list:
    """schema_cannot_say_it, and no "must be rejected" for a negative case given a KNOWN id: the id the hook
    put in may be the very part that was generated invalid (a malformed session key, now a real one)."""
    skipped = schema_cannot_say_it(case)
    if case.meta is not None and case.meta.generation.mode.is_negative:
        query = case.query if isinstance(case.query, dict) else {}
        values = [*(case.path_parameters or {}).values(), *query.values()]
        if any(isinstance(value, str) and value in KNOWN.values() for value in values):
            skipped = [*skipped, negative_data_rejection]
    return skipped


def usage_range_out_of_bounds(query: dict) -> bool:
    try:
        end = date.fromisoformat(query["to"]) if "to" in query else datetime.now(UTC).date()
        start = date.fromisoformat(query["from"]) if "from" in query else end - timedelta(days=29)
    except (TypeError, ValueError):
        return False
    return start > end or (end - start).days >= 366


def tally(case, response, persona: str) -> None:
    STATUSES[response.status_code] += 1
    PERSONAS[persona] += 1
    if isinstance(case.query, dict) and "cursor" in case.query:
        CURSORS[response.status_code] += 1


@pytest.fixture
def generous_limits(settings):
    settings.RATE_LIMITS = {key: "1000000/hour" for key in settings.RATE_LIMITS}


@pytest.fixture
def world(alice, staff):
    """What the KNOWN ids name: alice's session with two messages, a guest session with a reply."""
    messages_save(
        user=alice,
        session_id="trip",
        messages=[
            {"message_id": "m1", "role": "user", "content": "Where is the best café in Lyon?"},
            {"message_id": "m2", "role": "assistant", "content": "Les Halles.", "model": "gpt-4o"},
        ],
    )
    guest = guest_session_create(guest_name="Ann")
    guest_message_send(session_key=guest.session_key, content="Hello?")
    guest_reply_send(session_key=guest.session_key, staff_user=staff, content="Hi, how can I help?")
    KNOWN.update(session_id="trip", message_id="m1", session_key=str(guest.session_key), user=alice.username)
    yield
    KNOWN.clear()


def fuzz_settings(max_examples: int):
    """Bounded examples from this database's seed (no example database: every run is the same)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        database=None,
    )


# Transactional: schemathesis calls the WSGI app itself, whose request_finished
# signal closes a connection left inside a test's transaction.
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits", "world")
@schema.parametrize()
@fuzz_settings(MAX_EXAMPLES)
@seed(SEED)
def test_authenticated_calls_match_the_schema(case, alice):
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {alice.api_token}"}, excluded_checks=skipped_checks(case)
    )
    tally(case, response, "user")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits", "world")
@schema.parametrize()
@fuzz_settings(MAX_EXAMPLES)
@seed(SEED)
def test_staff_calls_match_the_schema(case, staff):
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {staff.api_token}"}, excluded_checks=skipped_checks(case)
    )
    tally(case, response, "staff")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits", "world")
@schema.parametrize()
@fuzz_settings(max(5, MAX_EXAMPLES // 3))
@seed(SEED)
def test_anonymous_calls_match_the_schema(case):
    response = case.call_and_validate(excluded_checks=skipped_checks(case))
    tally(case, response, "anonymous")
