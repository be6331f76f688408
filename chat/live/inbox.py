"""The staff inbox's event stream: `event: session` with the inbox row of each guest session that gets a message.

Staff only: a token (`Authorization`) or the admin's login session cookie (a
browser's EventSource cannot send headers). Counted on the staff member's tier,
like the inbox itself. No resume ids: a reconnecting client re-reads the inbox
(GET /api/v1/chat/guest/inbox), then streams what changes after.

One InboxFeed per process reads each woken session's row once, whatever the
number of staff streams, and hands it to each of them.
"""

import asyncio
import collections
import logging
import time
from importlib import import_module

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import AuthenticationFailed

from accounts.authentication import BearerOrTokenAuthentication
from chat import metrics, selectors, throttles
from chat.api.errors import DATABASE_DOWN
from chat.exceptions import ApiError, Forbidden, ServiceUnavailable
from chat.live import http

logger = logging.getLogger(__name__)

ROUTE = "api/v1/chat/guest/inbox/events"
PATH = "/" + ROUTE
# Rows a slow staff client may fall behind by before its stream ends (it reconnects and re-reads the inbox).
BACKLOG = 1000
# Sessions whose last row sent is remembered, so that a re-check (which wakes every recently written
# session, every second while the channel is down) does not send the same row again.
REMEMBERED = 10_000


class Unauthenticated(ApiError):
    status, code, message = 401, "UNAUTHENTICATED", "Authentication credentials were not provided."


def _authenticate(request: http.LiveRequest):
    """The caller: by token, else by the login session's cookie; AnonymousUser for neither."""
    found = BearerOrTokenAuthentication().authenticate(request)
    if found is not None:
        return found[0]
    if request.COOKIES.get(settings.SESSION_COOKIE_NAME):
        engine = import_module(settings.SESSION_ENGINE)
        request.session = engine.SessionStore(request.COOKIES[settings.SESSION_COOKIE_NAME])
        return get_user(request)
    return AnonymousUser()


def authorize_staff(request: http.LiveRequest):
    """As the sync API does it: bad credentials count as anonymous (per IP) before their 401; then the
    caller's tier budget; then 401 without credentials and 403 for a non-staff user."""
    try:
        request.user = _authenticate(request)
    except AuthenticationFailed as error:
        throttles.check_scopes(request, (throttles.USER,), url_kwargs={}, sender=inbox_stream)
        raise Unauthenticated(str(error.detail), headers={"WWW-Authenticate": "Bearer"}) from None
    throttles.check_scopes(request, (throttles.USER,), url_kwargs={}, sender=inbox_stream)
    if not request.user.is_authenticated:
        raise Unauthenticated(headers={"WWW-Authenticate": "Bearer"})
    if not (request.user.is_active and request.user.is_staff):
        raise Forbidden("Only staff can read the inbox")
    return request.user


class Listener:
    """One staff stream's backlog of rows, and what wakes it."""

    def __init__(self):
        self.rows: collections.deque = collections.deque()
        self.woken = asyncio.Event()
        self.overflowed = False

    def push(self, row) -> None:
        if len(self.rows) >= BACKLOG:
            self.overflowed = True
        else:
            self.rows.append(row)
        self.woken.set()


class InboxFeed:
    """Wake-ups of guest sessions into inbox rows, each read once for every staff stream of the process."""

    def __init__(self, app):
        self.app = app
        self.listeners: set[Listener] = set()
        self.pending: dict[str, None] = {}
        self.sent: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._reader: asyncio.Task | None = None
        self._watch = None

    def add(self, listener: Listener) -> None:
        if not self.listeners:
            self._watch = self.app.hub.watching(self.woken)
            self._watch.__enter__()
        self.listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        self.listeners.discard(listener)
        if not self.listeners:
            self._watch.__exit__(None, None, None)

    def close(self) -> None:
        """Shutdown: every staff stream ends now."""
        for listener in self.listeners:
            listener.woken.set()

    def woken(self, session_key: str) -> None:
        self.pending[session_key] = None
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_pending())

    async def _read_pending(self) -> None:
        while self.pending and self.listeners:
            key = next(iter(self.pending))
            del self.pending[key]
            try:
                row = await self.app.db.run(selectors.inbox_session, session_key=key)
            except DATABASE_DOWN as error:
                logger.warning("inbox row not read (%s)", type(error).__name__)
                continue
            if row is None:
                continue
            version = (row["last_message_id"], row["message_count"], row["updated_at"])
            if self.sent.get(key) == version:
                continue  # a re-check's wake-up of a session whose row was sent already
            self.sent[key] = version
            self.sent.move_to_end(key)
            if len(self.sent) > REMEMBERED:
                self.sent.popitem(last=False)
            for listener in list(self.listeners):
                listener.push(row)


def inbox_stream(app, request: http.LiveRequest, send, receive):
    """GET /api/v1/chat/guest/inbox/events: an `event: session` for each guest session that gets a message."""
    request.route = ROUTE
    return app.serve(request, send, lambda: _inbox_stream(app, request, send, receive))


async def _inbox_stream(app, request, send, receive) -> int:
    await app.db.run(authorize_staff, request)
    if app.hub.closing:
        raise ServiceUnavailable(headers={"Retry-After": "1"})
    listener = Listener()
    app.inbox.add(listener)
    try:
        await http.start_stream(send, request)
        metrics.live_streams_opened.labels("inbox").inc()
        request.events = 0
        gone = asyncio.Event()
        watcher = http.watch_disconnect(receive, listener.woken, gone)
        try:
            await _send_until_done(app, send, request, listener, gone)
        finally:
            watcher.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        app.inbox.remove(listener)
    return 200


async def _send_until_done(app, send, request, listener: Listener, gone: asyncio.Event) -> None:
    heartbeat = settings.LIVE_HEARTBEAT_SECONDS
    deadline = time.monotonic() + settings.LIVE_STREAM_MAX_SECONDS
    last_sent = time.monotonic()
    while True:
        if listener.rows:
            rows = list(listener.rows)
            listener.rows.clear()
            await send(
                {
                    "type": "http.response.body",
                    "body": b"".join(http.sse_event("session", row) for row in rows),
                    "more_body": True,
                }
            )
            request.events += len(rows)
            metrics.live_events_sent.labels("inbox").inc(len(rows))
            last_sent = time.monotonic()
        now = time.monotonic()
        if listener.overflowed or gone.is_set() or app.hub.closing or now >= deadline:
            return
        listener.woken.clear()
        if listener.rows:
            continue
        try:
            async with asyncio.timeout(min(deadline - now, heartbeat - (now - last_sent))):
                await listener.woken.wait()
        except TimeoutError:
            if time.monotonic() - last_sent >= heartbeat:
                await send({"type": "http.response.body", "body": http.KEEP_ALIVE, "more_body": True})
                last_sent = time.monotonic()
