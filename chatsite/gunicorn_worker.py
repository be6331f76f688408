"""gunicorn's threaded worker with a thread of its own for the liveness probe (gunicorn.conf.py's default).

A gthread worker hands every request to one pool of GUNICORN_THREADS threads. When
the database hangs (stopped, partitioned: bytes acknowledged, nothing answered),
each thread that queries it waits, and libpq has no client-side limit on a query on
an open connection, so soon every thread waits and `/healthz` queues behind them:
the orchestrator then restarts a process that is fine, and restarts do not fix a
database. So the main loop looks at the first bytes of each request (MSG_PEEK, they
stay on the socket) and sends `GET`/`HEAD /healthz` to a one-thread lane of its
own, served by the same Django view as ever; everything else goes to the pool as
before. What the answer proves is what liveness needs: the process and its main
loop are alive, Django answers. `/readyz` stays in the pool (a pool that cannot
take it is not ready).

A new connection whose bytes have not arrived yet waits in the main loop's poller
(gunicorn's own "pending" path) rather than in a thread, so a probe that connects
while the pool is full is still seen. gthread's internals used here (enqueue_req,
finish_request and its _DEFER result, pending_conns) are pinned by
tests/test_health.py, which fails if an upgrade routes around them.
"""

import socket
import time
from concurrent import futures

from gunicorn.workers import gthread

# Request lines that are the liveness probe: the path alone or with a query string.
PROBE_STARTS = tuple(f"{method} /healthz{end}".encode() for method in ("GET", "HEAD") for end in (" ", "?"))
# A probe's whole head must be in this many bytes (a probe sends ~100).
PEEK_BYTES = 4096


def first_bytes(sock: socket.socket) -> bytes | None:
    """Up to PEEK_BYTES of what the client sent, left on the socket; None when nothing has arrived yet."""
    try:
        return sock.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""  # reset or closed: the pool's thread finds out and closes it


def is_probe(start: bytes | None) -> bool:
    """A liveness probe whose whole head has arrived and that has no body.

    The lane's one thread reads with no timeout, so a client that sends half a head
    (or a body slowly) goes to the pool as any request would: it cannot hold the lane.
    """
    if not start or not start.startswith(PROBE_STARTS):
        return False
    head, complete, _ = start.partition(b"\r\n\r\n")
    head = head.lower()
    return bool(complete) and b"\ncontent-length:" not in head and b"\ntransfer-encoding:" not in head


class ProbeLaneWorker(gthread.ThreadWorker):
    def init_process(self):
        self.probe_pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
        super().init_process()

    def run(self):
        try:
            super().run()
        finally:
            self.probe_pool.shutdown(wait=False)

    def enqueue_req(self, conn):
        if conn.is_http2 or self.cfg.is_ssl:  # framed or encrypted: nothing to read at a glance
            super().enqueue_req(conn)
            return
        start = b"" if conn.parser is not None and conn.parser.unreader.buf.getvalue() else first_bytes(conn.sock)
        if start is None and not conn.data_ready:
            self.wait_for_first_bytes(conn)
            return
        pool = self.probe_pool if is_probe(start) else self.tpool
        fs = pool.submit(self.handle, conn)
        fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def wait_for_first_bytes(self, conn):
        """Put a connection that has sent nothing yet on the poller; enqueue_req sees it again once readable."""
        deferred = futures.Future()
        deferred.set_result(gthread._DEFER)
        self.finish_request(conn, deferred)
        # As long as a thread would have waited for them (gunicorn's keepalive may be 0).
        conn.timeout = time.monotonic() + max(self.cfg.keepalive, gthread.DEFAULT_WORKER_DATA_TIMEOUT)
