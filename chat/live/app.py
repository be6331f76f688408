"""The live ASGI application: routes the waiting endpoints, starts and stops the process's parts.

Run alone (`uvicorn chat.live.app:application`) behind a proxy that sends it the
waiting paths (`handles`), or inside chatsite.asgi, which sends it those paths
and everything else to Django on one port.

Graceful shutdown: uvicorn, on SIGTERM, stops accepting and waits for open
connections to finish, but tells the application nothing until they have (the
lifespan shutdown comes after). So at startup the app puts its own handler in
front of uvicorn's: it wakes every waiter, long-polls answer with what they have
and streams end cleanly (the browser's EventSource reconnects, elsewhere, with
Last-Event-ID), and then uvicorn's handler runs as before.
"""

import asyncio
import logging
import re
import signal
import threading

from django.conf import settings

from chat import cors
from chat.api.errors import DATABASE_DOWN
from chat.exceptions import ApiError, NotFound, ServiceUnavailable
from chat.live import guest, http, inbox
from chat.live.channel import Channel
from chat.live.db import Database
from chat.live.hub import Hub
from chat.live.slots import Slots
from chat.logging import trace_id_var

logger = logging.getLogger(__name__)

GUEST_PREFIX = "/api/v1/chat/guest/"
EVENTS_RE = re.compile(r"/api/v1/chat/guest/([^/]+)/events")
MESSAGES_RE = re.compile(r"/api/v1/chat/guest/([^/]+)/messages")


def handles(scope: dict) -> bool:
    """Whether a request is the live app's: an event stream (a guest's, the staff inbox's), or a guest poll
    with `wait` (a long-poll)."""
    path = scope["path"]
    if not path.startswith(GUEST_PREFIX):
        return False
    if path == inbox.PATH or EVENTS_RE.fullmatch(path):
        return True
    return scope["method"] == "GET" and MESSAGES_RE.fullmatch(path) is not None and _has_wait(scope)


def _has_wait(scope: dict) -> bool:
    query = scope.get("query_string", b"")
    return any(part.split(b"=", 1)[0] == b"wait" for part in query.split(b"&"))


class MethodNotAllowed(ApiError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class InternalError(ApiError):
    status, code, message = 500, "INTERNAL_ERROR", "Internal server error"


class LiveApp:
    def __init__(self):
        self.hub = Hub()
        self.db: Database | None = None
        self.channel: Channel | None = None
        self.slots: Slots | None = None
        self.inbox = inbox.InboxFeed(self)
        self._started = False
        self._start_lock: asyncio.Lock | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = http.LiveRequest(scope)
        if cors.is_preflight(request.method, request.headers):
            # Before anything starts or counts: a preflight never spends a budget or gets a 401.
            await self.serve(request, send, lambda: http.send_preflight(send, request))
            return
        await self.ensure_started()
        path = scope["path"]
        events, messages = EVENTS_RE.fullmatch(path), MESSAGES_RE.fullmatch(path)
        if (events or messages) and request.method != "GET":
            await self.serve(request, send, lambda: self._not_allowed(request))
        elif path == inbox.PATH:
            await inbox.inbox_stream(self, request, send, receive)
        elif events:
            await guest.stream(self, request, send, receive, events[1])
        elif messages:
            await guest.long_poll(self, request, send, receive, messages[1])
        else:
            await self.serve(request, send, self._not_found)

    async def _not_found(self):
        raise NotFound("Not found")

    async def _not_allowed(self, request):
        raise MethodNotAllowed(f'Method "{request.method}" not allowed.', headers={"Allow": "GET"})

    async def serve(self, request: http.LiveRequest, send, handler) -> None:
        """Run a handler: its errors as the envelope (before a stream starts), one log line at the end."""
        token = trace_id_var.set(request.trace_id)
        status = 500
        try:
            status = await handler()
        except Exception as error:
            status = await self._failed(request, send, error)
        finally:
            extra = {"events": request.events} if hasattr(request, "events") else {}
            user = str(request.user.pk) if request.user.is_authenticated else "guest"
            http.log_request(request, status=status, user=user, **extra)
            trace_id_var.reset(token)

    async def _failed(self, request: http.LiveRequest, send, error: Exception) -> int:
        """The answer to a handler's error: the envelope, or, once a stream has started, just its end."""
        if request.streaming:
            # Its end was sent. An unknown session (purged meanwhile) or a lost database ends it; the
            # client reconnects and gets the error as an envelope, or resumes where it was.
            expected = isinstance(error, (ApiError, *DATABASE_DOWN))
            logger.log(
                logging.WARNING if expected else logging.ERROR,
                "stream ended early: %s: %s",
                type(error).__name__,
                error,
                exc_info=None if expected else error,
            )
            return 200
        if isinstance(error, ApiError):
            return await http.send_error(send, request, error)
        if isinstance(error, DATABASE_DOWN):
            logger.error("database unavailable: %s: %s", type(error).__name__, error)
            return await http.send_error(send, request, ServiceUnavailable(headers={"Retry-After": "5"}))
        logger.error("unhandled error in the live app", exc_info=error)
        return await http.send_error(send, request, InternalError())

    async def ensure_started(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self.db = Database(settings.LIVE_DB_THREADS)
            self.channel = Channel(self.hub, self.db)
            self.slots = Slots(self.db)
            await self.channel.start()
            self.slots.start()
            self._chain_shutdown_signals()
            self._started = True

    async def stop(self) -> None:
        self.hub.close()
        if not self._started:
            return
        await self.channel.stop()
        await self.slots.stop()
        self.db.close()

    def begin_shutdown(self) -> None:
        """Wake every waiter: long-polls answer, streams end; new ones get a 503."""
        if not self.hub.closing:
            logger.info("shutting down: ending %s waiting sessions' long-polls and streams", self.hub.waiting_sessions)
        self.hub.close()
        self.inbox.close()

    def _chain_shutdown_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                loop.call_soon_threadsafe(self.begin_shutdown)
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.ensure_started()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


application = LiveApp()
