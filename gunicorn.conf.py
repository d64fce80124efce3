"""gunicorn settings for every deployment path (Procfile, Docker, Render, Zeabur, systemd).

Every path runs ``gunicorn -c gunicorn.conf.py app:app``; only environment variables differ.

Long streams need a worker that does not kill a request after ``timeout`` seconds. The default
is gevent: an open stream costs a greenlet, not a thread, so one worker holds hundreds of them
(MAX_STREAMS_PER_WORKER caps them; beyond it the service answers 429). ``GUNICORN_WORKER=gthread``
chooses threads instead, one per open request. Never the default sync worker, whose timeout
cuts a long answer off mid-stream.
"""

import gc
import os
import shutil
import signal
import tempfile

DEFAULT_PORT = "8000"
HEARTBEAT_DIR = "/dev/shm"
# prometheus-client's multiprocess mode: each worker writes its counters to files here.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_CLASSES = ("gevent", "gthread")
# Connections a gevent worker accepts: the stream cap plus room for health checks and the 429s
# that tell clients over the cap to come back later.
CONNECTIONS_OVER_STREAM_CAP = 100

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', DEFAULT_PORT)}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

worker_class = os.environ.get("GUNICORN_WORKER", "").strip().lower() or "gevent"
if worker_class not in WORKER_CLASSES:
    raise RuntimeError(f"GUNICORN_WORKER must be one of {', '.join(WORKER_CLASSES)}")
if worker_class == "gevent":
    # New connections resolve an IP address at once and a name once per 30 s, not on a thread
    # each time (kimi/green_dns.py). Read by gevent in the worker; an operator's choice stands.
    os.environ.setdefault("GEVENT_RESOLVER", "kimi.green_dns.Resolver")
    stream_cap = int(os.environ.get("MAX_STREAMS_PER_WORKER", "1000"))
    worker_connections = int(
        os.environ.get("WORKER_CONNECTIONS", str(stream_cap + CONNECTIONS_OVER_STREAM_CAP))
    )
else:
    # One thread per open request: a stream holds its thread for the whole answer.
    threads = int(os.environ.get("GUNICORN_THREADS", "32"))

# Seconds a worker may be silent towards the arbiter; with gthread/gevent a streaming request
# does not block the heartbeat, so this only catches truly stuck workers.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# On SIGTERM, stop accepting and let running streams finish for at most this long. The
# platform's own kill deadline must be longer (docker stop_grace_period, systemd
# TimeoutStopSec, Render maxShutdownDelaySeconds), or it cuts them first.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "60"))
keepalive = 5


# Python's cyclic garbage collector, per worker: objects allocated this many times more than
# freed start a young collection (Python's default: 700); older generations as by default.
GC_YOUNG_THRESHOLD = 10_000


def post_worker_init(worker):
    """On SIGTERM, streams still running near the end of the grace end with an error event.
    In a gevent worker, a write to a client is one send when the kernel takes it all.

    The garbage collector: the app's own objects, loaded by now, are frozen out of every
    collection, and young collections run less often. A worker holds the objects of hundreds
    of streams; with the defaults, a burst of 1,000 turns set off full collections of 30 to 70
    ms each (about a sixth of a worker's CPU in the burst), now one of about 3 ms."""
    from kimi import shutdown

    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    shutdown.watch()
    if type(worker).__module__ == "gunicorn.workers.ggevent":
        from kimi import green_writes

        green_writes.install()
    stop = worker.handle_exit

    def handle_exit(sig, frame):
        shutdown.begin(worker.cfg.graceful_timeout)
        stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


# The metrics folder this master made (and removes at exit), when the operator named none:
# METRICS_DIR_PREFIX, the master's pid, a dash and a random part.
METRICS_DIR_PREFIX = "kimi-metrics-"
_private_metrics_dir = None


def on_starting(server):
    """GET /metrics adds up every worker's counters from files in PROMETHEUS_MULTIPROC_DIR: set
    it before the workers fork and import prometheus-client, to a new private folder (on tmpfs
    when there is one) unless the operator named one."""
    global _private_metrics_dir
    if not os.environ.get(METRICS_DIR_ENV):
        tmpfs = HEARTBEAT_DIR if os.access(HEARTBEAT_DIR, os.W_OK) else None
        parent = tmpfs or tempfile.gettempdir()
        _remove_dead_masters_metrics(parent)
        prefix = f"{METRICS_DIR_PREFIX}{os.getpid()}-"
        _private_metrics_dir = tempfile.mkdtemp(prefix=prefix, dir=parent)
        os.environ[METRICS_DIR_ENV] = _private_metrics_dir


def _remove_dead_masters_metrics(parent):
    """A master killed with SIGKILL never ran on_exit: drop the folders of masters (of this
    user) that are gone, so that restarts under a supervisor do not pile them up in memory."""
    for entry in os.scandir(parent):
        name = entry.name
        if not (name.startswith(METRICS_DIR_PREFIX) and entry.is_dir(follow_symlinks=False)):
            continue
        pid = name[len(METRICS_DIR_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and entry.stat().st_uid == os.getuid() and not _alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def child_exit(server, worker):
    """A worker is gone: its open-streams gauge stops counting (its counters still do)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _private_metrics_dir:
        shutil.rmtree(_private_metrics_dir, ignore_errors=True)


# Each worker opens its own SQLite connections and HTTP pool after the fork: never preload.
preload_app = False

# Heartbeat files on tmpfs: a disk-backed /tmp can stall workers under Docker.
if os.path.isdir(HEARTBEAT_DIR) and os.access(HEARTBEAT_DIR, os.W_OK):
    worker_tmp_dir = HEARTBEAT_DIR

# gunicorn's runtime control socket defaults to a file under $HOME, which is read-only on some
# platforms and shared by two instances of one user. Nothing here uses it.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
# The access log never carries the Authorization header: only client, request line, status,
# size and duration.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(L)ss'
