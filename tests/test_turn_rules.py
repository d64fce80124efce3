"""The rules of one chat turn (retry, failover, ownership, clean-up), over a scripted upstream.

The store, ``Accounts``, ``Conversations`` and ``TurnStream`` are the real ones; only Kimi is
replaced, by ``FakeUpstream``.
"""

from __future__ import annotations

import pytest
from fakes import FakeUpstream, answer

from kimi.accounts import Accounts
from kimi.chat_request import parse_chat_request
from kimi.completions import TurnStream
from kimi.conversations import Conversation, Conversations
from kimi.errors import (
    NotFound,
    NoUsableAccount,
    RateLimited,
    UpstreamAuthRejected,
    UpstreamError,
)
from kimi.events import ChatOpened, Citation, Finish, ReplyStarted, TextDelta
from kimi.pool import REASON_RATE_LIMITED
from kimi.store import open_store


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "state.db"))


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def accounts(store, upstream) -> Accounts:
    return Accounts(store, upstream)


@pytest.fixture
def conversations(store) -> Conversations:
    return Conversations(store, ttl=3600.0)


def consume(turn: TurnStream) -> list:
    """Read a turn to its end and close it, as the routes do (close() deletes one-shot chats)."""
    try:
        return list(turn)
    finally:
        turn.close()


@pytest.fixture
def start(accounts, conversations, upstream):
    def start(pool, *, server_pool: bool = False, **body) -> TurnStream:
        body.setdefault("model", "kimi")
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        return TurnStream(
            parse_chat_request(body),
            pool,
            server_pool=server_pool,
            accounts=accounts,
            conversations=conversations,
            upstream=upstream,
        )

    return start


@pytest.fixture
def alice(upstream):
    return upstream.account("alice")


@pytest.fixture
def bob(upstream):
    return upstream.account("bob")


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# Retry on an auth rejection


def test_a_rejected_cached_token_is_refreshed_and_the_turn_retried(
    start, upstream, accounts, alice
):
    accounts.session(alice)  # an access token in the cache, from an earlier turn
    upstream.reply(UpstreamAuthRejected("token expired"))
    upstream.reply(*answer("Second try"))
    assert text_of(start([alice])) == "Second try"
    first, second = upstream.calls_of("stream_turn")
    assert first.access_token != second.access_token
    assert len(upstream.calls_of("refresh")) == 2


def test_an_auth_rejection_is_retried_only_once(start, upstream, accounts, alice):
    accounts.session(alice)
    upstream.reply(UpstreamAuthRejected("token expired"))
    upstream.reply(UpstreamAuthRejected("still rejected"))
    upstream.reply(*answer("never played"))
    with pytest.raises(UpstreamAuthRejected):
        consume(start([alice]))
    assert len(upstream.calls_of("stream_turn")) == 2


def test_a_token_rejected_after_a_fresh_refresh_counts_a_failure_and_another_account_is_tried(
    start, upstream, accounts, alice, bob
):
    upstream.reply(UpstreamAuthRejected("rejected"), user="alice")
    upstream.reply(*answer("From bob"), user="bob")
    assert text_of(start([alice, bob])) == "From bob"
    assert upstream.turn_users == ["alice", "bob"]
    assert len([c for c in upstream.calls_of("refresh") if c.user == "alice"]) == 1
    (health,) = accounts.pool.health([alice])
    assert health.auth_failures == 1 and health.dead_since is None
    assert accounts.pool.cooldown(alice) is None  # one failure does not bench it


def test_an_account_whose_refresh_token_is_rejected_fails_over(start, upstream, accounts, bob):
    mallory = upstream.account("mallory")
    upstream.fail_refresh("mallory", UpstreamAuthRejected("refresh token revoked"))
    upstream.fail_refresh("mallory", UpstreamAuthRejected("refresh token revoked"))
    upstream.reply(*answer("From bob"), user="bob")
    assert text_of(start([mallory, bob])) == "From bob"
    assert upstream.turn_users == ["bob"]
    assert accounts.pool.health([mallory])[0].auth_failures == 1


