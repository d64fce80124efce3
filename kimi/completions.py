"""Running one chat turn: the account, the upstream call, retries, ownership and clean-up.

Routes get content events only (text, reasoning, finish). Everything before the first content
event may be retried on another account; everything after it is the client's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence

from .accounts import REASON_RATE_LIMITED, Accounts
from .chat_request import ChatRequest
from .citations import render_citation_list
from .conversations import Conversation, Conversations
from .errors import KimiError, NotFound, RateLimited, UpstreamAuthRejected
from .events import ChatOpened, Citation, ContentEvent, Finish, ReplyStarted, TextDelta
from .shaping import shape_reply
from .tokens import Credential
from .upstream.base import Session, TurnTarget, Upstream

log = logging.getLogger(__name__)


class TurnStream:
    """The content events of one turn. ``conversation_id`` is set once Kimi names the chat."""

    def __init__(
        self,
        request: ChatRequest,
        pool: Sequence[Credential],
        *,
        server_pool: bool,
        accounts: Accounts,
        conversations: Conversations,
        upstream: Upstream,
    ) -> None:
        self.request = request
        self.pool = list(pool)
        self.server_pool = server_pool
        self.accounts = accounts
        self.conversations = conversations
        self.upstream = upstream
        self.conversation_id: str | None = request.conversation_id
        self._content_sent = False
        self._turn = self._run()
        self._events = shape_reply(self._turn, request)

    def __iter__(self) -> Iterator[ContentEvent]:
        return self

    def __next__(self) -> ContentEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop the turn: the upstream stream is closed and a one-shot chat deleted, even when a
        stage ended the answer early (``max_tokens``, ``stop``)."""
        self._events.close()
        self._turn.close()

    def _run(self) -> Iterator[ContentEvent]:
        existing = self._existing_conversation()
        target = self._target(existing)  # the same for every account tried
        try:
            yield from self._attempts(target, existing)
        finally:
            self.upstream.release_files(target.files)

    def _attempts(
        self, target: TurnTarget, existing: Conversation | None
    ) -> Iterator[ContentEvent]:
        tried: set[str] = set()
        retried_auth: set[str] = set()
        while True:
            credential = self._owner(existing) if existing else self._choose(tried)
            try:
                yield from self._attempt(credential, target, retried_auth)
                return
            except UpstreamAuthRejected:
                if self._content_sent:
                    raise
                if credential.account_id not in retried_auth:
                    retried_auth.add(credential.account_id)
                    self.accounts.invalidate(credential)
                    continue
                self.accounts.mark_dead(credential)
                # A client's only token keeps Kimi's reason; a server pool answers 503 (choose).
                if existing or (len(self.pool) == 1 and not self.server_pool):
                    raise
            except RateLimited as exc:
                self.accounts.cool_down(credential, exc.retry_after, REASON_RATE_LIMITED)
                if self._content_sent or existing or len(self.pool) == 1:
                    raise
            tried.add(credential.account_id)
            log.info("Trying another account after %s failed", credential.label)

    def _choose(self, tried: set[str]) -> Credential:
        return self.accounts.choose(self.pool, tried, server_pool=self.server_pool)

    def _existing_conversation(self) -> Conversation | None:
        chat_id = self.request.conversation_id
        if chat_id is None:
            return None
        conversation = self.conversations.get(chat_id)
        if conversation is None:
            raise NotFound(
                f"Unknown conversation_id {chat_id!r}: it was never kept here, has expired, or "
                'was a one-shot chat (send conversation_id "none" to keep a new one).',
                param="conversation_id",
            )
        return conversation

    def _owner(self, conversation: Conversation) -> Credential:
        for credential in self.pool:
            if credential.account_id == conversation.account_id:
                return credential
        raise NotFound(
            "This conversation belongs to a Kimi account that is not among this request's "
            "credentials.",
            param="conversation_id",
        )

    def _target(self, existing: Conversation | None) -> TurnTarget:
        """What to send; files are fetched and checked here, once, before any chat call."""
        return TurnTarget(
            messages=self.request.outgoing_messages(continuing=existing is not None),
            options=self.request.options,
            chat_id=existing.chat_id if existing else None,
            parent_id=existing.parent_id if existing else None,
            files=self.upstream.prepare_files(self.request.files),
        )

    def _attempt(
        self, credential: Credential, target: TurnTarget, retried_auth: set[str]
    ) -> Iterator[ContentEvent]:
        session, fresh = self.accounts.session(credential)
        if fresh:
            retried_auth.add(credential.account_id)  # a new token failing again is not stale
        self.conversation_id = target.chat_id
        events = self.upstream.stream_turn(session, target)
        try:
            for event in self._content(events, credential):
                self._content_sent = True
                yield event
        finally:
            events.close()
            kept = self.request.keep_chat and self._content_sent  # the client has its id
            if self.conversation_id and not target.chat_id and not kept:
                self._delete_chat(credential, session, self.conversation_id)

    def _content(self, events: Generator, credential: Credential) -> Iterator[ContentEvent]:
        citations: list[tuple[str, str]] = []
        for event in events:
            if isinstance(event, ChatOpened):
                self.conversation_id = event.chat_id
            elif isinstance(event, ReplyStarted):
                self._remember(credential, event.message_id)
            elif isinstance(event, Citation):
                citations.append((event.title, event.url))
            elif isinstance(event, Finish):
                if citations and not self.request.options.silent:
                    yield TextDelta(render_citation_list(citations))
                yield event
                return
            else:
                yield event

    def _remember(self, credential: Credential, message_id: str) -> None:
        if self.request.keep_chat and self.conversation_id:
            self.conversations.save(
                Conversation(self.conversation_id, credential.account_id, message_id)
            )

    def _delete_chat(self, credential: Credential, session: Session, chat_id: str) -> None:
        try:
            try:
                self.upstream.delete_chat(session, chat_id)
            except UpstreamAuthRejected:  # the access token expired during a long answer
                self.accounts.invalidate(credential)
                self.upstream.delete_chat(self.accounts.session(credential)[0], chat_id)
        except KimiError as exc:
            # Clean-up must not hide the turn's own outcome; the chat stays in the user's list.
            log.warning("Could not delete one-shot chat for %s: %s", credential.label, exc.message)
