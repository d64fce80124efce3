"""max_tokens and stop are applied to the answer stream; other sampling fields are checked."""

from __future__ import annotations

from itertools import combinations, pairwise

import pytest

from kimi.errors import BadRequest
from kimi.events import Finish, ReasoningDelta, TextDelta, ToolCall
from kimi.sampling import IGNORED_FIELDS, Sampling, cut_at_stop, limit_tokens, parse_sampling
from kimi.usage import estimate_tokens


def pieces(text: str, cuts) -> list[TextDelta]:
    bounds = [0, *cuts, len(text)]
    return [TextDelta(text[a:b]) for a, b in pairwise(bounds) if b > a]


def splits(text: str, max_cuts: int = 2):
    """Every way to cut ``text`` into up to ``max_cuts + 1`` pieces."""
    for count in range(max_cuts + 1):
        yield from combinations(range(1, len(text)), count)


def answer(events) -> tuple[str, str | None]:
    """The answer text and finish reason a client would see; no empty deltas allowed."""
    text, reason = [], None
    for event in events:
        if isinstance(event, TextDelta):
            assert event.text, "an empty delta was emitted"
            text.append(event.text)
        elif isinstance(event, Finish):
            assert reason is None, "two finishes"
            reason = event.reason
    return "".join(text), reason


def bad_request(body: dict) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_sampling(body)
    assert caught.value.status == 400
    return caught.value


# --- parsing ----------------------------------------------------------------------------------


def test_no_sampling_fields_means_no_limits():
    assert parse_sampling({}) == Sampling(max_tokens=None, stop=())


def test_max_completion_tokens_wins_over_max_tokens():
    sampling = parse_sampling({"max_completion_tokens": 50, "max_tokens": 900})
    assert sampling.max_tokens == 50


def test_max_tokens_alone_is_the_budget():
    assert parse_sampling({"max_tokens": 12}).max_tokens == 12


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "100", True, [10]])
def test_a_budget_that_is_not_a_positive_integer_is_refused_by_name(field, value):
    error = bad_request({field: value})
    assert error.param == field
    assert field in error.message


@pytest.mark.parametrize(
    "stop, expected",
    [
        ("END", ("END",)),
        (["a", "bc"], ("a", "bc")),
        (["x", "y", "z", "w"], ("x", "y", "z", "w")),
        (None, ()),
    ],
)
def test_stop_is_a_string_or_up_to_four_strings(stop, expected):
    assert parse_sampling({"stop": stop}).stop == expected


@pytest.mark.parametrize("stop", ["", [], ["a", ""], ["a", 1], list("abcde"), {"s": 1}, 7])
def test_a_malformed_stop_is_refused(stop):
    error = bad_request({"stop": stop})
    assert error.param == "stop"


@pytest.mark.parametrize("field, value", [("logprobs", True), ("top_logprobs", 3)])
def test_log_probabilities_are_refused_with_the_reason(field, value):
    error = bad_request({field: value})
    assert error.param == field
    assert "log probabilities" in error.message.lower()
    assert "web chat" in error.message


@pytest.mark.parametrize("value", [0, "false", [True]])
def test_logprobs_that_is_not_a_boolean_is_refused(value):
    assert bad_request({"logprobs": value}).param == "logprobs"


def test_logprobs_false_is_accepted():
    assert parse_sampling({"logprobs": False, "top_logprobs": None}) == Sampling()


EXAMPLES = {"number": 0.7, "integer": 42, "string": "abc", "boolean": True, "object": {"k": 1}}


def test_every_ignored_field_is_accepted_with_a_value_of_its_type():
    body = {name: EXAMPLES[kind] for name, kind in IGNORED_FIELDS.items()}
    assert parse_sampling(body) == Sampling()


def test_the_common_sampling_knobs_are_among_the_ignored_fields():
    for name in ("temperature", "top_p", "seed", "presence_penalty", "user", "metadata"):
        assert name in IGNORED_FIELDS


@pytest.mark.parametrize(
    "field, value", [("temperature", "hot"), ("temperature", True), ("seed", 1.5), ("user", 5)]
)
def test_an_ignored_field_of_the_wrong_type_is_refused_by_name(field, value):
    error = bad_request({field: value})
    assert error.param == field


# --- cut_at_stop ------------------------------------------------------------------------------

STOP_CASES = [
    # (answer text, stop strings, what the client sees, finish reason)
    ("Hello STOP world", ["STOP"], "Hello ", "stop"),
    ("STOP right away", ["STOP"], "", "stop"),
    ("xxabcx", ["abc", "ab"], "xx", "stop"),
    ("xxabd", ["abc", "bd"], "xxa", "stop"),
    ("one\ntwo END three\n\nfour", ["\n\n", "END", "###"], "one\ntwo ", "stop"),
    ("I said ST and OP and left", ["STOP"], "I said ST and OP and left", "length"),
    ("it ends in STO", ["STOP"], "it ends in STO", "length"),
    ("aaab", ["aab"], "a", "stop"),
    ("xabcd", ["abcd", "c"], "xab", "stop"),  # "c" is complete first, as a model would stop
    ("你好。再见。", ["。"], "你好", "stop"),
    ("no stop here", ["zzz", "qq"], "no stop here", "length"),
    ("a<|end|>b<|end|>", ["<|end|>"], "a", "stop"),
]


