"""gunicorn settings: `gunicorn -c gunicorn.conf.py chatsite.wsgi` (the Docker image's CMD).

Every number can be set from the environment. Issue 6 benchmarks the worker
class and counts and may change the defaults.
"""

import glob
import logging
import os
import shutil
import sys
import tempfile

# No prometheus_client import here: it decides at import whether values are
# per-process files, and workers are forked from this process, so it must not be
# imported before on_starting has set PROMETHEUS_MULTIPROC_DIR (see there).

# The directory on_starting made (removed by on_exit); None when it was given.
made_metrics_dir: str | None = None


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: a container's cpuset, taskset), not the host's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


PORT = env_int("PORT", 8000)
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{PORT}"

# Threads: a request mostly waits on PostgreSQL or Redis, so a thread pool per
# process serves more at the same memory. Each thread keeps its own database
# connection (DB_CONN_MAX_AGE): workers x threads must fit PostgreSQL's max_connections.
# gthread plus a thread of its own for GET /healthz (chatsite.gunicorn_worker): liveness
# answers at once even while a hung database holds every thread of the pool.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or "chatsite.gunicorn_worker.ProbeLaneWorker"
# One process per usable core (the benchmark: 2 workers spend less CPU per request
# than 3 on the 2-core machine; bench/results/two-workers.json).
workers = env_int("GUNICORN_WORKERS", usable_cpus())
threads = env_int("GUNICORN_THREADS", 4)

# A worker whose main loop has not reported for this long is killed (the threaded
# worker's loop reports while its threads serve, so a long request is not cut: the
# proxy's read timeout bounds it instead). On a restart or SIGTERM, workers get
# graceful_timeout to finish what they are serving.
timeout = env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Seconds an idle keep-alive connection is held; keep it above the proxy's idle timeout.
keepalive = env_int("GUNICORN_KEEPALIVE", 5)

# Recycle workers now and then (a leak cannot grow forever); the jitter keeps
# them from all restarting at once.
# Not too often: a restart costs ~0.6 s of CPU, which at 1,000 requests made every
# request pay ~0.6 ms (the benchmark's bare view ran at a third of its speed).
max_requests = env_int("GUNICORN_MAX_REQUESTS", 20000)
max_requests_jitter = env_int("GUNICORN_MAX_REQUESTS_JITTER", 2000)

# No access log: the app writes one JSON line per request (chat.observability),
# with the route, user, rate-limit scope and trace id. gunicorn's own messages go to stderr.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL") or "info"

# gunicorn's control socket (for `gunicornc`) is off unless a path is given: its
# default lives in $HOME, which the image's user does not have, and two servers
# on one machine would share it.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]

# The workers' heartbeat files in memory: a container's /tmp may be a slow overlay.
SHM = "/dev/shm"  # noqa: S108 (a fixed system directory, not a guessable temporary file)
if os.path.isdir(SHM):
    worker_tmp_dir = SHM


def on_starting(server):
    """Metrics of every worker: a multiprocess directory whenever there is more than one worker.

    Without one, each worker counts alone and a scrape shows whichever answered.
    Given PROMETHEUS_MULTIPROC_DIR, it is emptied (values of a previous run are
    not this one's); else, with more than one worker (-w included), a temporary
    one is made here and removed on exit. Workers are forked after this hook, so
    they inherit it; with preload_app the app (and prometheus_client) would be
    loaded already, too late to switch: then gunicorn refuses to start.
    """
    global made_metrics_dir
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    elif server.cfg.workers > 1:
        if "prometheus_client" in sys.modules:
            raise RuntimeError(
                "more than one worker needs PROMETHEUS_MULTIPROC_DIR set before the app loads"
                " (set it, or run one worker): each worker would count its own metrics"
            )
        made_metrics_dir = tempfile.mkdtemp(prefix="chat-prometheus-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made_metrics_dir
        server.log.info("Prometheus multiprocess directory: %s (removed on exit)", made_metrics_dir)


def on_exit(server):
    """Remove the metrics directory on_starting made."""
    if made_metrics_dir:
        shutil.rmtree(made_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """A worker is gone: drop its live gauges from the merged metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # here, not at the top: see the note there

        multiprocess.mark_process_dead(worker.pid)


# Request bodies: the app answers 413 to a declared body over this without reading
# it (chat.middleware.BodySizeLimitMiddleware; the same variable and default).
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)


def pre_request(worker, req):
    """Close the connection after the answer when the body will be left unread.

    After a response that says keep-alive, gthread drains an unread body of at most
    64 KiB (gunicorn.http.parser._DRAIN_MAX_BYTES) and otherwise closes the
    connection: a client reusing it then fails. The app drains every body up to the
    limit itself; a body over the limit (a 413, never read) or a chunked one (no
    declared size: read only up to the limit) gets `Connection: close` here, which
    gunicorn then honours. An app's own Connection header is dropped by gunicorn.
    """
    length = next((value for name, value in req.headers if name == "CONTENT-LENGTH"), None)
    chunked = any(name == "TRANSFER-ENCODING" and "chunked" in value.lower() for name, value in req.headers)
    if chunked or (length is not None and length.isdigit() and int(length) > MAX_REQUEST_BODY_BYTES):
        req.force_close()


def post_worker_init(worker):
    """gunicorn's own warnings quote a malformed request line (a guest's key is in its path): redacted."""
    from chat.logging import RedactRequestTextFilter  # the worker has loaded the app: cheap here

    error_log = logging.getLogger("gunicorn.error")
    if not any(isinstance(f, RedactRequestTextFilter) for f in error_log.filters):
        error_log.addFilter(RedactRequestTextFilter())