def test_a_refresh_failing_for_another_reason_does_not_bench_the_account(
    start, upstream, accounts, alice
):
    upstream.fail_refresh("alice", UpstreamError("Kimi's auth service answered 500"))
    with pytest.raises(UpstreamError, match="answered 500"):
        consume(start([alice]))
    assert accounts.pool.cooldown(alice) is None


def test_a_rotated_refresh_token_is_kept_for_the_next_refresh(store):
    upstream = FakeUpstream(rotate_refresh_tokens=True)
    alice = upstream.account("alice")
    accounts = Accounts(store, upstream)
    accounts.session(alice)  # Kimi rotates: the token the client sent is dead from now on
    accounts.invalidate(alice)
    session, fresh = accounts.session(alice)
    assert fresh and session.user_id == "alice"
    assert len(upstream.calls_of("refresh")) == 2


# Failover on rate limits


def test_a_rate_limited_account_fails_over_before_the_first_content(start, upstream, alice, bob):
    upstream.reply(ChatOpened("chat-a"), RateLimited("slow down"), user="alice")
    upstream.reply(*answer("From bob"), user="bob")
    assert text_of(start([alice, bob])) == "From bob"
    assert upstream.turn_users == ["alice", "bob"]


def test_the_chat_of_a_failed_attempt_is_deleted(start, upstream, alice, bob):
    upstream.reply(ChatOpened("chat-a"), RateLimited("slow down"), user="alice")
    upstream.reply(*answer(chat_id="chat-b"), user="bob")
    consume(start([alice, bob]))
    deletions = upstream.calls_of("delete_chat")
    assert [(c.user, c.chat_id) for c in deletions] == [("alice", "chat-a"), ("bob", "chat-b")]


def test_no_failover_once_content_was_sent(start, upstream, alice, bob):
    upstream.reply(
        ChatOpened("chat-a"), TextDelta("Half an ans"), RateLimited("slow down"), user="alice"
    )
    upstream.reply(*answer("From bob"), user="bob")
    turn = start([alice, bob])
    assert next(turn) == ChatOpened("chat-a")
    assert next(turn) == TextDelta("Half an ans")
    with pytest.raises(RateLimited):
        next(turn)
    assert upstream.turn_users == ["alice"]


def test_a_rate_limited_account_cools_down_and_is_skipped_by_the_next_turn(
    start, upstream, accounts, alice, bob
):
    upstream.reply(RateLimited("slow down", retry_after=30), user="alice")
    upstream.reply(*answer("first"), user="bob")
    upstream.reply(*answer("second"), user="bob")
    consume(start([alice, bob]))
    assert text_of(start([alice, bob])) == "second"
    assert upstream.turn_users == ["alice", "bob", "bob"]
    assert accounts.pool.cooldown(alice).reason == REASON_RATE_LIMITED


def test_every_account_cooling_is_429_with_retry_after(start, upstream, accounts, alice, bob):
    accounts.pool.cool_down(alice, 30, REASON_RATE_LIMITED)
    accounts.pool.cool_down(bob, 20, REASON_RATE_LIMITED)
    with pytest.raises(RateLimited) as caught:
        consume(start([alice, bob]))
    assert 0 < caught.value.retry_after <= 20
    assert caught.value.status == 429
    assert upstream.turn_users == []


def test_every_account_rate_limited_within_one_turn_is_429(start, upstream, alice, bob):
    upstream.reply(RateLimited("slow down", retry_after=30), user="alice")
    upstream.reply(RateLimited("slow down", retry_after=20), user="bob")
    with pytest.raises(RateLimited) as caught:
        consume(start([alice, bob]))
    assert 0 < caught.value.retry_after <= 20
    assert upstream.turn_users == ["alice", "bob"]


# Dead accounts


