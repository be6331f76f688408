"""The waiting side of real-time delivery: long-polls and event streams, on ASGI (uvicorn).

Its own package because it runs on another server than the sync core: the core
(services, selectors, the WSGI API) never imports it. The parts:

- hub: this process's waiters, by guest session key, and the inbox listeners;
- channel: one subscriber per process that turns wake-ups (Redis pub/sub, or the
  in-process hub of the embedded default) into hub notifications, and re-checks
  the database while the channel is down;
- db: a few threads, each with one persistent database connection, that do every
  read for every waiter (no thread and no connection per waiter);
- http: the bits of HTTP the handlers share (request, envelope, log line, SSE);
- slots: the open-stream limits (per session key, per client IP);
- guest, inbox: the endpoints; app: the ASGI application that routes to them.
"""
