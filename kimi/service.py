"""The service's parts wired together once per app: store, upstream adapter, accounts."""

from __future__ import annotations

import logging
import threading
import time

from .accounts import Accounts
from .auth import Pool
from .chat_request import ChatRequest
from .completions import TurnStream
from .conversations import Conversations
from .errors import KimiError, UpstreamAuthRejected
from .rate_limit import SlidingWindowLimit
from .settings import MAX_ACCOUNTS_TRIED, Settings
from .store import StateStore, open_configured_store
from .stream_slots import StreamSlots
from .token_check import TokenCheck, check_token
from .tokens import Credential
from .upstream import make_upstream
from .upstream.base import Upstream

log = logging.getLogger(__name__)

TOKEN_CHECK_WINDOW_SECONDS = 60.0  # the window TOKEN_CHECKS_PER_MINUTE counts in


class KimiService:
    """Everything a route needs, built from the settings."""

    def __init__(
        self, settings: Settings, store: StateStore | None = None, upstream: Upstream | None = None
    ) -> None:
        self.settings = settings
        self.store = store or open_configured_store(settings)
        self.upstream = upstream or make_upstream(settings, self.store)
        self.accounts = Accounts(
            self.store,
            self.upstream,
            max_concurrent=settings.max_concurrent_per_account,
            wait_seconds=settings.pool_wait_seconds,
            lease_seconds=settings.lease_seconds,
        )
        self.conversations = Conversations(self.store, settings.conversation_ttl_seconds)
        self.stream_slots = StreamSlots(settings.max_streams_per_worker)
        self.token_checks = SlidingWindowLimit(
            settings.token_checks_per_minute, TOKEN_CHECK_WINDOW_SECONDS, what="token checks"
        )
        self._models: tuple[float, list[str]] | None = None
        self._models_lock = threading.Lock()

    def start_turn(self, request: ChatRequest, pool: Pool) -> TurnStream:
        return TurnStream(
            request,
            pool.credentials,
            server_pool=pool.server_side,
            accounts=self.accounts,
            conversations=self.conversations,
            upstream=self.upstream,
            owner=pool.owner,
        )

    def check_token(self, token: str) -> TokenCheck:
        """Whether Kimi accepts ``token``, asked in a way that neither rotates nor keeps it."""
        return check_token(token, self.accounts, self.upstream)

    def verify_pool(self, pool: Pool) -> None:
        """Raise ``UpstreamAuthRejected`` unless one of the caller's own tokens is usable.

        Goes through the same cached session as a chat turn, so a live token whose access token
        is cached costs no upstream call. The server's pool was vouched for by the API key.
        Only the first few tokens are tried: a header full of dead ones costs little.
        """
        if pool.server_side:
            return
        for credential in pool.credentials[:MAX_ACCOUNTS_TRIED]:
            try:
                self.accounts.session(credential)
                return
            except UpstreamAuthRejected:
                continue
        raise UpstreamAuthRejected(
            "Kimi rejected the tokens given in the Authorization header; get a new one."
        )

    def model_ids(self, pool: Pool | None) -> list[str]:
        """Static ids plus the live catalog (read with the pool's first account, cached)."""
        static = self.upstream.static_models()
        live = self._live_models(pool.credentials[0]) if pool and pool.credentials else []
        return static + live

    def _live_models(self, credential: Credential) -> list[str]:
        with self._models_lock:
            if (
                self._models
                and time.monotonic() - self._models[0] < self.settings.models_cache_seconds
            ):
                return self._models[1]
        try:
            session, _ = self.accounts.session(credential)
            models = self.upstream.list_models(session)
        except KimiError as exc:
            log.warning("Live model catalog unavailable, serving the static list: %s", exc.message)
            return []
        with self._models_lock:
            self._models = (time.monotonic(), models)
        return models