def test_a_server_pool_rejected_everywhere_is_503_and_kimi_is_asked_again_next_time(
    start, upstream, alice, bob
):
    for _ in range(2):
        upstream.reply(UpstreamAuthRejected("rejected"), user="alice")
        upstream.reply(UpstreamAuthRejected("rejected"), user="bob")
        with pytest.raises(NoUsableAccount):
            consume(start([alice, bob], server_pool=True))
    assert upstream.turn_users == ["alice", "bob", "alice", "bob"]


def test_a_single_dead_server_account_is_no_usable_account(start, upstream, alice):
    upstream.reply(UpstreamAuthRejected("rejected"))
    with pytest.raises(NoUsableAccount):
        consume(start([alice], server_pool=True))


def test_every_token_of_the_client_rejected_is_401(start, upstream, alice, bob):
    upstream.reply(UpstreamAuthRejected("rejected"), user="alice")
    upstream.reply(UpstreamAuthRejected("rejected"), user="bob")
    with pytest.raises(UpstreamAuthRejected) as caught:
        consume(start([alice, bob]))
    assert caught.value.status == 401


# Owner pinning


def keep(conversations, account, chat_id="chat-1", parent_id="msg-1") -> None:
    conversations.save(Conversation(chat_id, account.account_id, parent_id))


def test_a_kept_conversation_continues_on_its_owning_account(
    start, upstream, conversations, alice, bob
):
    keep(conversations, bob, "chat-b", "msg-7")
    upstream.reply(ReplyStarted("msg-8"), TextDelta("Go on"), Finish())
    turn = start([alice, bob], conversation_id="chat-b")
    assert text_of(turn) == "Go on"
    (call,) = upstream.calls_of("stream_turn")
    assert call.user == "bob"
    assert (call.target.chat_id, call.target.parent_id) == ("chat-b", "msg-7")
    assert conversations.get("chat-b").parent_id == "msg-8"


def test_a_conversation_whose_owner_is_not_in_the_pool_is_404(start, upstream, conversations, bob):
    keep(conversations, bob, "chat-b")
    carol = upstream.account("carol")
    with pytest.raises(NotFound) as caught:
        consume(start([carol], conversation_id="chat-b"))
    assert caught.value.param == "conversation_id"
    assert upstream.turn_users == []


def test_an_unknown_conversation_is_404(start, upstream, alice):
    with pytest.raises(NotFound):
        consume(start([alice], conversation_id="chat-nobody-kept"))
    assert upstream.turn_users == []


def test_a_kept_conversation_does_not_fail_over(start, upstream, conversations, alice, bob):
    keep(conversations, bob, "chat-b")
    upstream.reply(RateLimited("slow down"), user="bob")
    upstream.reply(*answer("From alice"), user="alice")
    with pytest.raises(RateLimited):
        consume(start([alice, bob], conversation_id="chat-b"))
    assert upstream.turn_users == ["bob"]


# Clean-up of one-shot chats


def test_a_one_shot_chat_is_deleted_after_the_answer(start, upstream, alice):
    upstream.reply(*answer(chat_id="chat-1"))
    consume(start([alice]))
    (deletion,) = upstream.calls_of("delete_chat")
    assert (deletion.user, deletion.chat_id) == ("alice", "chat-1")


def test_a_one_shot_chat_is_deleted_when_the_answer_breaks_midway(start, upstream, alice):
    upstream.reply(ChatOpened("chat-1"), TextDelta("Half"), UpstreamError("connection reset"))
    with pytest.raises(UpstreamError, match="connection reset"):
        consume(start([alice]))
    assert upstream.deleted == ["chat-1"]


def test_a_one_shot_chat_is_deleted_when_the_client_disconnects(start, upstream, alice):
    upstream.reply(ChatOpened("chat-1"), TextDelta("One"), TextDelta("Two"), Finish())
    turn = start([alice])
    assert next(turn) == ChatOpened("chat-1")
    assert next(turn) == TextDelta("One")
    turn.close()
    assert upstream.deleted == ["chat-1"]
    assert upstream.closed_replies == 1


