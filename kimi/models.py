"""Model names: the free-text ``model`` field turned into upstream options, and the catalog."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .reasoning import HIDDEN, THINK_TAGS

DEFAULT_MODEL = "kimi"
AGENT_ID = re.compile(r"[0-9a-z]{20}")
THINKING_WORDS = ("think", "k1", "reason")
EFFORTS = {"low": "LOW", "medium": "MEDIUM", "high": "HIGH"}
NO_EFFORT = ("none", "minimal")
# Model-name words that choose how thinking is shown (and turn it on, having "think" in them).
REASONING_MODE_WORDS = (("think-tags", THINK_TAGS), ("think-hidden", HIDDEN))
# Scenario slugs as they appear in model ids (kimi-k2.5, kimi-ok-computer, ...), longest first
# so that "k2.5" is not read as "k2".
SCENARIO_SLUGS = (
    ("ok-computer", "SCENARIO_OK_COMPUTER"),
    ("k2.5", "SCENARIO_K2D5"),  # first of its scenario: the id the catalog publishes
    ("k2.6", "SCENARIO_K2D5"),
    ("k2d5", "SCENARIO_K2D5"),
    ("k2", "SCENARIO_K2"),
    ("chat", "SCENARIO_CHAT"),
)


@dataclass(frozen=True)
class ModelOptions:
    """What a model name (plus ``use_search``/``reasoning_effort``) asks of Kimi."""

    name: str = DEFAULT_MODEL
    search: bool = False
    silent: bool = False
    thinking: bool = False
    effort: str | None = None
    agent_id: str | None = None
    scenario: str | None = None
    research: bool = False
    math: bool = False
    k1: bool = False
    reasoning_mode: str | None = None  # None: the deployment's REASONING_OUTPUT


def parse_model(
    name: str | None, *, use_search: bool = False, reasoning_effort: str | None = None
) -> ModelOptions:
    """Read the model name's flags. Unknown names fall back to the default model."""
    name = (name or "").strip() or DEFAULT_MODEL
    lowered = name.lower()
    effort = _effort(reasoning_effort)
    thinking = any(word in lowered for word in THINKING_WORDS) or effort is not None
    if reasoning_effort is not None and reasoning_effort.lower() in NO_EFFORT:
        thinking = False
    return ModelOptions(
        name=name,
        search=use_search or "search" in lowered,
        silent="silent" in lowered,
        thinking=thinking,
        effort=effort,
        agent_id=name if AGENT_ID.fullmatch(name) else None,
        scenario=next((s for slug, s in SCENARIO_SLUGS if slug in lowered), None),
        research="research" in lowered,
        math="math" in lowered,
        k1="k1" in lowered,
        reasoning_mode=next((mode for word, mode in REASONING_MODE_WORDS if word in lowered), None),
    )


def _effort(value: str | None) -> str | None:
    if value is None:
        return None
    return EFFORTS.get(str(value).lower())


def model_ids_for_scenario(scenario: str, thinking: bool) -> str:
    """The model id we publish for one entry of Kimi's live catalog."""
    slug = next((slug for slug, s in SCENARIO_SLUGS if s == scenario), None)
    if slug is None:
        slug = scenario.removeprefix("SCENARIO_").lower().replace("_", "-")
    return f"kimi-{slug}" + ("-thinking" if thinking else "")


def model_list(ids: list[str], created: int) -> dict:
    """The OpenAI ``/v1/models`` body for these ids, in order, without duplicates."""
    data = [
        {"id": model_id, "object": "model", "created": created, "owned_by": "kimi-free-api"}
        for model_id in dict.fromkeys(ids)
    ]
    return {"object": "list", "data": data}
