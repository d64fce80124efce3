"""Running one chat turn: the account, the upstream call, retries, ownership and clean-up.

Routes get the chat's id (``ChatOpened``, before any content, again after a failover) and
content events (text, reasoning, calls, finish). Everything before the first content event may
be retried on another account; everything after it is the client's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

from .accounts import Accounts
from .chat_request import ChatRequest
from .citations import render_citation_list
from .conversations import Conversation, Conversations
from .errors import (
    KimiError,
    NotFound,
    NoUsableAccount,
    RateLimited,
    ResearchQuotaExhausted,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamTimeout,
)
from .events import ChatOpened, Citation, ContentEvent, Finish, ReplyStarted, TextDelta
from .history import Message
from .pool import Checkout
from .settings import MAX_ACCOUNTS_TRIED
from .shaping import shape_reply
from .tokens import Credential
from .upstream.base import Session, TurnTarget, Upstream

log = logging.getLogger(__name__)


@dataclass
class _ChatInUse:
    """Where the last finished answer lives: a follow-up turn goes after it, same account."""

    credential: Credential
    session: Session
    chat_id: str
    reply_id: str | None
    one_shot: bool  # deleted upstream when the turn is closed


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
        owner: str = "",
    ) -> None:
        self.request = request
        self.pool = list(pool)
        self.server_pool = server_pool
        self.accounts = accounts
        self.conversations = conversations
        self.upstream = upstream
        self.owner = owner  # who may continue a kept chat: auth.key_owner of the API key
        self.conversation_id: str | None = request.conversation_id
        self._content_sent = False
        self._chat: _ChatInUse | None = None
        self._checkout: Checkout | None = None  # the account's slot, held until the turn ends
        self._reply_id: str | None = None
        self._streams: list[Generator] = []
        self._events = self._shaped(self._run())

    def __iter__(self) -> Iterator[ContentEvent]:
        return self

    def __next__(self) -> ContentEvent:
        return next(self._events)

    def __enter__(self) -> TurnStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the turn: the upstream stream is closed and a one-shot chat deleted, even when a
        stage ended the answer early (``max_tokens``, ``stop``)."""
        for stream in reversed(self._streams):
            stream.close()
        self._give_back()
        chat, self._chat = self._chat, None
        if chat and chat.one_shot:
            self._delete_chat(chat.credential, chat.session, chat.chat_id)

    def follow_up(self, text: str) -> Iterator[ContentEvent]:
        """One more user message in the chat of the finished answer, on the same account (a
        repair of invalid output). Its events are shaped like the turn's; no failover."""
        chat = self._chat
        if chat is None:
            raise RuntimeError("follow_up() needs a finished turn whose chat is still open")
        target = TurnTarget(
            messages=(Message("user", text),),
            options=self.request.options,
            chat_id=chat.chat_id,
            parent_id=chat.reply_id,
        )
        return self._shaped(self._follow_up(chat, target))

    def _follow_up(self, chat: _ChatInUse, target: TurnTarget) -> Iterator[ContentEvent]:
        events = self.upstream.stream_turn(chat.session, target)
        try:
            yield from self._content(events, chat.credential)
        finally:
            events.close()

    def _shaped(self, raw: Generator) -> Generator:
        shaped = shape_reply(raw, self.request)
        self._streams += [raw, shaped]  # both closed explicitly: a stage may stop reading early
        return shaped

    def _run(self) -> Iterator[ContentEvent]:
        existing = self._existing_conversation()
        target = self._target(existing)  # the same for every account tried
        try:
            yield from self._attempts(target, existing)
        finally:
            self._give_back()
            self.upstream.release_files(target.files)

    def _attempts(
        self, target: TurnTarget, existing: Conversation | None
    ) -> Iterator[ContentEvent]:
        tried: set[str] = set()
        retried_auth: set[str] = set()
        checkout: Checkout | None = None
        while True:
            checkout = checkout or self._check_out(existing, tried)
            credential = checkout.credential
            try:
                yield from self._attempt(checkout, target, retried_auth)
                return
            except UpstreamAuthRejected as exc:
                if self._content_sent:
                    raise
                if credential.account_id not in retried_auth:
                    retried_auth.add(credential.account_id)
                    self.accounts.invalidate(credential)
                    continue  # the same account and slot, with a fresh access token
                self.accounts.invalidate(credential)
                self.accounts.pool.auth_failed(credential)
                # A client's own tokens keep Kimi's reason (401); the server's pool answers 503.
                if existing or (len(self.pool) == 1 and not self.server_pool):
                    raise
                if len(tried) + 1 >= MAX_ACCOUNTS_TRIED:
                    if not self.server_pool:
                        raise
                    raise NoUsableAccount(
                        f"Kimi rejected the {MAX_ACCOUNTS_TRIED} accounts tried for this "
                        "request; the others are left to later requests."
                    ) from exc
            except RateLimited as exc:
                self._cool_down(credential, exc)
                if not self._may_fail_over(existing, tried):
                    raise
            except UpstreamOverloaded:
                # Kimi's model is overloaded, not this account: no cool-down, another may get in;
                # when every account was tried, Kimi's own words are the answer.
                if not self._may_fail_over(existing, tried) or len(tried) + 1 >= len(self.pool):
                    raise
            except (UpstreamError, UpstreamTimeout) as exc:
                self.accounts.pool.record_error(credential, exc)
                raise
            tried.add(credential.account_id)
            self._give_back()
            checkout = None
            log.info("Trying another account after %s failed", credential.label)

    def _may_fail_over(self, existing: Conversation | None, tried: set[str]) -> bool:
        """Whether another account may take this turn: nothing sent yet, no kept chat (it has
        one owner), another account in the pool, and tries left."""
        if self._content_sent or existing or len(self.pool) == 1:
            return False
        return len(tried) + 1 < MAX_ACCOUNTS_TRIED

    def _check_out(self, existing: Conversation | None, tried: set[str]) -> Checkout:
        """An account for the next attempt, holding one of its slots; a kept chat's owner."""
        pool = [self._owner(existing)] if existing else self.pool
        self._checkout = self.accounts.pool.checkout(
            pool, tried, server_pool=self.server_pool, research=self.request.options.research
        )
        return self._checkout

    def _give_back(self) -> None:
        checkout, self._checkout = self._checkout, None
        if checkout is not None:
            self.accounts.pool.release(checkout, served=self._content_sent)

    def _cool_down(self, credential: Credential, exc: RateLimited) -> None:
        if isinstance(exc, ResearchQuotaExhausted):
            self.accounts.pool.cool_down_research(credential, exc.retry_after)
        else:
            self.accounts.pool.cool_down(credential, exc.retry_after)

    def _existing_conversation(self) -> Conversation | None:
        chat_id = self.request.conversation_id
        if chat_id is None:
            return None
        conversation = self.conversations.get(chat_id)
        # Another key's chat answers like a missing one: whether it exists is not told either.
        if conversation is None or conversation.owner != self.owner:
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
        self, checkout: Checkout, target: TurnTarget, retried_auth: set[str]
    ) -> Iterator[ContentEvent]:
        credential = checkout.credential
        session, fresh = self.accounts.session(credential)
        if fresh:
            retried_auth.add(credential.account_id)  # a new token failing again is not stale
        self.conversation_id = target.chat_id
        events = self.upstream.stream_turn(session, target)
        one_shot = not target.chat_id and not self.request.keep_chat
        failed = False
        try:
            for event in self._content(events, credential):
                if not isinstance(event, ChatOpened) and not self._content_sent:
                    self._content_sent = True
                    self.accounts.pool.turn_started(checkout)
                self.accounts.pool.renew(checkout)
                if isinstance(event, Finish) and self.conversation_id:
                    # Kept open until close(): a follow-up may still go into this chat.
                    self._chat = _ChatInUse(
                        credential, session, self.conversation_id, self._reply_id, one_shot
                    )
                yield event
        except Exception:  # not GeneratorExit: a stage that ended the answer early is no failure
            failed = True
            raise
        finally:
            events.close()
            # A new chat the client never learned of (or a one-shot one) goes now.
            shown = self._content_sent and (not failed or self.request.keeps_unfinished_chat)
            unknown = not target.chat_id and not shown
            if self._chat is None and self.conversation_id and (one_shot or unknown):
                self._delete_chat(credential, session, self.conversation_id)

    def _content(self, events: Generator, credential: Credential) -> Iterator[ContentEvent]:
        citations: list[tuple[str, str]] = []
        for event in events:
            if isinstance(event, ChatOpened):
                self.conversation_id = event.chat_id
                yield event  # the client's id travels with the events, not through attributes
            elif isinstance(event, ReplyStarted):
                self._reply_id = event.message_id
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
                Conversation(self.conversation_id, credential.account_id, message_id, self.owner)
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
