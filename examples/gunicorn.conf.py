"""Production settings for gunicorn serving a wsmiddleware application.

    gunicorn -c examples/gunicorn.conf.py examples.chat:application

Every value can be set from the environment, so one file serves each
deployment: BIND, WEB_CONCURRENCY, WORKER_CONNECTIONS, GRACEFUL_TIMEOUT,
FORWARDED_ALLOW_IPS, LOG_LEVEL, and WSM_REDIS_URL (pub/sub across workers).
"""

from __future__ import annotations

import multiprocessing
import os
from urllib.parse import urlsplit

# Behind a reverse proxy, listen on loopback only; the proxy faces the network.
bind = os.environ.get("BIND", "127.0.0.1:8000")

# gevent: one worker per core, each holding thousands of connections.
# (A WebSocket holds a worker connection slot only during its handshake and on_open;
# cap open WebSockets with the middleware's max_connections.)
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))

# The master kills a worker that has not notified it for `timeout` seconds; the
# gevent worker notifies from its own loop, so long-lived WebSockets are fine.
timeout = 30
# On SIGTERM / SIGHUP a worker stops accepting and closes its WebSockets with
# 1001 ("going away", clients reconnect elsewhere); requests and closing
# handshakes get this long to finish before the master kills the worker.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
# Idle HTTP keep-alive only; it does not apply to upgraded connections.
keepalive = 5
# Recycling workers after N requests would cut every WebSocket it holds.
max_requests = 0

# Trust X-Forwarded-* only from the proxy (nginx on the same host by default).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

loglevel = os.environ.get("LOG_LEVEL", "info")
accesslog = "-"
errorlog = "-"

# With several workers, each is its own process: pub/sub must go through Redis
# for a message published in one worker to reach subscribers in another. The
# application reads WSM_REDIS_URL (the workers inherit this environment).
WSM_REDIS_URL = os.environ.get("WSM_REDIS_URL")


def on_starting(server):
    """Say at start-up how pub/sub will reach across workers."""
    if WSM_REDIS_URL:
        parts = urlsplit(WSM_REDIS_URL)  # logged without its password
        server.log.info("pub/sub through Redis at %s://%s%s", parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path)
    elif workers > 1:
        server.log.warning(
            "WSM_REDIS_URL is not set: with %d workers, in-memory pub/sub only reaches "
            "subscribers connected to the same worker", workers,
        )
