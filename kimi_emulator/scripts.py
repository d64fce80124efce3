"""Scripted replies: a test writes in its prompt what the "model" answers at each step.

A real model calls functions and writes JSON when told to; the emulator does when a user
message carries a script::

    [[emulate: call get_weather {"city": "Paris"} ;; text It is 21 degrees in Paris.]]

Steps are separated by ``;;``; the step played is the number of assistant replies already in
the conversation (replies stored in the chat, plus ``assistant:`` lines of a flattened history),
so a tool loop or a repair turn moves through the script. Calls of one step are joined by
``++``. Past the last step the emulator answers as usual. Step kinds:

- ``call NAME ARGS``: ``<tool_call>{"name": ..., "arguments": ARGS}</tool_call>``
- ``fenced-call NAME ARGS``: the call object in a ```json fence, without the tags
- ``prose-call NAME ARGS``: a sentence, then the call
- ``string-args-call NAME ARGS``: the arguments as a JSON string
- ``malformed-call NAME``: a call whose JSON breaks off
- ``text TEXT``, ``json JSON``: that text as it is
- ``fenced-json JSON``: a sentence, then the JSON in a ```json fence
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

SCRIPT = re.compile(r"\[\[emulate:(.*?)\]\]", re.DOTALL)
STEP_SEPARATOR = ";;"
CALL_SEPARATOR = "++"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
REPLY_LINE = re.compile(r"^assistant:", re.MULTILINE)


def scripted_reply(prompts: Sequence[str], earlier_replies: int) -> str | None:
    """The scripted answer for this turn, or None when there is no script or it has run out.

    ``prompts`` are the chat's user prompts, the current one last; ``earlier_replies`` counts
    the assistant replies the chat already holds.
    """
    scripts = [match for prompt in prompts for match in SCRIPT.findall(prompt)]
    if not scripts:
        return None
    steps = [step.strip() for step in scripts[-1].split(STEP_SEPARATOR)]
    index = earlier_replies + len(REPLY_LINE.findall(prompts[-1] if prompts else ""))
    if index >= len(steps):
        return None
    return "\n".join(_piece(part.strip()) for part in steps[index].split(CALL_SEPARATOR))


def _piece(step: str) -> str:
    kind, _, rest = step.partition(" ")
    if kind in ("text", "json"):
        return rest
    if kind == "fenced-json":
        return f"Here is the JSON you asked for:\n```json\n{rest}\n```"
    name, _, arguments = rest.strip().partition(" ")
    if kind == "malformed-call":
        return f'{CALL_OPEN}{{"name": "{name}", "arguments": {{"city": "Par{CALL_CLOSE}'
    call = {"name": name, "arguments": _arguments(arguments)}
    if kind == "string-args-call":
        call["arguments"] = json.dumps(call["arguments"], ensure_ascii=False)
    rendered = json.dumps(call, ensure_ascii=False)
    if kind in ("call", "string-args-call"):
        return f"{CALL_OPEN}{rendered}{CALL_CLOSE}"
    if kind == "fenced-call":
        return f"```json\n{rendered}\n```"
    if kind == "prose-call":
        return f"Let me look that up for you.\n{CALL_OPEN}{rendered}{CALL_CLOSE}"
    return step  # not a step kind: said as it is, so a typo in a test shows in the answer


def _arguments(text: str) -> Any:
    return json.loads(text) if text.strip() else {}
