"""gunicorn settings for every deployment path (Procfile, Docker, Render, Zeabur, systemd).

Long streams need a worker that does not kill a request after ``timeout`` seconds of one
request: gevent when it is installed, else threads (gthread). Never the default sync worker.
"""

import importlib.util
import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

if importlib.util.find_spec("gevent") is not None:
    worker_class = "gevent"
    worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
else:
    worker_class = "gthread"
    threads = int(os.environ.get("GUNICORN_THREADS", "32"))

# Seconds a worker may be silent towards the arbiter; with gthread/gevent a streaming request
# does not block the heartbeat, so this only catches truly stuck workers.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# On shutdown or reload, let running streams finish for this long.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "60"))
keepalive = 5

# Heartbeat files on tmpfs: a disk-backed /tmp can stall workers under Docker.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

accesslog = "-"
errorlog = "-"
# The access log never carries the Authorization header: only method, path, status, size, time.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(L)ss'
