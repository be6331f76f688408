"""Every database read of the waiting side, in a few threads with one persistent connection each.

Django keeps a connection per thread, so the pool's size bounds the connections
of a live process however many clients wait. A connection the server dropped
(a restart, an idle timeout) fails its next query: the thread closes it and
tries once more on a new one, as close_old_connections would have.
"""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from chat.api.errors import DATABASE_DOWN


def _call(func, args, kwargs):
    had_connection = connection.connection is not None
    try:
        return func(*args, **kwargs)
    except DATABASE_DOWN:
        connection.close()
        if not had_connection:
            raise  # it could not even connect: the database is down, not the connection stale
        return func(*args, **kwargs)


class Database:
    def __init__(self, threads: int):
        self.threads = threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="live-db")

    async def run(self, func, /, *args, **kwargs):
        """`func(*args, **kwargs)` in a database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(_call, func, args, kwargs))

    def close(self) -> None:
        """No new reads; the threads' connections close with the process."""
        self.pool.shutdown(wait=False, cancel_futures=True)
