"""The pool that heals: least recently used first, a cap on turns per account, cool-downs until
the time Kimi gave, tokens dead only after repeated rejections and probed again with backoff.

The store, ``Accounts`` and ``TurnStream`` are real; Kimi is ``FakeUpstream`` and the pool's
clock is a ``FakeClock`` the tests move by hand.
"""

from __future__ import annotations

import threading

import pytest
from fakes import FakeUpstream, answer

from kimi import pool as pool_module
from kimi.account_health import (
    BUSY,
    COOLING,
    DEAD,
    DEAD_AFTER_SECONDS,
    OK,
    PROBE_DELAYS,
    AccountHealth,
    probe_delay,
)
from kimi.accounts import Accounts
from kimi.chat_request import parse_chat_request
from kimi.completions import TurnStream
from kimi.conversations import Conversation, Conversations
from kimi.errors import (
    BadRequest,
    NoUsableAccount,
    RateLimited,
    ResearchQuotaExhausted,
    UpstreamAuthRejected,
    UpstreamError,
)
from kimi.events import ChatOpened, TextDelta
from kimi.pool import BUSY_CODE, LEASE_SECONDS
from kimi.settings import MAX_ACCOUNTS_TRIED, Settings
from kimi.store import open_store


class FakeClock:
    """The pool's idea of now, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "state.db"))


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def make_accounts(store, upstream, clock):
    def make(**options) -> Accounts:
        return Accounts(store, upstream, clock=clock, **options)

    return make


@pytest.fixture
def accounts(make_accounts) -> Accounts:
    return make_accounts()


@pytest.fixture
def conversations(store) -> Conversations:
    return Conversations(store, ttl=3600.0)


@pytest.fixture
def start(accounts, conversations, upstream):
    def start(pool, *, server_pool: bool = True, using: Accounts | None = None, **body):
        body.setdefault("model", "kimi")
        body.setdefault("messages", [{"role": "user", "content": "hi"}])
        return TurnStream(
            parse_chat_request(body),
            pool,
            server_pool=server_pool,
            accounts=using or accounts,
            conversations=conversations,
            upstream=upstream,
        )

    return start


@pytest.fixture
def users(upstream):
    """Credentials for any number of Kimi users: ``alice, bob = users("alice", "bob")``."""
    return lambda *names: [upstream.account(name) for name in names]


def consume(turn: TurnStream) -> list:
    try:
        return list(turn)
    finally:
        turn.close()


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def open_turn(start, pool, **kwargs) -> TurnStream:
    """A turn that has started its answer and holds its account until closed."""
    turn = start(pool, **kwargs)
    assert isinstance(next(turn), ChatOpened)
    assert isinstance(next(turn), TextDelta)
    return turn


def rejected_turn(start, pool, **kwargs) -> None:
    """A turn whose one account Kimi rejects, even with a freshly refreshed token."""
    with pytest.raises((UpstreamAuthRejected, NoUsableAccount)):
        consume(start(pool, **kwargs))


def kill(start, upstream, clock, credential, **kwargs) -> None:
    """Rejections in a row, spread over more than the time that makes a token dead."""
    user = credential.claims.get("sub") or credential.token.removeprefix("refresh-")
    upstream.revoke(user)
    for _ in range(3):
        rejected_turn(start, [credential], **kwargs)
        clock.advance(DEAD_AFTER_SECONDS / 2 + 1)
    upstream.restore(user)


# Choosing: least recently used first


def test_turns_go_round_the_pool_least_recently_used_first(start, upstream, users, clock):
    alice, bob, carol = users("alice", "bob", "carol")
    for _ in range(4):
        upstream.reply(*answer())
        consume(start([alice, bob, carol]))
        clock.advance(1)
    assert upstream.turn_users == ["alice", "bob", "carol", "alice"]


def test_the_account_idle_longest_is_chosen_whatever_its_place(start, upstream, users, clock):
    alice, bob = users("alice", "bob")
    upstream.reply(*answer())
    consume(start([bob]))  # bob served a turn through another pool
    clock.advance(1)
    upstream.reply(*answer())
    upstream.reply(*answer())
    consume(start([bob, alice]))
    consume(start([bob, alice]))
    assert upstream.turn_users == ["bob", "alice", "bob"]


def test_callers_own_tokens_take_turns_least_recently_used_first(start, upstream, users, clock):
    alice, bob = users("alice", "bob")
    for _ in range(3):
        upstream.reply(*answer())
        consume(start([alice, bob], server_pool=False))
        clock.advance(1)
    assert upstream.turn_users == ["alice", "bob", "alice"]


# The cap on turns per account


def test_a_server_account_runs_at_most_its_cap_of_turns_at_once(start, upstream, users):
    alice, bob = users("alice", "bob")
    for _ in range(5):
        upstream.reply(*answer())
    turns = [open_turn(start, [alice, bob]) for _ in range(4)]
    assert sorted(upstream.turn_users) == ["alice", "alice", "bob", "bob"]
    with pytest.raises(RateLimited) as caught:
        consume(start([alice, bob]))
    assert caught.value.code == BUSY_CODE
    assert int(caught.value.headers()["Retry-After"]) >= 1
    assert len(upstream.turn_users) == 4  # refused before anything reached Kimi
    for turn in turns:
        turn.close()


def test_a_closed_turn_gives_its_slot_back(start, upstream, users, make_accounts):
    (alice,) = users("alice")
    one_each = make_accounts(max_concurrent=1)
    upstream.reply(*answer("first"))
    upstream.reply(*answer("second"))
    first = open_turn(start, [alice], using=one_each)
    with pytest.raises(RateLimited):
        consume(start([alice], using=one_each))
    first.close()
    assert text_of(consume(start([alice], using=one_each))) == "second"


def test_a_turn_that_failed_over_gives_its_first_slot_back(start, upstream, users, make_accounts):
    alice, bob = users("alice", "bob")
    one_each = make_accounts(max_concurrent=1)
    upstream.reply(RateLimited("slow down", retry_after=1), user="alice")
    upstream.reply(*answer("from bob"), user="bob")
    consume(start([alice, bob], using=one_each))
    (health,) = one_each.pool.health([alice])
    assert health.in_flight(one_each.pool.clock()) == 0


def test_a_slot_held_by_a_crashed_worker_runs_out(start, upstream, users, make_accounts, clock):
    (alice,) = users("alice")
    one_each = make_accounts(max_concurrent=1)
    one_each.pool.checkout([alice], server_pool=True)  # taken, never given back
    upstream.reply(*answer("after the lease"))
    with pytest.raises(RateLimited):
        consume(start([alice], using=one_each))
    clock.advance(LEASE_SECONDS + 1)
    assert text_of(consume(start([alice], using=one_each))) == "after the lease"


def test_a_long_turn_keeps_its_slot_by_renewing_it(users, make_accounts, clock, monkeypatch):
    monkeypatch.setattr(pool_module, "LEASE_RENEW_SECONDS", 0.0)
    (alice,) = users("alice")
    one_each = make_accounts(max_concurrent=1)
    checkout = one_each.pool.checkout([alice], server_pool=True)
    for _ in range(3):
        clock.advance(LEASE_SECONDS * 0.8)
        one_each.pool.renew(checkout)  # the turn's events keep coming
    with pytest.raises(RateLimited):
        one_each.pool.checkout([alice], server_pool=True)


def test_callers_own_tokens_are_not_capped(start, upstream, users):
    (alice,) = users("alice")
    for _ in range(4):
        upstream.reply(*answer())
    turns = [open_turn(start, [alice], server_pool=False) for _ in range(4)]
    assert upstream.turn_users == ["alice"] * 4
    for turn in turns:
        turn.close()


def test_a_turn_waits_for_a_slot_when_allowed(start, upstream, users, make_accounts):
    (alice,) = users("alice")
    patient = make_accounts(max_concurrent=1, wait_seconds=30)
    upstream.reply(*answer("first"))
    upstream.reply(*answer("second"))
    first = open_turn(start, [alice], using=patient)
    closer = threading.Timer(0.2, first.close)
    closer.start()
    try:
        assert text_of(consume(start([alice], using=patient))) == "second"
    finally:
        closer.join()


def test_a_wait_that_runs_out_is_429(start, upstream, users, make_accounts):
    (alice,) = users("alice")
    patient = make_accounts(max_concurrent=1, wait_seconds=0.3)
    upstream.reply(*answer())
    first = open_turn(start, [alice], using=patient)
    with pytest.raises(RateLimited) as caught:
        consume(start([alice], using=patient))
    assert caught.value.code == BUSY_CODE
    first.close()


def test_a_kept_conversation_whose_owner_is_at_its_cap_is_429_not_moved(
    start, upstream, users, conversations, make_accounts
):
    alice, bob = users("alice", "bob")
    one_each = make_accounts(max_concurrent=1)
    conversations.save(Conversation("chat-b", bob.account_id, "msg-1"))
    upstream.reply(*answer(), user="bob")
    busy = open_turn(start, [bob], using=one_each)
    with pytest.raises(RateLimited):
        consume(start([alice, bob], using=one_each, conversation_id="chat-b"))
    assert upstream.turn_users == ["bob"]
    busy.close()


# Cool-downs


def test_a_rate_limited_account_rests_until_the_time_kimi_gave(start, upstream, users, clock):
    alice, bob = users("alice", "bob")
    upstream.reply(RateLimited("slow down", retry_after=30), user="alice")
    upstream.reply(*answer(), user="bob")
    consume(start([alice, bob]))
    clock.advance(29)
    upstream.reply(*answer(), user="bob")
    consume(start([alice, bob]))
    clock.advance(2)
    upstream.reply(*answer(), user="alice")
    consume(start([alice, bob]))
    assert upstream.turn_users == ["alice", "bob", "bob", "alice"]


def test_an_exhausted_research_quota_rests_research_turns_only(start, upstream, users, clock):
    alice, bob = users("alice", "bob")
    upstream.reply(ResearchQuotaExhausted("research used up", retry_after=600), user="alice")
    upstream.reply(*answer("research by bob"), user="bob")
    assert text_of(consume(start([alice, bob], model="kimi-research"))) == "research by bob"
    clock.advance(1)
    upstream.reply(*answer("plain by alice"), user="alice")
    assert text_of(consume(start([alice, bob]))) == "plain by alice"
    clock.advance(1)
    upstream.reply(*answer("research by bob again"), user="bob")
    consume(start([alice, bob], model="kimi-research"))
    assert upstream.turn_users == ["alice", "bob", "alice", "bob"]


def test_research_without_quota_anywhere_is_429_but_plain_turns_go_through(start, upstream, users):
    (alice,) = users("alice")
    upstream.reply(ResearchQuotaExhausted("research used up", retry_after=600))
    with pytest.raises(ResearchQuotaExhausted):
        consume(start([alice], server_pool=False, model="kimi-research"))
    with pytest.raises(ResearchQuotaExhausted) as caught:
        consume(start([alice], server_pool=False, model="kimi-research"))
    assert caught.value.code == "research_quota_exhausted" and caught.value.retry_after > 1
    upstream.reply(*answer("plain"))
    assert text_of(consume(start([alice], server_pool=False))) == "plain"
    assert upstream.turn_users == ["alice", "alice"]  # the second research turn never left


# Rejected tokens: dead only after repeated failures over time, then probed with backoff


def test_a_token_rejected_in_two_turns_is_still_asked_and_used_when_kimi_takes_it(
    start, upstream, users, accounts
):
    (alice,) = users("alice")
    upstream.revoke("alice")
    rejected_turn(start, [alice], server_pool=False)
    rejected_turn(start, [alice], server_pool=False)
    assert accounts.pool.health([alice])[0].auth_failures == 2
    upstream.restore("alice")
    upstream.reply(*answer("accepted again"))
    assert text_of(consume(start([alice], server_pool=False))) == "accepted again"
    assert accounts.pool.health([alice])[0].auth_failures == 0


def test_a_burst_of_rejections_within_a_moment_does_not_kill_a_token(
    start, upstream, users, accounts, clock
):
    (alice,) = users("alice")
    upstream.revoke("alice")
    for _ in range(5):
        rejected_turn(start, [alice], server_pool=False)
        clock.advance(1)
    (health,) = accounts.pool.health([alice])
    assert health.auth_failures == 5
    assert health.state(clock()) == OK and accounts.pool.cooldown(alice) is None


def test_a_token_rejected_again_and_again_over_time_is_dead_and_not_asked(
    start, upstream, users, accounts, clock
):
    (alice,) = users("alice")
    kill(start, upstream, clock, alice, server_pool=False)
    asked = len(upstream.turn_users)
    with pytest.raises(UpstreamAuthRejected):
        consume(start([alice], server_pool=False))
    assert len(upstream.turn_users) == asked
    (health,) = accounts.pool.health([alice])
    assert health.state(clock()) == DEAD and health.next_probe > clock()


def test_a_dead_token_is_probed_again_with_growing_backoff(start, upstream, users, accounts, clock):
    (alice,) = users("alice")
    kill(start, upstream, clock, alice, server_pool=False)
    upstream.revoke("alice")
    probed_at = [accounts.pool.health([alice])[0].dead_since]
    for _ in range(3):
        due = accounts.pool.health([alice])[0].next_probe
        clock.now = due - 1
        asked = len(upstream.turn_users)
        rejected_turn(start, [alice], server_pool=False)
        assert len(upstream.turn_users) == asked  # not due yet: Kimi is not asked
        clock.now = due
        rejected_turn(start, [alice], server_pool=False)
        assert len(upstream.turn_users) == asked + 1  # the probe
        probed_at.append(due)
    gaps = [later - earlier for earlier, later in zip(probed_at, probed_at[1:], strict=False)]
    assert gaps == list(PROBE_DELAYS[:3])


def test_a_dead_token_that_kimi_accepts_again_is_healthy_again(
    start, upstream, users, accounts, clock
):
    alice, bob = users("alice", "bob")
    kill(start, upstream, clock, alice)
    upstream.reply(*answer(), user="bob")
    consume(start([bob]))
    clock.now = accounts.pool.health([alice])[0].next_probe
    upstream.reply(*answer("back"), user="alice")
    assert text_of(consume(start([alice, bob]))) == "back"
    (health,) = accounts.pool.health([alice])
    assert health.state(clock()) == OK
    assert (health.auth_failures, health.dead_since, health.next_probe) == (0, None, None)
    clock.advance(1)
    upstream.reply(*answer("again"), user="alice")
    upstream.reply(*answer(), user="bob")
    consume(start([alice, bob]))
    consume(start([alice, bob]))
    assert upstream.turn_users[-2:] == ["bob", "alice"]  # in the rotation again


def test_one_turn_at_a_time_probes_a_dead_account(start, upstream, users, accounts, clock):
    (alice,) = users("alice")
    kill(start, upstream, clock, alice)
    clock.now = accounts.pool.health([alice])[0].next_probe
    upstream.reply(*answer("probe"))
    probe = start([alice])
    assert isinstance(next(probe), ChatOpened)  # Kimi has not answered yet
    with pytest.raises(NoUsableAccount):
        consume(start([alice]))
    probe.close()


def test_probes_back_off_from_a_minute_to_a_few_hours():
    delays = [probe_delay(n) for n in range(10)]
    assert delays[0] == 60
    assert delays == sorted(delays)
    assert 3600 <= delays[-1] <= 6 * 3600 and delays[-1] == delays[-2]


def test_a_replaced_token_starts_clean_and_the_removed_ones_record_does_not_matter(
    start, upstream, users, accounts, clock
):
    alice, bob, carol = users("alice", "bob", "carol")
    kill(start, upstream, clock, alice)
    upstream.reply(*answer(), user="bob")
    consume(start([alice, bob]))
    clock.advance(1)
    upstream.reply(*answer("from the new token"), user="carol")
    assert text_of(consume(start([carol, bob]))) == "from the new token"
    health = accounts.pool.health([carol, bob])
    assert [h.label for h in health] == [carol.label, bob.label]
    assert [h.state(clock()) for h in health] == [OK, OK]


# Failover


def test_failover_stops_after_a_few_accounts(start, upstream, users):
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        upstream.reply(RateLimited("slow down", retry_after=30), user=name)
    with pytest.raises(RateLimited):
        consume(start(users(*names)))
    assert upstream.turn_users == names[:MAX_ACCOUNTS_TRIED]
    assert MAX_ACCOUNTS_TRIED < len(names)


@pytest.mark.parametrize(
    "server_pool, error", [(True, NoUsableAccount), (False, UpstreamAuthRejected)]
)
def test_rejected_tokens_stop_after_a_few_accounts(start, upstream, users, server_pool, error):
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        upstream.revoke(name)
    with pytest.raises(error):  # the server's pool is 503; the caller's own tokens are 401
        consume(start(users(*names), server_pool=server_pool))
    assert upstream.turn_users == names[:MAX_ACCOUNTS_TRIED]


@pytest.mark.parametrize("error", [BadRequest("bad field"), UpstreamError("Kimi answered 500")])
def test_a_turn_is_not_failed_over_for_other_errors(start, upstream, users, error):
    alice, bob = users("alice", "bob")
    upstream.reply(error, user="alice")
    upstream.reply(*answer(), user="bob")
    with pytest.raises(type(error)):
        consume(start([alice, bob]))
    assert upstream.turn_users == ["alice"]


# What a status page will read


def test_health_records_turns_errors_refreshes_and_states(start, upstream, users, accounts, clock):
    alice, bob, carol = users("alice", "bob", "carol")
    kill(start, upstream, clock, carol)
    upstream.reply(*answer(), user="alice")
    consume(start([alice]))
    upstream.reply(*answer(), user="alice")
    consume(start([alice]))
    upstream.reply(RateLimited("slow down", retry_after=30), user="bob")
    with pytest.raises(RateLimited):
        consume(start([bob]))
    now = clock()
    served, cooling, dead = accounts.pool.health([alice, bob, carol])
    assert served.turns_served == 2 and served.last_refresh is not None
    assert served.state(now) == OK and served.last_error is None
    assert cooling.state(now) == COOLING and cooling.last_error == "RateLimited"
    assert cooling.cooling_until > now
    assert dead.state(now) == DEAD and dead.last_error == "UpstreamAuthRejected"
    assert dead.dead_since <= now < dead.next_probe


def test_an_account_at_its_cap_reads_busy(start, upstream, users, accounts, clock):
    (alice,) = users("alice")
    upstream.reply(*answer())
    upstream.reply(*answer())
    turns = [open_turn(start, [alice]) for _ in range(2)]
    (health,) = accounts.pool.health([alice])
    assert health.in_flight(clock()) == 2
    assert health.state(clock(), accounts.pool.max_concurrent) == BUSY
    for turn in turns:
        turn.close()
    assert accounts.pool.health([alice])[0].state(clock(), accounts.pool.max_concurrent) == OK


def test_a_record_from_another_version_is_read_without_its_unknown_fields():
    record = AccountHealth("acct", turns_served=3)
    raw = record.to_json()[:-1] + ',"future_field":1}'
    assert AccountHealth.from_json(raw) == record


# Settings


def test_pool_settings_come_from_the_environment():
    settings = Settings.from_env(
        {"KIMI_MAX_CONCURRENT_PER_ACCOUNT": "4", "POOL_WAIT_SECONDS": "2.5"}
    )
    assert (settings.max_concurrent_per_account, settings.pool_wait_seconds) == (4, 2.5)
    defaults = Settings.from_env({})
    assert (defaults.max_concurrent_per_account, defaults.pool_wait_seconds) == (2, 0.0)
    assert Settings.from_env({"POOL_WAIT_SECONDS": "0"}).pool_wait_seconds == 0.0


@pytest.mark.parametrize(
    "name, value", [("POOL_WAIT_SECONDS", "-1"), ("KIMI_MAX_CONCURRENT_PER_ACCOUNT", "0")]
)
def test_pool_settings_out_of_range_stop_the_service(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})
