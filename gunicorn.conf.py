"""gunicorn settings for every deployment path (Procfile, Docker, Render, Zeabur, systemd).

Every path runs ``gunicorn -c gunicorn.conf.py app:app``; only environment variables differ.

Long streams need a worker that does not kill a request after ``timeout`` seconds: gevent when
it is installed, else threads (gthread). Never the default sync worker, whose timeout cuts a
long answer off mid-stream. The shipped requirements do not include gevent, so gthread is what
runs unless an operator installs gevent on purpose.
"""

import importlib.util
import os

DEFAULT_PORT = "8000"
HEARTBEAT_DIR = "/dev/shm"

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', DEFAULT_PORT)}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

if importlib.util.find_spec("gevent") is not None:
    worker_class = "gevent"
    worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
else:
    worker_class = "gthread"
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
