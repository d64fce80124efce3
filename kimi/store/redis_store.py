"""The shared state store: Redis, or a service that speaks its protocol (Render Key Value, Upstash,
Valkey), for several instances or hosts that must see the same tokens and conversations.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..errors import StateStoreUnavailable
from .outage import OutageLog

log = logging.getLogger(__name__)

# Connections one worker process keeps at most; a call waits up to the timeout for a free one.
MAX_CONNECTIONS = 64
PING_TTL_MS = 60_000
# Redis's own words are safe to show (they never echo a value), but kept short.
MAX_CAUSE_CHARS = 120

# Atomic compare-and-set. ARGV: has_expected, expected, has_value, value, ttl in ms ('' = none).
# GET answers false (not nil) for a missing key inside a script.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '0' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] == '' then
  redis.call('SET', KEYS[1], ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
end
return 1
"""


class RedisStore:
    """``StateStore`` on Redis: every key under ``prefix``, expiring values with a TTL.

    Connect and read timeouts of ``timeout`` seconds make an outage (down, or hung) fail fast
    with ``StateStoreUnavailable``. A connection dropped under a command is retried once at
    once (Redis closed it between checkout and send), a timeout is not (Redis hung: waiting
    twice helps nobody). The pool reconnects on the next call, so the service recovers by
    itself when Redis is back.
    """

    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self._where = public_location(url)
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            decode_responses=True,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._client = redis.Redis(connection_pool=pool)
        self._compare_and_set = self._client.register_script(_COMPARE_AND_SET)
        self._ping_key = f"ping:{uuid.uuid4().hex}"
        self._outage = OutageLog(self.describe())
        try:
            self.ping()
        except StateStoreUnavailable as exc:
            # Not fatal: requests answer 503 until Redis answers, then carry on.
            log.warning("Redis is not usable yet: %s", exc.message)

    def get(self, key: str) -> str | None:
        return self._call(self._client.get, self.prefix + key)

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        self._call(self._client.set, self.prefix + key, value, px=_milliseconds(ttl))

    def delete(self, key: str) -> None:
        self._call(self._client.delete, self.prefix + key)

    def compare_and_set(
        self, key: str, expected: str | None, value: str | None, ttl: float | None = None
    ) -> bool:
        args = [
            "0" if expected is None else "1",
            expected or "",
            "0" if value is None else "1",
            value or "",
            str(_milliseconds(ttl) or ""),
        ]
        return bool(self._call(self._compare_and_set, keys=[self.prefix + key], args=args))

    def ping(self) -> bool:
        nonce = uuid.uuid4().hex
        key = self.prefix + self._ping_key
        self._call(self._client.set, key, nonce, px=PING_TTL_MS)
        return self._call(self._client.get, key) == nonce

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        """Close the pool's connections (tests; a worker's are closed when it exits)."""
        self._client.close()

    def _call(self, command, *args, **kwargs):
        """Run one command; any Redis error leaves as ``StateStoreUnavailable``."""
        try:
            result = command(*args, **kwargs)
        except RedisError as exc:
            cause = _cause(exc, self.timeout)
            self._outage.failed(cause)
            message = f"The state store is unavailable (Redis: {cause})."
            raise StateStoreUnavailable(message) from exc
        self._outage.succeeded()
        return result


def public_location(url: str) -> str:
    """The URL without user name and password: ``rediss://host:6379/0``."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _milliseconds(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, int(ttl * 1000))


def _cause(exc: RedisError, timeout: float) -> str:
    """Why Redis failed, in words that name no host, user or password."""
    if isinstance(exc, RedisTimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return "the credentials in the URL were refused"
    if isinstance(exc, BusyLoadingError):
        return "Redis is loading its data"
    if isinstance(exc, RedisConnectionError):
        reason = exc.__cause__ or exc.__context__
        if isinstance(reason, OSError) and reason.strerror:
            return f"cannot connect ({reason.strerror})"
        return "the connection failed or was closed"
    if isinstance(exc, ResponseError):
        return str(exc)[:MAX_CAUSE_CHARS]
    return type(exc).__name__