def test_a_kept_chat_is_not_deleted_and_is_remembered_with_the_reply_message_id(
    start, upstream, conversations, alice
):
    upstream.reply(*answer(chat_id="chat-9", message_id="msg-3"))
    turn = start([alice], conversation_id="none")
    consume(turn)
    assert upstream.deleted == []
    assert turn.conversation_id == "chat-9"
    assert conversations.get("chat-9") == Conversation("chat-9", alice.account_id, "msg-3")


def test_a_new_kept_chat_whose_attempt_failed_before_any_content_is_deleted(
    start, upstream, alice, bob
):
    upstream.reply(ChatOpened("chat-a"), ReplyStarted("msg-a"), RateLimited("slow"), user="alice")
    upstream.reply(*answer(chat_id="chat-b"), user="bob")
    turn = start([alice, bob], conversation_id="none")
    consume(turn)
    assert turn.conversation_id == "chat-b"
    assert upstream.deleted == ["chat-a"]  # the client never learns its id: nobody could use it


def test_the_chat_id_comes_before_content_and_again_after_a_failover(start, upstream, alice, bob):
    upstream.reply(ChatOpened("chat-a"), RateLimited("slow down"), user="alice")
    upstream.reply(*answer("From bob", chat_id="chat-b"), user="bob")
    events = consume(start([alice, bob]))
    opened = [e.chat_id for e in events if isinstance(e, ChatOpened)]
    assert opened == ["chat-a", "chat-b"]
    assert isinstance(events[1], ChatOpened) and isinstance(events[2], TextDelta)


def test_a_continued_chat_is_not_deleted(start, upstream, conversations, alice):
    keep(conversations, alice, "chat-1")
    upstream.reply(ReplyStarted("msg-2"), TextDelta("More"), Finish())
    consume(start([alice], conversation_id="chat-1"))
    assert upstream.deleted == []


def test_a_failed_deletion_does_not_hide_the_answer(start, upstream, alice):
    upstream.reply(*answer("All of it"))
    upstream.fail_delete(UpstreamError("delete answered 500"))
    events = consume(start([alice]))
    assert text_of(events) == "All of it"
    assert events[-1] == Finish()


def test_a_failed_deletion_does_not_hide_the_turns_error(start, upstream, alice):
    upstream.reply(ChatOpened("chat-1"), TextDelta("Half"), UpstreamError("connection reset"))
    upstream.fail_delete(UpstreamError("delete answered 500"))
    with pytest.raises(UpstreamError, match="connection reset"):
        consume(start([alice]))


def test_a_deletion_rejected_for_an_expired_token_is_retried_with_a_fresh_one(
    start, upstream, alice
):
    upstream.reply(*answer(chat_id="chat-1"))
    upstream.fail_delete(UpstreamAuthRejected("token expired during the answer"))
    consume(start([alice]))
    first, second = upstream.calls_of("delete_chat")
    assert first.chat_id == second.chat_id == "chat-1"
    assert first.access_token != second.access_token


# Citations


SEARCH_REPLY = (
    ChatOpened("chat-1"),
    TextDelta("The answer."),
    Citation("Example", "https://example.com/a"),
    Citation("", "https://example.com/b"),
    Finish(),
)


def test_citations_are_listed_after_the_text_and_before_finish(start, upstream, alice):
    upstream.reply(*SEARCH_REPLY)
    events = consume(start([alice], model="kimi-search"))[1:]
    assert events[0] == TextDelta("The answer.")
    assert "1. [Example](https://example.com/a)" in events[1].text
    assert "2. [https://example.com/b](https://example.com/b)" in events[1].text
    assert events[2:] == [Finish()]


def test_silent_models_list_no_citations(start, upstream, alice):
    upstream.reply(*SEARCH_REPLY)
    events = consume(start([alice], model="kimi-search-silent"))
    assert events == [ChatOpened("chat-1"), TextDelta("The answer."), Finish()]
