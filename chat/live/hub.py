"""This process's waiters, by guest session key. Event-loop only: never touched from a thread."""

import asyncio
import contextlib
from collections.abc import Callable, Iterator


class Hub:
    """Who waits for which guest session, and who watches every guest session (the inbox streams).

    A waiter is an asyncio.Event: set by a wake-up of its session, by `wake_all`
    (after the channel comes back, and at shutdown) or by its own handler (a
    client that went away). Whatever woke it, it re-reads the database.
    """

    def __init__(self):
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._watchers: set[Callable[[str], None]] = set()
        self.closing = False

    @contextlib.contextmanager
    def waiting(self, session_key: str) -> Iterator[asyncio.Event]:
        """An event set on each wake-up of `session_key` while the block runs."""
        event = asyncio.Event()
        if self.closing:
            event.set()
        self._waiters.setdefault(session_key, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiters.get(session_key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiters[session_key]

    @contextlib.contextmanager
    def watching(self, watcher: Callable[[str], None]) -> Iterator[None]:
        """Call `watcher(session_key)` on the wake-up of every guest session while the block runs."""
        self._watchers.add(watcher)
        try:
            yield
        finally:
            self._watchers.discard(watcher)

    def notify(self, session_key: str) -> None:
        for event in self._waiters.get(session_key, ()):
            event.set()
        for watcher in list(self._watchers):
            watcher(session_key)

    def wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    def close(self) -> None:
        """Shutdown: every waiter wakes now, and every later one at once."""
        self.closing = True
        self.wake_all()

    @property
    def waiting_sessions(self) -> int:
        return len(self._waiters)

    @property
    def watched(self) -> bool:
        return bool(self._watchers)
