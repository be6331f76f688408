"""The guest's waiting endpoints: the long-poll and the event stream.

Both read by the integer cursor with the poll's own selector, so whatever wakes
them (a wake-up, a re-check, shutdown) they skip and repeat nothing: a wake-up
only says "read again". Each registers its waiter before its first read, so a
message committed between the read and the wait still wakes it.
"""

import asyncio
import time

from django.conf import settings

from chat import metrics, selectors, throttles
from chat.api.guest import MAX_MESSAGES_PER_POLL, cursor_from, parse_session_key, wait_from
from chat.exceptions import ServiceUnavailable
from chat.live import http
from chat.net import client_identity

POLL_SCOPES = ("guest_poll", "guest_ip")
ROUTE_MESSAGES = "api/v1/chat/guest/<str:session_key>/messages"
ROUTE_EVENTS = "api/v1/chat/guest/<str:session_key>/events"


def long_poll(app, request: http.LiveRequest, send, receive, raw_key: str):
    """GET .../messages?last_message_id=N&wait=S: the poll's answer, once there is one or S seconds pass."""
    request.route = ROUTE_MESSAGES
    return app.serve(request, send, lambda: _long_poll(app, request, send, receive, raw_key))


async def _long_poll(app, request, send, receive, raw_key: str) -> int:
    await app.db.run(
        throttles.check_scopes, request, POLL_SCOPES, url_kwargs={"session_key": raw_key}, sender=long_poll
    )
    session_key = parse_session_key(raw_key)
    key = str(session_key)
    cursor = cursor_from(request.query_values("last_message_id"), name="last_message_id")
    deadline = time.monotonic() + wait_from(request.query_values("wait"))
    gone = asyncio.Event()
    with app.hub.waiting(key) as woken:
        watcher = http.watch_disconnect(receive, woken, gone)
        try:
            while True:
                woken.clear()
                messages, has_more = await app.db.run(
                    selectors.guest_messages_after,
                    session_key=session_key,
                    after_id=cursor,
                    limit=MAX_MESSAGES_PER_POLL,
                )
                remaining = deadline - time.monotonic()
                if messages or remaining <= 0 or gone.is_set() or app.hub.closing:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await woken.wait()
                except TimeoutError:
                    break  # nothing came: the usual empty answer (what the last read found)
        finally:
            watcher.cancel()
    metrics.observe_guest_poll(len(messages))
    meta = {"last_message_id": messages[-1]["id"] if messages else cursor, "has_more": has_more}
    return await http.send_success(send, request, message="Messages retrieved", data=messages, meta=meta)


def stream(app, request: http.LiveRequest, send, receive, raw_key: str):
    """GET .../events: the session's messages after Last-Event-ID (or last_message_id), then each new one."""
    request.route = ROUTE_EVENTS
    return app.serve(request, send, lambda: _stream(app, request, send, receive, raw_key))


async def _stream(app, request, send, receive, raw_key: str) -> int:
    await app.db.run(throttles.check_scopes, request, POLL_SCOPES, url_kwargs={"session_key": raw_key}, sender=stream)
    session_key = parse_session_key(raw_key)
    key = str(session_key)
    last_event_id = request.header("Last-Event-ID")
    if last_event_id is not None:
        cursor = cursor_from([last_event_id], name="Last-Event-ID")
    else:
        cursor = cursor_from(request.query_values("last_message_id"), name="last_message_id")
    if app.hub.closing:
        raise ServiceUnavailable(headers={"Retry-After": "1"})
    read = app.db.run
    with app.hub.waiting(key) as woken:
        # Read before answering: an unknown key is a 404 envelope, not an empty stream.
        messages, has_more = await read(
            selectors.guest_messages_after, session_key=session_key, after_id=cursor, limit=MAX_MESSAGES_PER_POLL
        )
        async with app.slots.hold(key, client_identity(request)):
            await http.start_stream(send, request)
            metrics.live_streams_opened.labels("guest").inc()
            request.events = 0
            gone = asyncio.Event()
            watcher = http.watch_disconnect(receive, woken, gone)
            try:
                await _send_until_done(app, send, request, session_key, cursor, messages, has_more, woken, gone)
            finally:
                watcher.cancel()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
    return 200


async def _send_until_done(app, send, request, session_key, cursor, messages, has_more, woken, gone) -> None:
    heartbeat = settings.LIVE_HEARTBEAT_SECONDS
    deadline = time.monotonic() + settings.LIVE_STREAM_MAX_SECONDS
    last_sent = time.monotonic()
    while True:
        if messages:
            body = b"".join(http.sse_event("message", message, message["id"]) for message in messages)
            await send({"type": "http.response.body", "body": body, "more_body": True})
            cursor = messages[-1]["id"]
            request.events += len(messages)
            metrics.live_events_sent.labels("guest").inc(len(messages))
            last_sent = time.monotonic()
        if not has_more:
            now = time.monotonic()
            if gone.is_set() or app.hub.closing or now >= deadline:
                return
            try:
                async with asyncio.timeout(min(deadline - now, heartbeat - (now - last_sent))):
                    await woken.wait()
            except TimeoutError:
                if time.monotonic() - last_sent >= heartbeat:
                    await send({"type": "http.response.body", "body": http.KEEP_ALIVE, "more_body": True})
                    last_sent = time.monotonic()
                messages = []
                continue
        woken.clear()
        messages, has_more = await app.db.run(
            selectors.guest_messages_after, session_key=session_key, after_id=cursor, limit=MAX_MESSAGES_PER_POLL
        )