def run_stop(text: str, stops, cuts) -> tuple[str, str | None]:
    # The upstream finish is "length" so that a stop cut ("stop") is told apart from it.
    return answer(cut_at_stop([*pieces(text, cuts), Finish("length")], stops))


@pytest.mark.parametrize("text, stops, expected, reason", STOP_CASES)
def test_text_is_cut_before_the_first_stop_string(text, stops, expected, reason):
    assert run_stop(text, stops, []) == (expected, reason)


@pytest.mark.parametrize("text, stops, expected, reason", STOP_CASES)
def test_stop_strings_spanning_two_or_three_pieces_cut_the_same(text, stops, expected, reason):
    for cuts in splits(text, max_cuts=2):
        assert run_stop(text, stops, cuts) == (expected, reason), cuts


@pytest.mark.parametrize("text, stops, expected, reason", STOP_CASES)
def test_text_fed_one_character_at_a_time_cuts_the_same(text, stops, expected, reason):
    assert run_stop(text, stops, range(1, len(text))) == (expected, reason)


def test_held_back_text_is_released_as_soon_as_it_cannot_start_a_stop():
    out = list(cut_at_stop([TextDelta("wait ST"), TextDelta("ART")], ["STOP"]))
    assert out == [TextDelta("wait "), TextDelta("START")]


def test_reasoning_is_never_cut():
    events = [ReasoningDelta("think STOP think"), TextDelta("say STOP"), Finish()]
    out = list(cut_at_stop(events, ["STOP"]))
    assert out == [ReasoningDelta("think STOP think"), TextDelta("say "), Finish("stop")]


def test_held_text_comes_before_a_tool_call():
    call = ToolCall(index=0, call_id="call_1", name="f", arguments="{}")
    out = list(cut_at_stop([TextDelta("calling S"), call, Finish("tool_calls")], ["STOP"]))
    assert out == [TextDelta("calling "), TextDelta("S"), call, Finish("tool_calls")]


def test_a_stop_ends_the_answer_without_reading_further():
    source = iter([TextDelta("one STOP two"), TextDelta("three"), Finish()])
    assert list(cut_at_stop(source, ["STOP"])) == [TextDelta("one "), Finish("stop")]
    assert next(source) == TextDelta("three")


def test_no_stop_strings_pass_everything_through():
    events = [ReasoningDelta("r"), TextDelta("STOP"), Finish("length")]
    assert list(cut_at_stop(events, ())) == events


# --- limit_tokens -----------------------------------------------------------------------------


def run_limit(deltas, budget) -> tuple[str, str | None]:
    return answer(limit_tokens([*deltas, Finish("stop")], budget))


@pytest.mark.parametrize(
    "text, budget, expected",
    [
        ("abcdefghij", 2, "abcdefgh"),
        ("你好世界朋友", 3, "你好世"),
        ("ab你好cd", 2, "ab你"),
        ("hello 世界, and more", 4, "hello 世界, "),
    ],
)
def test_text_is_cut_where_the_budget_runs_out(text, budget, expected):
    for cut in range(len(text) + 1):
        assert run_limit(pieces(text, [cut]), budget) == (expected, "length"), cut


@pytest.mark.parametrize(
    "text", ["The quick brown fox jumps.", "天气很好，我们去公园吧。", "mix 中文 ok"]
)
def test_the_cut_answer_is_the_longest_that_fits_the_usage_estimate(text):
    for budget in range(1, estimate_tokens(text)):
        kept, reason = run_limit(pieces(text, range(1, len(text), 3)), budget)
        assert reason == "length"
        assert estimate_tokens(kept) <= budget < estimate_tokens(text[: len(kept) + 1])


def test_an_answer_within_the_budget_keeps_its_own_finish():
    events = [ReasoningDelta("think"), TextDelta("abcd"), Finish("stop")]
    assert list(limit_tokens(events, 3)) == events


def test_reasoning_counts_against_the_budget():
    events = [ReasoningDelta("思考中"), TextDelta("答案是四"), Finish("stop")]
    out = list(limit_tokens(events, 5))
    assert out == [ReasoningDelta("思考中"), TextDelta("答案"), Finish("length")]


def test_the_budget_can_run_out_inside_the_reasoning():
    events = [ReasoningDelta("一二三四五"), TextDelta("answer"), Finish("stop")]
    assert list(limit_tokens(events, 2)) == [ReasoningDelta("一二"), Finish("length")]


def test_running_out_ends_the_answer_without_reading_further():
    source = iter([TextDelta("一二三"), TextDelta("四"), Finish("stop")])
    assert list(limit_tokens(source, 1)) == [TextDelta("一"), Finish("length")]
    assert next(source) == TextDelta("四")


def test_no_budget_passes_everything_through():
    events = [ReasoningDelta("x" * 100), TextDelta("y" * 100), Finish("stop")]
    assert list(limit_tokens(events, None)) == events
