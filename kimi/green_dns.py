"""Name resolution in the gevent worker without a thread hand-off for every new connection.

gevent's default resolver looks every name up on a native thread of the hub's pool, even an IP
address, which has nothing to look up. Each new upstream connection paid that hand-off (waking a
thread, then the hub again); when a burst of streams opens its connections at once, the lookups
also queue behind the pool's few threads. That was about a sixth of a turn's CPU in a burst of
1,000 streams.

Here an IP address is converted on the spot (``AI_NUMERICHOST``: no lookup, no thread), and a
name's answer is kept for ``CACHE_SECONDS``, with one lookup on the pool per name however many
connections wait for it. A failed lookup is not kept. gunicorn.conf.py selects this class
(``GEVENT_RESOLVER``) for the gevent worker; nothing else imports it.
"""

from __future__ import annotations

import _socket
import ipaddress
import time
from typing import Any

from gevent.event import AsyncResult
from gevent.resolver.thread import Resolver as ThreadResolver

CACHE_SECONDS = 30.0
CACHE_ENTRIES = 256  # names a worker talks to: Kimi's hosts, a few file hosts


class Resolver(ThreadResolver):
    """gevent's thread resolver, with addresses answered at once and names' answers kept."""

    def __init__(self, hub: Any = None) -> None:
        super().__init__(hub)
        self._answers: dict[tuple, tuple[float, list]] = {}
        self._lookups: dict[tuple, AsyncResult] = {}

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, kind: int = 0, proto: int = 0, flags: int = 0
    ) -> list:
        if is_address(host):
            numeric = flags | _socket.AI_NUMERICHOST
            return _socket.getaddrinfo(host, port, family, kind, proto, numeric)
        key = (host, port, family, kind, proto, flags)
        kept = self._answers.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        lookup = self._lookups.get(key)
        if lookup is not None:
            return lookup.get()  # another greenlet is looking this name up: share its answer
        lookup = self._lookups[key] = AsyncResult()
        try:
            answer = super().getaddrinfo(host, port, family, kind, proto, flags)
        except BaseException as exc:
            lookup.set_exception(exc)
            raise
        finally:
            del self._lookups[key]
        lookup.set(answer)
        if len(self._answers) >= CACHE_ENTRIES:
            self._answers.clear()
        self._answers[key] = (time.monotonic() + CACHE_SECONDS, answer)
        return answer


def is_address(host: Any) -> bool:
    """Whether ``host`` is an IP address (or None, the wildcard): nothing to look up."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
